//! COCO evaluation against pycocotools: the fixtures in tests/fixtures/cocoeval were produced by
//! tools/make_cocoeval_fixtures.py (pycocotools COCOeval); every stat must agree to 1e-4.

use std::path::PathBuf;

use serde_json::Value;
use yolact_ros2::eval::coco_eval::{
    self, dataset, evaluate, evaluate_files, load_results, results_have_masks, stats_json, CocoGt,
    CocoStats, IouType, STAT_NAMES,
};

const TOL: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cocoeval")
        .join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_stats(got: &CocoStats, want: &Value, what: &str) {
    let mut worst = 0.0f64;
    for (name, g) in STAT_NAMES.iter().zip(got.as_array()) {
        let w = want[*name].as_f64().unwrap();
        worst = worst.max((g - w).abs());
        assert!(
            (g - w).abs() <= TOL,
            "{what} {name}: ours {g} vs pycocotools {w}"
        );
    }
    eprintln!("{what}: max |ours - pycocotools| = {worst:e}");
}

fn check_scenario(name: &str) {
    let exp = expected();
    let gt = CocoGt::from_path(fixture("gt.json")).unwrap();
    let dt = load_results(fixture(&format!("results_{name}.json"))).unwrap();
    let want = &exp[name];
    let bbox = evaluate(&gt, &dt, IouType::Bbox).unwrap();
    assert_stats(&bbox, &want["bbox"], &format!("{name}/bbox"));
    if want.get("segm").is_some() {
        let segm = evaluate(&gt, &dt, IouType::Segm).unwrap();
        assert_stats(&segm, &want["segm"], &format!("{name}/segm"));
    }
}

#[test]
fn boxes_and_masks_match_pycocotools() {
    check_scenario("both");
}

#[test]
fn box_only_results_match_pycocotools() {
    check_scenario("bbox");
}

#[test]
fn mask_only_results_match_pycocotools() {
    // Here areas and boxes of detections come from the masks, not from a bbox field.
    check_scenario("segm");
}

/// Box-only results evaluated as masks: each box is rasterised as a polygon (`frPoly`), with the
/// box area as the detection area.
#[test]
fn box_polygons_as_masks_match_pycocotools() {
    let exp = expected();
    let gt = CocoGt::from_path(fixture("gt.json")).unwrap();
    let dt = load_results(fixture("results_bbox.json")).unwrap();
    let segm = evaluate(&gt, &dt, IouType::Segm).unwrap();
    assert_stats(&segm, &exp["bbox"]["segm_of_boxes"], "bbox/segm_of_boxes");
}

#[test]
fn empty_results_match_pycocotools() {
    check_scenario("empty");
}

/// The same comparison on a directory written by the fixture script, e.g. a larger set:
/// `python3 -c "import make_cocoeval_fixtures as m; m.IMAGE_SIZES = [...]; m.main()" DIR` from
/// tools/, then `COCOEVAL_DIR=DIR cargo test --release --test it coco_eval:: -- --ignored`.
#[test]
#[ignore = "needs COCOEVAL_DIR made by tools/make_cocoeval_fixtures.py"]
fn external_fixture_dir_matches_pycocotools() {
    let Ok(dir) = std::env::var("COCOEVAL_DIR") else {
        panic!("set COCOEVAL_DIR");
    };
    let dir = PathBuf::from(dir);
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    check_gt_masks(&dir);
    let gt = CocoGt::from_path(dir.join("gt.json")).unwrap();
    for name in ["both", "bbox", "segm", "empty"] {
        let dt = load_results(dir.join(format!("results_{name}.json"))).unwrap();
        for (key, t) in [
            ("bbox", IouType::Bbox),
            ("segm", IouType::Segm),
            ("segm_of_boxes", IouType::Segm),
        ] {
            if exp[name].get(key).is_some() {
                let start = std::time::Instant::now();
                let s = evaluate(&gt, &dt, t).unwrap();
                eprintln!(
                    "{name}/{key}: {} results in {:?}",
                    dt.len(),
                    start.elapsed()
                );
                assert_stats(&s, &exp[name][key], &format!("{name}/{key}"));
            }
        }
    }
}

