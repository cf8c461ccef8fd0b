//! The training data stage: the dataset and deterministic transform against the reference's own
//! `COCODetection.pull_item` (fixtures from tools/make_train_data_fixtures.py), the augmentation's
//! properties, and the loader's order, resume and error handling.

use std::sync::Arc;

use candle_core::Device;
use serde_json::Value;
use yolact_ros2::train::data::augment::{
    self, apply_crop, bgr_to_hsv, crop_trial, hsv_to_bgr, sample_rng, AugmentFlags,
};
use yolact_ros2::train::data::transform::{means_bgr, Work};
use yolact_ros2::train::data::{Loader, LoaderOptions, TrainSet};
use yolact_ros2::YolactConfig;

use crate::support::coco_train::{edit_json, synth_set, SynthSet};
use crate::support::{fixture, rle_counts};

fn cfg() -> YolactConfig {
    YolactConfig::by_name("yolact_resnet50").expect("config")
}

/// yolact_resnet50 with a small input so loader tests stay fast.
fn small_cfg() -> YolactConfig {
    let mut c = cfg();
    c.max_size = 48;
    c
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("train_data/expected.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn open_fixture() -> TrainSet {
    TrainSet::open(
        &fixture("train_data/ann.json"),
        &fixture("train_data/images"),
        &cfg(),
    )
    .expect("open fixture set")
}

/// Row-major 0/1 mask of a COCO compressed RLE, decoded with the tests' own decoder.
fn decode(counts: &str, h: usize, w: usize) -> Vec<u8> {
    let mut out = vec![0u8; h * w];
    let mut i = 0usize;
    for (k, c) in rle_counts(counts).into_iter().enumerate() {
        let c = c as usize;
        if k % 2 == 1 {
            for j in i..i + c {
                out[(j % h) * w + j / h] = 1;
            }
        }
        i += c;
    }
    assert_eq!(i, h * w, "RLE covers the mask");
    out
}

#[test]
fn the_set_follows_the_reference_index_labels_and_skips() {
    let set = open_fixture();
    // Categories listed 7, 1, 3 in the file: labels follow the sorted ids.
    assert_eq!(set.class_names(), ["person", "car", "kite"]);
    let e = expected();
    let ref_ids: Vec<i64> = e["reference_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    // The reference samples 1, 2, 3; image 3 has only crowds and is skipped here; image 4 has no
    // annotation and the reference does not sample it either.
    assert_eq!(ref_ids, [1, 2, 3]);
    assert_eq!(set.len(), 2);
    assert_eq!((set.image_id(0), set.image_id(1)), (Some(1), Some(2)));
    let s = set.skipped();
    assert_eq!((s.without_annotations, s.crowd_only), (1, 1));
}

#[test]
fn deterministic_transform_matches_the_reference_pull_item() {
    let set = open_fixture();
    let e = expected();
    let stride = e["image_stride"].as_u64().unwrap() as usize;
    let grids =
        candle_core::safetensors::load(fixture("train_data/images.safetensors"), &Device::Cpu)
            .expect("images.safetensors");
    for (index, want) in e["samples"].as_array().unwrap().iter().enumerate() {
        let id = want["image_id"].as_u64().unwrap();
        let got = set.sample(index, None).expect("sample");
        assert_eq!(got.image_id, id);
        let s = got.size;
        assert_eq!(s, 550);
        // Image: the stored every-7th-pixel grid, and the per-channel sums of the whole image.
        let grid = grids[&format!("image{id}")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = s.div_ceil(stride);
        let mut max_diff = 0f32;
        for c in 0..3 {
            for (gy, y) in (0..s).step_by(stride).enumerate() {
                for (gx, x) in (0..s).step_by(stride).enumerate() {
                    let d = (got.image[c * s * s + y * s + x] - grid[(c * n + gy) * n + gx]).abs();
                    max_diff = max_diff.max(d);
                }
            }
            let sum: f64 = got.image[c * s * s..(c + 1) * s * s]
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            let want_sum = want["image_sum"][c].as_f64().unwrap();
            // A bound implied by 1e-4 per pixel; the measured gap is far below it.
            assert!(
                (sum - want_sum).abs() < 1e-4 * (s * s) as f64,
                "image {id} channel {c}: sum {sum} vs {want_sum}"
            );
        }
        eprintln!("image {id}: max |image - reference| = {max_diff:e} (normalised)");
        assert!(max_diff < 1e-4, "image {id}: {max_diff}");

        // Boxes (f32 after the collate cast), labels and crowd count: exact.
        let want_boxes: Vec<[f32; 4]> = want["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let b: Vec<f32> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                [b[0], b[1], b[2], b[3]]
            })
            .collect();
        assert_eq!(got.truth.boxes, want_boxes, "image {id} boxes");
        let want_labels: Vec<i64> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got.truth.labels, want_labels, "image {id} labels");
        assert_eq!(
            got.truth.num_crowds as u64,
            want["num_crowds"].as_u64().unwrap()
        );
        // Masks: OpenCV's 8-bit resize modelled exactly (src/train/data/resize.rs), so every
        // pixel must agree, also on image 1, which is resized from 320x240.
        let masks = want["masks"].as_array().unwrap();
        assert_eq!(masks.len(), got.truth.len());
        let mut differing = 0usize;
        for (k, m) in masks.iter().enumerate() {
            let want_mask = decode(m.as_str().unwrap(), s, s);
            let ours = &got.truth.masks[k * s * s..(k + 1) * s * s];
            differing += want_mask.iter().zip(ours).filter(|(a, b)| a != b).count();
            assert!(want_mask.contains(&1), "mask {k} of image {id} is empty");
        }
        eprintln!(
            "image {id}: {differing} of {} mask pixels differ",
            masks.len() * s * s
        );
        assert_eq!(differing, 0, "image {id}");
    }
}

#[test]
fn hsv_formulas_match_opencv() {
    let e = expected();
    let rows = |k: &str| -> Vec<[f32; 3]> {
        e["hsv"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p: Vec<f32> = p
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                [p[0], p[1], p[2]]
            })
            .collect()
    };
    let (bgr, hsv, hsv_in, bgr_out) = (rows("bgr"), rows("hsv"), rows("hsv_in"), rows("bgr_out"));
    let (mut dh, mut dback) = (0f32, 0f32);
    for (p, want) in bgr.iter().zip(&hsv) {
        let got = bgr_to_hsv(*p);
        // Hue in degrees; S relative (it exceeds 1 for negative inputs); V exact.
        dh = dh.max((got[0] - want[0]).abs());
        assert!(
            (got[1] - want[1]).abs() <= 1e-6 * want[1].abs().max(1.0),
            "{p:?}"
        );
        assert_eq!(got[2], want[2]);
    }
    for (p, want) in hsv_in.iter().zip(&bgr_out) {
        let got = hsv_to_bgr(*p);
        for c in 0..3 {
            dback = dback.max((got[c] - want[c]).abs() / want[c].abs().max(1.0));
        }
    }
    eprintln!("BGR->HSV max |dH| {dh:e} deg; HSV->BGR max rel diff {dback:e}");
    assert!(dh < 1e-3, "{dh}");
    assert!(dback < 1e-5, "{dback}");
}

