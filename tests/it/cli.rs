//! The `yolact` command's contract: flags, output files and their JSON shape, error reporting.
//! Runs the release binary on synthetic weights (no download needed).

use crate::support::{text, yolact};
use std::path::{Path, PathBuf};

use crate::support::rle_counts;

fn fixture_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/test_image.png")
}

#[test]
fn infer_writes_the_json_contract_and_an_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let png = dir.path().join("out.png");
    let img = fixture_image();
    let o = yolact(&[
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
        "--overlay",
        png.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["config"], "yolact_resnet50");
    assert_eq!(v["image"]["width"], 200);
    assert_eq!(v["image"]["height"], 150);
    assert_eq!(v["image"]["path"], img.display().to_string());
    let dets = v["detections"].as_array().unwrap();
    assert!(
        !dets.is_empty(),
        "the parity fixture expects detections above 0.15"
    );
    let scores: Vec<f64> = dets.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted by score: {scores:?}"
    );
    for d in dets {
        let id = d["class_id"].as_u64().unwrap() as usize;
        assert!(id < 80);
        assert_eq!(d["label"], yolact_ros2::output::labels::CLASS_NAMES[id]);
        assert!(d["mask_iou"].is_null(), "YOLACT v1 has no mask IoU");
        assert_eq!(d["score"], d["class_score"]);
        assert!(d["score"].as_f64().unwrap() >= 0.15);
        let b: Vec<f64> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            b[0] <= b[2] && b[1] <= b[3] && b[2] <= 200.0 && b[3] <= 150.0,
            "{b:?}"
        );
        assert_eq!(d["mask"]["size"], serde_json::json!([150, 200]));
        let counts = rle_counts(d["mask"]["counts"].as_str().unwrap());
        assert_eq!(
            counts.iter().sum::<i64>(),
            150 * 200,
            "RLE covers the image"
        );
    }
    let overlay = image::open(&png).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (200, 150));
}