#[test]
fn segm_reported_only_for_results_with_masks() {
    let (bbox, segm) = evaluate_files(fixture("gt.json"), fixture("results_bbox.json")).unwrap();
    assert!(segm.is_none());
    let v = stats_json(&bbox, segm.as_ref()).unwrap();
    assert!(v.get("segm").is_none());
    assert_eq!(v["bbox"].as_object().unwrap().len(), 12);

    let (bbox, segm) = evaluate_files(fixture("gt.json"), fixture("results_both.json")).unwrap();
    let segm = segm.expect("masks present");
    let v = stats_json(&bbox, Some(&segm)).unwrap();
    let exp = expected();
    for name in STAT_NAMES {
        assert_eq!(
            v["segm"][name].as_f64().unwrap(),
            segm.as_array()[STAT_NAMES.iter().position(|n| *n == name).unwrap()]
        );
        let want = exp["both"]["bbox"][name].as_f64().unwrap();
        assert!((v["bbox"][name].as_f64().unwrap() - want).abs() <= TOL);
    }
    assert!(!results_have_masks(
        &load_results(fixture("results_empty.json")).unwrap()
    ));
}

#[test]
fn thresholds_equal_numpy_linspace() {
    let exp = expected();
    let iou: Vec<f64> = exp["params"]["iouThrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let rec: Vec<f64> = exp["params"]["recThrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Bit-exact: AP50/AP75 select thresholds by equality.
    assert_eq!(coco_eval::iou_thresholds(), iou);
    assert_eq!(coco_eval::recall_thresholds(), rec);
}

/// Every ground-truth mask (polygons incl. multi-part and out-of-image vertices, compressed and
/// uncompressed RLE) rasterises to the same run lengths, area and box as pycocotools.
#[test]
fn ground_truth_masks_match_pycocotools() {
    check_gt_masks(&fixture(""));
}

fn check_gt_masks(dir: &std::path::Path) {
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let gt = CocoGt::from_path(dir.join("gt.json")).unwrap();
    let prims = exp["gt_masks"].as_array().unwrap();
    assert_eq!(prims.len(), gt.annotations.len());
    for p in prims {
        let id = p["ann_id"].as_i64().unwrap();
        let ann = gt.annotations.iter().find(|a| a.id == id).unwrap();
        let img = gt.images.iter().find(|i| i.id == ann.image_id).unwrap();
        let ours =
            dataset::segmentation_to_rle(ann.segmentation.as_ref().unwrap(), img.height, img.width)
                .unwrap();
        let theirs = coco_eval::mask::EvalRle::from_compressed(
            img.height,
            img.width,
            p["counts"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(ours, theirs, "annotation {id}");
        assert_eq!(ours.area(), p["area"].as_u64().unwrap(), "annotation {id}");
        let bb: Vec<f64> = p["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.to_bbox().to_vec(), bb, "annotation {id}");
    }
}

fn tiny_gt(annotations: &str) -> String {
    format!(
        r#"{{"images": [{{"id": 1, "width": 20, "height": 10}}],
            "categories": [{{"id": 5, "name": "a"}}],
            "annotations": {annotations}}}"#
    )
}

#[test]
fn no_ground_truth_gives_minus_one() {
    // With nothing to recall, every precision/recall cell stays -1, and so does every mean.
    let gt = CocoGt::from_json_str(&tiny_gt("[]")).unwrap();
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "bbox": [1, 1, 4, 4], "score": 0.5}]"#,
    )
    .unwrap();
    let s = evaluate(&gt, &dt, IouType::Bbox).unwrap();
    assert!(s.as_array().iter().all(|&v| v == -1.0), "{s:?}");
}

