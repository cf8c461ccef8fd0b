//! The `yolact` command's contract: flags, output files and their JSON shape, error reporting.
//! Runs the release binary on synthetic weights (no download needed).

use crate::support::{text, yolact};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn jpeg_of_fixture() -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::open(fixture_image())
        .unwrap()
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    jpeg
}

fn infer_synthetic(extra: &[&str]) -> Output {
    let mut args = vec![
        "infer",
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    yolact(&args)
}

#[test]
fn a_truncated_jpeg_is_refused_and_the_whole_one_still_processed() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let jpeg = jpeg_of_fixture();
    let cut = &jpeg[..jpeg.len() / 2];
    // Without the check the image crate decodes it, the lower half grey.
    assert!(image::load_from_memory(cut).is_ok());
    std::fs::write(inputs.join("whole.jpg"), &jpeg).unwrap();
    std::fs::write(inputs.join("cut.jpg"), cut).unwrap();
    let out = dir.path().join("json");
    let o = infer_synthetic(&["--json", out.to_str().unwrap(), inputs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.lines()
            .any(|l| l.contains("cut.jpg") && l.contains("truncated JPEG")),
        "{t}"
    );
    assert!(out.join("whole.json").is_file());
    assert!(!out.join("cut.json").exists());
}

#[test]
fn the_shared_decoders_refuse_a_truncated_jpeg() {
    use yolact_ros2::bag::CompressedImageMsg;
    let jpeg = jpeg_of_fixture();
    let msg = |data: &[u8], format: &str| CompressedImageMsg {
        header: Default::default(),
        format: format.into(),
        data: data.to_vec(),
    };
    let whole = msg(&jpeg, "jpeg").to_rgb().unwrap();
    assert_eq!(whole.dimensions(), (200, 150));
    // Any cut that loses the end-of-image marker, with the format named or sniffed.
    for cut in [jpeg.len() - 1, jpeg.len() - 2, jpeg.len() * 3 / 4, 700] {
        for format in ["jpeg", "rgb8; jpeg compressed bgr8", ""] {
            let e = msg(&jpeg[..cut], format)
                .to_rgb()
                .expect_err(&format!("cut at {cut} decoded ({format:?})"));
            assert!(e.to_string().contains("truncated JPEG"), "{e}");
        }
    }
    // Bytes after the end-of-image marker are not a truncation.
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"vendor metadata");
    assert!(msg(&trailing, "jpeg").to_rgb().is_ok());

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.jpg");
    std::fs::write(&p, &jpeg[..jpeg.len() - 2]).unwrap();
    let e = yolact_ros2::engine::preprocess::load_image(&p).unwrap_err();
    assert!(e.to_string().contains("truncated JPEG"), "{e}");
    std::fs::write(&p, &jpeg).unwrap();
    assert!(yolact_ros2::engine::preprocess::load_image(&p).is_ok());
}

#[test]
fn a_checkpoint_with_a_nan_weight_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
    let mut sd = yolact_ros2::weights::synth::synth_state_dict(&cfg, 1).unwrap();
    let key = "prediction_layers.0.bbox_layer.weight";
    let dims = sd[key].dims().to_vec();
    let mut v: Vec<f32> = sd[key].flatten_all().unwrap().to_vec1().unwrap();
    v[123] = f32::NAN;
    sd.insert(
        key.into(),
        candle_core::Tensor::from_vec(v, dims, &candle_core::Device::Cpu).unwrap(),
    );
    let pth = dir.path().join("yolact_resnet50_1_2.pth");
    yolact_ros2::weights::save_torch(
        &sd,
        &pth,
        yolact_ros2::weights::CheckpointFormat::TorchLegacy,
    )
    .unwrap();
    let o = yolact(&[
        "infer",
        "--weights",
        pth.to_str().unwrap(),
        "--device",
        "cpu",
        fixture_image().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{key}`")) && text(&o).contains("non-finite"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_fifo_as_weights_is_refused_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("weights.pth");
    let st = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(st.success());
    let mut child = crate::support::yolact_cmd()
        .args([
            "infer",
            "--weights",
            fifo.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .arg(fixture_image())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Generous: only a hang (a read of the FIFO that never returns) runs into it.
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            panic!("yolact infer still reading the FIFO after 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
}

#[test]
fn top_k_zero_is_refused_as_the_node_refuses_it() {
    let img = fixture_image();
    for k in ["0", "100001"] {
        let o = infer_synthetic(&["--top-k", k, img.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("--top-k must be within 1..=100000"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn a_broken_symlink_in_an_input_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::copy(fixture_image(), inputs.join("a.png")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.png"), inputs.join("b.png")).unwrap();
    let out = dir.path().join("json");
    let o = infer_synthetic(&["--json", out.to_str().unwrap(), inputs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.lines().any(|l| l.contains("b.png")
            && l.contains("broken symbolic link")
            && l.contains("gone.png")),
        "{t}"
    );
    assert!(t.contains("1 of 2 images failed"), "{t}");
    assert!(out.join("a.json").is_file());
}

#[test]
fn an_os_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = yolact(&[
        "coco-eval",
        "--gt",
        dir.path().to_str().unwrap(),
        "--results",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert_eq!(t.matches("(os error 21)").count(), 1, "{t}");
}

#[test]
fn the_default_log_filter_keeps_ours_at_info_and_dependencies_at_warn() {
    use log::{Level, Log, Metadata};
    let logger = env_logger::Builder::new()
        .parse_filters(yolact_ros2::DEFAULT_LOG_FILTER)
        .build();
    let on = |target: &str, level: Level| {
        logger.enabled(&Metadata::builder().target(target).level(level).build())
    };
    for ours in [
        "yolact_ros2::node::worker",
        "yolact_ros2",
        "yolact::cli::node",
    ] {
        assert!(on(ours, Level::Info), "{ours}");
        assert!(!on(ours, Level::Debug), "{ours}");
    }
    for dep in ["rustdds::dds::participant", "ros2_client", "mcap"] {
        assert!(!on(dep, Level::Info), "{dep}");
        assert!(on(dep, Level::Warn), "{dep}");
    }
}