#[test]
fn several_inputs_write_per_stem_files_and_a_bad_image_does_not_stop_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::copy(fixture_image(), inputs.join("a.png")).unwrap();
    std::fs::write(inputs.join("broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let out = dir.path().join("json");
    let raw = dir.path().join("raw");
    let o = yolact(&[
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--json",
        out.to_str().unwrap(),
        "--dump-raw",
        raw.to_str().unwrap(),
        inputs.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("broken.png"), "{}", text(&o));
    assert!(out.join("a.json").is_file());
    assert!(!out.join("broken.json").exists());
    let t = candle_core::safetensors::load(raw.join("a.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(t["loc"].dims(), &[19248, 4]);
    assert_eq!(t["conf"].dims(), &[19248, 81]);
    assert_eq!(t["mask"].dims(), &[19248, 32]);
    assert_eq!(t["priors"].dims(), &[19248, 4]);
    assert_eq!(t["proto"].dims(), &[138, 138, 32]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image();
    let img = img.to_str().unwrap();

    let o = yolact(&[
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_huge",
        img,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("yolact_plus_resnet50"),
        "lists the valid names: {}",
        text(&o)
    );

    let bad = dir.path().join("yolact_base_54_800000.pth");
    std::fs::write(&bad, b"not a checkpoint at all").unwrap();
    let o = yolact(&[
        "infer",
        "--weights",
        bad.to_str().unwrap(),
        "--device",
        "cpu",
        img,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("yolact_base_54_800000.pth"),
        "{}",
        text(&o)
    );

    let o = yolact(&["infer", "--weights", "missing.pth", img]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("Hugging Face"),
        "says where to get weights: {}",
        text(&o)
    );

    // `synthetic` defaults its config as the node does (one weights parser for both), and a
    // path that only starts with "synthetic" is a file.
    let o = yolact(&["infer", "--weights", "synthetic", "--device", "cpu", img]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(yolact_resnet50,"), "{}", text(&o));
    let o = yolact(&["infer", "--weights", "synthetic_runs/x.pth", img]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("synthetic_runs/x.pth does not exist"),
        "{}",
        text(&o)
    );

    let o = yolact(&[
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "tpu",
        img,
    ]);
    assert!(
        text(&o).contains("expected cpu, cuda, cuda:N or auto"),
        "{}",
        text(&o)
    );
}

#[test]
fn convert_then_infer_from_safetensors_detects_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
    let sd = yolact_ros2::weights::synth::synth_state_dict(&cfg, 1).unwrap();
    let pth = dir.path().join("yolact_resnet50_1_2.pth");
    yolact_ros2::weights::save_torch(
        &sd,
        &pth,
        yolact_ros2::weights::CheckpointFormat::TorchLegacy,
    )
    .unwrap();
    let st = dir.path().join("converted.safetensors");
    let o = yolact(&["convert", pth.to_str().unwrap(), st.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("config yolact_resnet50"), "{}", text(&o));
    let back = yolact_ros2::weights::load_checkpoint(&st).unwrap();
    assert_eq!(back.len(), sd.len());
    let o = yolact(&[
        "infer",
        "--weights",
        st.to_str().unwrap(),
        "--device",
        "cpu",
        fixture_image().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("yolact_resnet50"), "{}", text(&o));
}

#[test]
fn bench_json_has_frame_and_stage_spreads() {
    let o = yolact(&[
        "bench",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--json",
        fixture_image().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["median", "min", "max"] {
        assert!(v["frame_ms"][k].as_f64().unwrap() > 0.0);
    }
    for s in [
        "preprocess",
        "backbone",
        "fpn",
        "protonet",
        "heads",
        "nms",
        "masks",
    ] {
        let st = &v["stages"][s];
        assert!(
            st["min"].as_f64().unwrap() <= st["median"].as_f64().unwrap(),
            "{s}"
        );
        assert!(
            st["median"].as_f64().unwrap() <= st["max"].as_f64().unwrap(),
            "{s}"
        );
    }
    assert!(v["fps"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_writes_coco_results_and_scores_perfect_ground_truth_as_ap_1() {
    // Ground truth made from the model's own detections: every box must match itself.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(fixture_image(), images.join("frame.png")).unwrap();
    let dets_json = dir.path().join("dets.json");
    let o = yolact(&[
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--json",
        dets_json.to_str().unwrap(),
        images.join("frame.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&dets_json).unwrap()).unwrap();
    let mut anns = Vec::new();
    for (i, d) in v["detections"].as_array().unwrap().iter().enumerate() {
        let b: Vec<f64> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().trunc())
            .collect();
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        if w * h <= 0.0 {
            continue;
        }
        let class = d["class_id"].as_u64().unwrap() as usize;
        anns.push(serde_json::json!({
            "id": i + 1, "image_id": 42, "category_id": yolact_ros2::output::labels::CATEGORY_IDS[class],
            "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0, "segmentation": d["mask"],
        }));
    }
    assert!(anns.len() > 5);
    let n_anns = anns.len();
    let cats: Vec<_> = yolact_ros2::output::labels::CATEGORY_IDS
        .iter()
        .map(|&c| serde_json::json!({"id": c, "name": c.to_string()}))
        .collect();
    let gt = serde_json::json!({
        "images": [{"id": 42, "file_name": "frame.png", "width": 200, "height": 150}],
        "annotations": anns, "categories": cats,
    });
    let gt_path = dir.path().join("gt.json");
    std::fs::write(&gt_path, gt.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = yolact(&[
        "eval",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--coco-gt",
        gt_path.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--score-threshold",
        "0.15",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (stats["bbox"]["AP"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{stats}"
    );
    assert!(stats["segm"]["AP"].as_f64().unwrap() > 0.5, "{stats}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), n_anns);
    // the same file through `coco-eval` gives the same numbers
    let o = yolact(&[
        "coco-eval",
        "--gt",
        gt_path.to_str().unwrap(),
        "--results",
        out.join("results.json").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again, stats);
}