#[test]
fn hsv_round_trip_restores_pixels() {
    let mut rng = sample_rng(1, 2, 3, 4);
    for _ in 0..5000 {
        let p: [f32; 3] = std::array::from_fn(|_| augment::uniform(&mut rng, 0.0, 255.0) as f32);
        let back = hsv_to_bgr(bgr_to_hsv(p));
        for c in 0..3 {
            assert!((back[c] - p[c]).abs() < 1e-3, "{p:?} -> {back:?}");
        }
    }
}

/// Every mask pixel lies inside its box (the box may be up to 1 px larger: boxes are real
/// valued, masks are pixels, and COCO boxes round outward).
fn assert_masks_inside_boxes(w: &Work, what: &str) {
    let plane = w.h * w.w;
    for (k, b) in w.boxes.iter().enumerate() {
        let m = &w.masks[k * plane..(k + 1) * plane];
        for (i, _) in m.iter().enumerate().filter(|(_, &v)| v == 1) {
            let (x, y) = ((i % w.w) as f64, (i / w.w) as f64);
            assert!(
                x + 1.0 >= b[0] - 1.0
                    && x <= b[2] + 1.0
                    && y + 1.0 >= b[1] - 1.0
                    && y <= b[3] + 1.0,
                "{what}: object {k} pixel ({x}, {y}) outside box {b:?}"
            );
        }
        assert!(m.contains(&1), "{what}: object {k} lost its mask");
    }
}