#[test]
fn perfect_detection_scores_one() {
    let gt = CocoGt::from_json_str(&tiny_gt(
        r#"[{"id": 1, "image_id": 1, "category_id": 5, "bbox": [2, 2, 6, 5], "area": 30,
             "iscrowd": 0, "segmentation": [[2, 2, 8, 2, 8, 7, 2, 7]]}]"#,
    ))
    .unwrap();
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "bbox": [2, 2, 6, 5], "score": 0.9}]"#,
    )
    .unwrap();
    let s = evaluate(&gt, &dt, IouType::Bbox).unwrap();
    // Precision is tp / (tp + fp + eps) as in the reference, so "1" is 1 - 2^-52.
    assert!((s.ap - 1.0).abs() < 1e-12);
    assert_eq!(s.ar1, 1.0);
    assert!((s.ap_small - 1.0).abs() < 1e-12);
    assert_eq!(s.ap_medium, -1.0);
}

#[test]
fn malformed_inputs_are_errors() {
    assert!(CocoGt::from_json_str("{").is_err());
    assert!(CocoGt::from_json_str("[]").is_err());
    assert!(CocoGt::from_json_str(r#"{"images": [], "annotations": []}"#).is_err());
    assert!(CocoGt::from_json_str(&tiny_gt(r#"[{"id": 1, "image_id": 1}]"#)).is_err());
    assert!(CocoGt::from_json_str(&tiny_gt(
        r#"[{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3]}]"#
    ))
    .is_err());
    assert!(CocoGt::from_path(fixture("does_not_exist.json")).is_err());

    assert!(coco_eval::results_from_json_str(r#"{"image_id": 1}"#).is_err());
    assert!(coco_eval::results_from_json_str(r#"[{"image_id": 1, "category_id": 5}]"#).is_err());
    assert!(coco_eval::results_from_json_str(
        r#"[{"image_id": "a", "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}]"#
    )
    .is_err());

    let gt = CocoGt::from_json_str(&tiny_gt("[]")).unwrap();
    // pycocotools asserts on results for images it does not know; we say which one.
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 2, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}]"#,
    )
    .unwrap();
    let err = evaluate(&gt, &dt, IouType::Bbox).unwrap_err().to_string();
    assert!(err.contains("image_id 2"), "{err}");
    // A broken mask string is an error, not a panic.
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "score": 1,
             "segmentation": {"size": [10, 20], "counts": "0j"}}]"#,
    )
    .unwrap();
    assert!(evaluate(&gt, &dt, IouType::Segm).is_err());
    // Counts that do not cover the image.
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "score": 1,
             "segmentation": {"size": [10, 20], "counts": [3, 4]}}]"#,
    )
    .unwrap();
    assert!(evaluate(&gt, &dt, IouType::Segm).is_err());
    // Absurd polygon coordinates are refused rather than walked.
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "score": 1, "bbox": [0, 0, 1, 1],
             "segmentation": [[0, 0, 1e12, 0, 1e12, 5]]}]"#,
    )
    .unwrap();
    assert!(evaluate(&gt, &dt, IouType::Segm).is_err());
    // A mask larger than u32 pixels cannot be represented (as in the reference).
    let big = CocoGt::from_json_str(
        r#"{"images": [{"id": 1, "width": 100000, "height": 100000}],
            "categories": [{"id": 5}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "area": 4,
                             "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2]]}]}"#,
    )
    .unwrap();
    assert!(evaluate(&big, &[], IouType::Segm).is_err());
    // Mixed result kinds: the first has a box, a later one does not.
    let dt = coco_eval::results_from_json_str(
        r#"[{"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1},
            {"image_id": 1, "category_id": 5, "score": 1,
             "segmentation": {"size": [10, 20], "counts": [200]}}]"#,
    )
    .unwrap();
    assert!(evaluate(&gt, &dt, IouType::Bbox).is_err());
}
