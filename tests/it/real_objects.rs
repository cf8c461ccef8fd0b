//! The shipped model (`yolact_plus_mini`, models/yolact_plus_mini) on generated scenes it never saw
//! (seeds other than its training set's 1 and validation set's 2): what it finds is checked against
//! the generator's exact ground truth, not against the model's own output. The thresholds are
//! issue 13's goals; the shipped model's measured figures are above them
//! (models/yolact_plus_mini/README.md).

use serde_json::Value;
use yolact_ros2::engine::preprocess::load_image;
use yolact_ros2::engine::{Engine, InferOptions};
use yolact_ros2::weights::shipped;

use crate::support::synth::{found_unoccluded, read_json, stills, truths};
use crate::support::{assert_pycocotools_agrees, text, yolact};

/// Unoccluded objects whose best same-class detection has mask IoU >= 0.8: at least this share
/// (issue 13's goal).
const MIN_FOUND: f64 = 0.9;
/// Held-out box and mask AP@[.5:.95] at least (issue 13's goal).
const MIN_BOX_AP: f64 = 0.6;
const MIN_MASK_AP: f64 = 0.6;

#[test]
fn infer_finds_the_unoccluded_objects_of_new_scenes_with_the_right_class() {
    let dir = tempfile::tempdir().unwrap();
    let set = stills(dir.path(), 12, 1234);
    let gt = read_json(&set.join("annotations.json"));
    let truth = truths(&gt);
    let (sd, cfg) = shipped::load(None).unwrap();
    let engine = Engine::from_state_dict(sd, cfg, &candle_core::Device::Cpu).unwrap();
    let (mut total, mut found) = (0usize, 0usize);
    for img in gt["images"].as_array().unwrap() {
        let id = img["id"].as_i64().unwrap();
        let file = set.join("images").join(img["file_name"].as_str().unwrap());
        let dets = engine
            .infer(&load_image(&file).unwrap(), &InferOptions::default())
            .unwrap();
        let full: Vec<(String, Vec<u8>)> = dets
            .items
            .iter()
            .map(|d| (dets.label(d.class_id), d.mask.to_full()))
            .collect();
        let (t, f) = found_unoccluded(&truth, id, &full);
        total += t;
        found += f;
    }
    let share = found as f64 / total.max(1) as f64;
    eprintln!("shipped model: {found} of {total} unoccluded objects found at mask IoU >= 0.8 ({share:.3})");
    assert!(total >= 20, "only {total} unoccluded objects in the scenes");
    assert!(
        share >= MIN_FOUND,
        "{found} of {total} found ({share:.3} < {MIN_FOUND})"
    );
}

#[test]
fn eval_of_held_out_scenes_runs_the_shipped_model_and_agrees_with_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let set = stills(dir.path(), 40, 777);
    let ann = set.join("annotations.json");
    let out = dir.path().join("eval");
    // No --weights: the shipped model.
    let o = yolact(&[
        "eval",
        "--coco-gt",
        ann.to_str().unwrap(),
        "--images",
        set.join("images").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    // YOLACT++: boxes are ranked by the class score (results_bbox.json), masks by the rescored one.
    assert_pycocotools_agrees(&ours, &ann, &out, &["AP", "AP50", "AP75", "AR100"]);
    let (box_ap, mask_ap) = (
        ours["bbox"]["AP"].as_f64().unwrap(),
        ours["segm"]["AP"].as_f64().unwrap(),
    );
    eprintln!("shipped model on 40 held-out scenes: box AP {box_ap:.3}, mask AP {mask_ap:.3}");
    assert!(box_ap >= MIN_BOX_AP, "box AP {box_ap}");
    assert!(mask_ap >= MIN_MASK_AP, "mask AP {mask_ap}");
}

/// `yolact eval --max-images N` scores those N images only (the ground truth of the others does
/// not count as missed): the same figures as pycocotools on a ground-truth file cut to them.
#[test]
fn eval_of_the_first_images_scores_them_alone() {
    let dir = tempfile::tempdir().unwrap();
    let set = stills(dir.path(), 12, 778);
    let ann = set.join("annotations.json");
    let out = dir.path().join("eval");
    let o = yolact(&[
        "eval",
        "--coco-gt",
        ann.to_str().unwrap(),
        "--images",
        set.join("images").to_str().unwrap(),
        "--max-images",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The first five files by name, and the ground truth of those only, cut here.
    let mut gt = read_json(&ann);
    let mut names: Vec<(String, i64)> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["file_name"].as_str().unwrap().to_owned(),
                i["id"].as_i64().unwrap(),
            )
        })
        .collect();
    names.sort();
    let kept: Vec<i64> = names.iter().take(5).map(|(_, id)| *id).collect();
    let keep = |v: &mut Value, key: &str| {
        v.as_array_mut()
            .unwrap()
            .retain(|x| kept.contains(&x[key].as_i64().unwrap()))
    };
    keep(&mut gt["images"], "id");
    keep(&mut gt["annotations"], "image_id");
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, serde_json::to_vec(&gt).unwrap()).unwrap();
    assert_pycocotools_agrees(&ours, &cut, &out, &["AP", "AP50", "AR100"]);
}