#[test]
fn crop_expand_and_mirror_keep_boxes_and_masks_together() {
    let set = open_fixture();
    let base = set.load(0).expect("load");
    // The tiny 2x2 box's mask is a 2x2 square: the mask-in-box test is meaningful for it too.
    assert_masks_inside_boxes(&base, "loaded");
    let geometric = AugmentFlags {
        photometric_distort: false,
        ..AugmentFlags::default()
    };
    let (mut crops, mut expands, mut mirrors) = (0, 0, 0);
    for seed in 0..150u64 {
        let mut w = base.clone();
        augment::augment(&mut w, geometric, &mut sample_rng(seed, 0, 0, 0));
        assert_masks_inside_boxes(&w, &format!("seed {seed}"));
        assert_eq!(w.masks.len(), w.len() * w.h * w.w);
        assert_eq!(w.image.len(), w.h * w.w * 3);
        assert!(w.num_crowds <= 1 && w.labels[w.len() - w.num_crowds..].iter().all(|&l| l < 0));
        assert!(w.num_crowds < w.len(), "a crop keeps a non-crowd object");
        crops += usize::from(w.len() < base.len());
        expands += usize::from(w.h > base.h || w.w > base.w);
        mirrors += 1;
    }
    // Each step happens in a good share of the draws.
    assert!(
        crops > 20 && expands > 20,
        "crops {crops}, expands {expands}"
    );
    assert_eq!(mirrors, 150);

    // Mirror twice is the identity; expand keeps the image and masks at the truncated offset.
    let mut w = base.clone();
    augment::mirror(&mut w);
    assert_masks_inside_boxes(&w, "mirrored");
    augment::mirror(&mut w);
    assert_eq!(w, base);
    for seed in 0..40u64 {
        let mut w = base.clone();
        augment::expand(&mut w, &mut sample_rng(seed, 7, 0, 0));
        if w.w == base.w {
            continue; // not expanded this time
        }
        let (l, t) = (
            (w.boxes[0][0] - base.boxes[0][0]) as usize,
            (w.boxes[0][1] - base.boxes[0][1]) as usize,
        );
        for y in [0, base.h / 2, base.h - 1] {
            for x in [0, base.w / 3, base.w - 1] {
                let a = &w.image[((t + y) * w.w + l + x) * 3..][..3];
                assert_eq!(a, &base.image[(y * base.w + x) * 3..][..3]);
            }
        }
        assert_eq!(&w.image[..3], &means_bgr()[..]);
        let plane = w.h * w.w;
        let area: usize = w.masks[..plane].iter().map(|&v| v as usize).sum();
        let base_area: usize = base.masks[..base.h * base.w]
            .iter()
            .map(|&v| v as usize)
            .sum();
        assert_eq!(area, base_area);
    }
}

#[test]
fn crop_clips_boxes_and_slices_masks_identically() {
    let set = open_fixture();
    let base = set.load(0).expect("load");
    let mut w = base.clone();
    // A rectangle holding the centres of the triangle and the disc object only.
    let rect = [20, 30, 200, 230];
    assert!(apply_crop(&mut w, rect));
    assert_eq!((w.w, w.h), (180, 200));
    for (k, b) in w.boxes.iter().enumerate() {
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 180.0 && b[3] <= 200.0,
            "{k}: {b:?}"
        );
    }
    // The crop's pixels are the original's, shifted.
    assert_eq!(&w.image[..3], &base.image[(30 * base.w + 20) * 3..][..3]);
    let plane = w.h * w.w;
    let bplane = base.h * base.w;
    // Find which original object each kept one is by its label and mask overlap.
    for k in 0..w.len() {
        let m = &w.masks[k * plane..(k + 1) * plane];
        let found = (0..base.len()).any(|j| {
            let bm = &base.masks[j * bplane..(j + 1) * bplane];
            (0..w.h).all(|y| {
                m[y * w.w..(y + 1) * w.w] == bm[(y + 30) * base.w + 20..(y + 30) * base.w + 200]
            })
        });
        assert!(found, "kept mask {k} is not a slice of an original mask");
    }
}

#[test]
fn crop_left_follows_numpys_uniform_with_high_one() {
    // uniform(W - w) is uniform(low = W - w, high = 1): left never falls below 1 unless the crop
    // is within 1 px of the full width. uniform(0, W - w) would start at column 0 often.
    let (w, h) = (100usize, 80usize);
    let mut rng = sample_rng(9, 0, 0, 0);
    let (mut trials, mut at_zero, mut max_left) = (0, 0, 0);
    for _ in 0..20000 {
        let Some(r) = crop_trial(&mut rng, w, h) else {
            continue;
        };
        trials += 1;
        assert!(
            r[2] <= w && r[3] <= h && r[0] < r[2] && r[1] < r[3],
            "{r:?}"
        );
        if r[2] - r[0] < w - 1 {
            assert!(r[0] >= 1, "left at 0 for a crop of width {}", r[2] - r[0]);
        }
        at_zero += usize::from(r[0] == 0);
        max_left = max_left.max(r[0]);
    }
    assert!(trials > 10000, "the aspect test rejects too much: {trials}");
    // Only the near-full-width crops may start at 0 (rare: w is uniform in [30, 100)).
    assert!(at_zero < trials / 50, "{at_zero} of {trials}");
    // The crop can still reach the far side: W - 0.3 W = 70.
    assert!(max_left >= 65, "{max_left}");
}

#[test]
fn augmented_samples_are_reproducible_and_keyed_by_seed_and_epoch() {
    let set = open_fixture();
    let a = set.sample(0, Some((5, 1))).expect("sample");
    let b = set.sample(0, Some((5, 1))).expect("sample");
    assert_eq!(a.image, b.image);
    assert_eq!(a.truth, b.truth);
    let other_seed = set.sample(0, Some((6, 1))).expect("sample");
    let other_epoch = set.sample(0, Some((5, 2))).expect("sample");
    assert_ne!(a.image, other_seed.image);
    assert_ne!(a.image, other_epoch.image);
    assert_eq!(a.size, 550);
    assert_eq!(a.truth.masks.len(), a.truth.len() * 550 * 550);
    assert!(a.truth.num_crowds < a.truth.len());
    // Masks and boxes agree after the whole pipeline too: every mask pixel inside its box.
    for (k, bx) in a.truth.boxes.iter().enumerate() {
        let m = &a.truth.masks[k * 550 * 550..(k + 1) * 550 * 550];
        for (i, _) in m.iter().enumerate().filter(|(_, &v)| v == 1) {
            let (x, y) = ((i % 550) as f32 / 550.0, (i / 550) as f32 / 550.0);
            let tol = 2.0 / 550.0 * 4.0; // a pixel at the worst Expand/Resize scale
            assert!(
                x >= bx[0] - tol && x <= bx[2] + tol && y >= bx[1] - tol && y <= bx[3] + tol,
                "object {k} pixel ({x}, {y}) outside {bx:?}"
            );
        }
    }
}

fn open(set: &SynthSet) -> yolact_ros2::Result<TrainSet> {
    TrainSet::open(&set.ann, &set.images, &small_cfg())
}

fn err_text(r: yolact_ros2::Result<TrainSet>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_annotations_are_errors_naming_the_annotation_and_file() {
    let ann_name = |s: &SynthSet| s.ann.display().to_string();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "unknown category",
            |v| v["annotations"][1]["category_id"] = 42.into(),
            "category id 42",
        ),
        (
            "box outside",
            |v| v["annotations"][1]["bbox"][0] = 1000.0.into(),
            "beyond",
        ),
        (
            "2-point polygon",
            |v| v["annotations"][1]["segmentation"] = serde_json::json!([[1, 1, 5, 5]]),
            "at least 3",
        ),
        (
            "no bbox",
            |v| {
                v["annotations"][1].as_object_mut().unwrap().remove("bbox");
            },
            "no bbox",
        ),
        (
            "rle size",
            |v| {
                v["annotations"][1]["segmentation"] =
                    serde_json::json!({"size": [3, 3], "counts": [9]})
            },
            "RLE of size 3x3",
        ),
        (
            "not json",
            |v| *v = serde_json::json!([1, 2]),
            "JSON object",
        ),
    ];
    for (name, edit, needle) in cases {
        let set = synth_set(4);
        edit_json(&set.ann, edit);
        let msg = err_text(open(&set));
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(msg.contains(&ann_name(&set)), "{name}: {msg}");
        if name != "not json" {
            assert!(msg.contains("annotation 2"), "{name}: {msg}");
        }
    }
    // A box 1 px beyond the border is accepted (COCO's rounding), 1.5 px is not.
    let set = synth_set(4);
    edit_json(&set.ann, |v| {
        let w = v["images"][0]["width"].as_f64().unwrap();
        v["annotations"][0]["bbox"] = serde_json::json!([w - 9.0, 0.0, 10.0, 5.0]);
    });
    assert!(open(&set).is_ok());
    edit_json(&set.ann, |v| {
        let w = v["images"][0]["width"].as_f64().unwrap();
        v["annotations"][0]["bbox"] = serde_json::json!([w - 8.5, 0.0, 10.0, 5.0]);
    });
    assert!(err_text(open(&set)).contains("annotation 1"));
}

#[test]
fn broken_images_are_errors_naming_the_file() {
    let set = synth_set(4);
    std::fs::remove_file(set.image(2)).unwrap();
    let msg = err_text(open(&set));
    assert!(
        msg.contains("im2.png") && msg.contains("does not exist"),
        "{msg}"
    );

    let set = synth_set(4);
    edit_json(&set.ann, |v| v["images"][2]["width"] = 200.into());
    // The annotations of image 3 still fit in 200 px, so open succeeds; reading finds it.
    let ts = open(&set).expect("open");
    let msg = ts.sample(2, None).unwrap_err().to_string();
    assert!(msg.contains("im3.png") && msg.contains("200x"), "{msg}");

    let set = synth_set(4);
    let ts = open(&set).expect("open");
    std::fs::write(set.image(1), b"not a png").unwrap();
    let msg = ts.sample(0, None).unwrap_err().to_string();
    assert!(msg.contains("im1.png"), "{msg}");
    assert!(set.dir.path().exists());
}

fn opts(workers: usize, start: (u64, usize)) -> LoaderOptions {
    LoaderOptions {
        batch: 2,
        workers,
        seed: 11,
        augment: true,
        start,
    }
}

/// (image ids, image values, box values) of each batch, for exact comparisons.
type Seen = Vec<(Vec<u64>, Vec<f32>, Vec<f32>)>;

fn run(loader: &mut Loader, n: usize) -> Seen {
    (0..n)
        .map(|_| {
            let b = loader.next().expect("endless").expect("batch");
            let boxes = b
                .truths
                .iter()
                .flat_map(|t| t.boxes.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect();
            (
                b.image_ids.clone(),
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                boxes,
            )
        })
        .collect()
}

#[test]
fn loader_order_is_reproducible_and_resumes_bit_for_bit() {
    let synth = synth_set(7);
    let set = Arc::new(open(&synth).expect("open"));
    assert_eq!(set.len(), 7);
    let mut a = Loader::new(set.clone(), opts(3, (0, 0)), Device::Cpu).expect("loader");
    assert_eq!(a.epoch_size(), 3); // 7 // 2, the last partial batch dropped
    let full = run(&mut a, 7);
    assert_eq!(a.position(), (2, 1));
    drop(a);
    // Each epoch visits 6 distinct images.
    for epoch in full.chunks(3).take(2) {
        let mut ids: Vec<u64> = epoch.iter().flat_map(|b| b.0.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 6);
    }
    assert_ne!(full[0].0, full[3].0, "epochs are shuffled differently");
    // Another worker count: the same batches.
    let mut b = Loader::new(set.clone(), opts(1, (0, 0)), Device::Cpu).expect("loader");
    assert_eq!(run(&mut b, 7), full);
    // Resumed at (1, 1), the 5th batch: identical from there.
    let mut c = Loader::new(set.clone(), opts(2, (1, 1)), Device::Cpu).expect("loader");
    assert_eq!(run(&mut c, 3), full[4..].to_vec());
    // Another seed: another order or augmentation.
    let mut d = Loader::new(
        set,
        LoaderOptions {
            seed: 12,
            ..opts(2, (0, 0))
        },
        Device::Cpu,
    )
    .expect("loader");
    assert_ne!(run(&mut d, 3), full[..3].to_vec());
}

#[test]
fn loader_reports_a_worker_error_and_keeps_going() {
    let synth = synth_set(6);
    let set = Arc::new(open(&synth).expect("open"));
    // Break image 4 after open: the batch holding it fails, the others arrive.
    std::fs::write(synth.image(4), b"garbage").unwrap();
    let mut loader = Loader::new(set.clone(), opts(2, (0, 0)), Device::Cpu).expect("loader");
    let order = yolact_ros2::train::data::loader::epoch_order(set.len(), 11, 0);
    let bad = order
        .iter()
        .position(|&i| set.image_id(i) == Some(4))
        .unwrap()
        / 2;
    for b in 0..3 {
        let r = loader.next().expect("endless");
        if b == bad {
            let msg = r.expect_err("the broken image's batch fails").to_string();
            assert!(msg.contains("im4.png"), "{msg}");
        } else {
            assert_eq!(r.expect("batch").image_ids.len(), 2);
        }
    }
    assert!(Loader::new(
        set.clone(),
        LoaderOptions {
            batch: 7,
            ..opts(1, (0, 0))
        },
        Device::Cpu
    )
    .is_err());
    assert!(Loader::new(set, opts(1, (0, 3)), Device::Cpu).is_err());
}
