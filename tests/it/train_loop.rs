//! The training loop (`train::trainer`, `yolact train`): on a handful of generated images with a
//! small config the loss goes down; a run interrupted and resumed ends with the same weights, bit
//! for bit, as an uninterrupted one; the output folder holds the checkpoints, the log and the plot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};
use serde_json::json;
use yolact_ros2::config::{BackboneKind, YolactConfig};
use yolact_ros2::train::init::{Freeze, Init};
use yolact_ros2::train::trainer::{train, IterLog, Outcome, TrainOptions, Validation};
use yolact_ros2::weights::load_checkpoint;

use crate::support::{text, yolact};

/// A ResNet config small enough for CPU training tests (one block per stage, 64-pixel input),
/// without warm-up so a few iterations already train at the full rate.
fn tiny() -> YolactConfig {
    let mut c = YolactConfig::by_name("yolact_resnet50").unwrap();
    c.backbone = BackboneKind::resnet([1, 1, 1, 1], None);
    c.fpn_channels = 32;
    c.max_size = 64;
    c.mask_dim = 8;
    c.solver.lr_warmup_until = 0;
    c
}

/// `c` at `max_size` with its prior scales shrunk alike (the released ones are pixels at 550), so
/// that the priors still fit the objects and matching finds positives.
fn at_input_size(mut c: YolactConfig, max_size: usize) -> YolactConfig {
    let k = max_size as f64 / c.max_size as f64;
    c.pred_scales = c
        .pred_scales
        .map(|level| level.iter().map(|s| s * k).collect());
    c.max_size = max_size;
    c
}

/// Issue 12's overfit model: a quarter-width one-block ResNet (as `yolact_plus_mini`, without
/// its deformable convs and mask-IoU head, for speed) at 128 pixels, 16 prototypes.
fn overfit_config() -> YolactConfig {
    let mut c = YolactConfig::by_name("yolact_resnet50").unwrap();
    c.backbone = BackboneKind::ResNet {
        blocks: [1, 1, 1, 1],
        dcn_interval: None,
        width: 16,
    };
    c.fpn_channels = 32;
    c.mask_dim = 16;
    c.solver.lr_warmup_until = 50;
    at_input_size(c, 128)
}

/// Four 64x64 images, each with a red square ("red") and a blue bar ("blue") at different
/// places, as a COCO instances file with polygon masks.
fn write_set(dir: &Path) -> (PathBuf, PathBuf) {
    write_set_scaled(dir, 1)
}

/// [`write_set`] drawn `scale` times larger.
fn write_set_scaled(dir: &Path, scale: u32) -> (PathBuf, PathBuf) {
    let side = 64 * scale;
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut imgs = Vec::new();
    let mut anns = Vec::new();
    let shapes = [
        ([6, 8, 26, 26], [36, 30, 22, 12]),
        ([30, 4, 24, 24], [4, 40, 26, 14]),
        ([20, 30, 28, 28], [8, 6, 30, 12]),
        ([4, 34, 22, 22], [34, 10, 24, 16]),
    ];
    for (i, (red, blue)) in shapes.iter().enumerate() {
        let (red, blue) = (&red.map(|v| v * scale), &blue.map(|v| v * scale));
        let inside = |r: &[u32; 4], x: u32, y: u32| {
            x >= r[0] && x < r[0] + r[2] && y >= r[1] && y < r[1] + r[3]
        };
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            if inside(red, x, y) {
                image::Rgb([220, 30, 30])
            } else if inside(blue, x, y) {
                image::Rgb([30, 40, 220])
            } else {
                image::Rgb([120, 120, 110])
            }
        });
        let file = format!("img{i}.png");
        img.save(images.join(&file)).unwrap();
        let id = i as i64 + 1;
        imgs.push(json!({"id": id, "file_name": file, "width": side, "height": side}));
        for (k, (r, cat)) in [(red, 1), (blue, 2)].into_iter().enumerate() {
            let [x, y, w, h] = r.map(f64::from);
            anns.push(json!({
                "id": id * 10 + k as i64,
                "image_id": id,
                "category_id": cat,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }));
        }
    }
    let ann = dir.join("train.json");
    let doc = json!({
        "images": imgs,
        "annotations": anns,
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}],
    });
    std::fs::write(&ann, serde_json::to_vec(&doc).unwrap()).unwrap();
    (ann, images)
}

fn options(ann: &Path, images: &Path, out: &Path, iters: u64) -> TrainOptions {
    TrainOptions {
        config: tiny(),
        train_ann: ann.to_path_buf(),
        train_images: images.to_path_buf(),
        init: Init::Scratch,
        out: out.to_path_buf(),
        iters: Some(iters),
        batch: 2,
        lr: Some(5e-3),
        seed: 7,
        augment: true,
        resume: false,
        freeze: Freeze::None,
        save_every: 0,
        log_every: 1,
        workers: 2,
        device: Device::Cpu,
        val: None,
    }
}

fn run(opts: &TrainOptions, stop_at: Option<u64>) -> (Outcome, Vec<IterLog>) {
    let stop = AtomicBool::new(false);
    let mut logs = Vec::new();
    let outcome = train(opts, &stop, &mut |_, _| {}, &mut |e| {
        logs.push(e.clone());
        if Some(e.iteration) == stop_at {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .unwrap();
    (outcome, logs)
}

#[test]
fn the_loss_goes_down_when_overfitting_a_few_images() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, images) = write_set(dir.path());
    let out = dir.path().join("run");
    let mut opts = options(&ann, &images, &out, 40);
    opts.augment = false;
    let (outcome, logs) = run(&opts, None);
    assert_eq!(outcome, Outcome::Finished);
    assert_eq!(logs.len(), 40);
    let mean = |l: &[IterLog]| l.iter().map(|e| f64::from(e.total)).sum::<f64>() / l.len() as f64;
    let (first, last) = (mean(&logs[..4]), mean(&logs[36..]));
    eprintln!(
        "overfit: total loss {first:.3} over the first 4 iterations, {last:.3} over the last 4"
    );
    // 40 iterations are all inside the reference's 500-iteration warm-up (lr at most ~4e-4
    // here), so this asserts a fall by a fifth, not convergence (convergence: the overfit test
    // below); measured: 22.7 -> 12.5.
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    for e in &logs {
        let letters: Vec<&str> = e.terms.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(letters, ["B", "M", "C", "S"]);
    }
    // The folder: final checkpoint with the data set's classes, the log and the plot.
    let lines = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 40);
    let first_line: serde_json::Value =
        serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for k in [
        "iteration",
        "lr",
        "B",
        "C",
        "M",
        "S",
        "total",
        "images_per_s",
    ] {
        assert!(first_line.get(k).is_some(), "{k} missing in {first_line}");
    }
    assert!(std::fs::metadata(out.join("loss.png")).unwrap().len() > 1000);
    let ck = yolact_ros2::train::optim::checkpoint::load(&out.join("final.safetensors")).unwrap();
    assert_eq!(
        ck.config.class_names,
        Some(vec!["red".to_string(), "blue".to_string()])
    );
    assert_eq!(ck.state.unwrap().iteration, 40);
}

/// Learning shown: trained from scratch on the four images (at twice the size, no augmentation),
/// the model finds their objects again: mask AP50 >= 0.9 on them, by our COCOeval (equal to
/// pycocotools, tests/it/coco_eval.rs) run as the run's own validation.
#[test]
fn an_overfit_model_finds_the_objects_it_was_trained_on() {
    const ITERS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let (ann, images) = write_set_scaled(dir.path(), 2);
    let mut opts = options(&ann, &images, &dir.path().join("run"), ITERS);
    opts.config = overfit_config();
    opts.augment = false;
    opts.batch = 4;
    // At 4e-3 this reached 1.0 on an AVX-512 machine, but on an AVX2 one the mask branch died
    // at iteration ~100 (mask loss stuck at 6.048, no gradient: mask AP50 0); 2e-3 still
    // oscillated with seed 1. At 1e-3 seeds 1, 2 and 7 all end at mask AP50 1.0.
    opts.lr = Some(1e-3);
    opts.log_every = 50;
    opts.val = Some(Validation {
        ann: ann.clone(),
        images: images.clone(),
        every: 0,
        max_images: None,
    });
    let (outcome, logs) = run(&opts, None);
    assert_eq!(outcome, Outcome::Finished);
    let last = logs.last().unwrap();
    let val = last.val.clone().expect("validated at the end");
    eprintln!(
        "overfit {ITERS} iterations: loss {:.3} -> {:.3}; on the training images box AP50 {:.3}, \
         mask AP50 {:.3} (mask AP {:.3})",
        logs[0].total, last.total, val.bbox.ap50, val.segm.ap50, val.segm.ap
    );
    assert_eq!(val.images, 4);
    assert!(val.segm.ap50 >= 0.9, "mask AP50 {}", val.segm.ap50);
    assert!(val.bbox.ap50 >= 0.9, "box AP50 {}", val.bbox.ap50);
}

#[test]
fn a_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, images) = write_set(dir.path());
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    let (o, _) = run(&options(&ann, &images, &whole, 5), None);
    assert_eq!(o, Outcome::Finished);
    let (o, _) = run(&options(&ann, &images, &parts, 5), Some(2));
    assert_eq!(o, Outcome::Interrupted { iteration: 2 });
    assert!(!parts.join("final.safetensors").exists());
    // As a run killed after its last save leaves it: logged iterations beyond the checkpoint.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(parts.join("train.jsonl"))
            .unwrap();
        writeln!(
            f,
            r#"{{"iteration":3,"epoch":0,"lr":0.1,"total":1.0,"images_per_s":1.0}}"#
        )
        .unwrap();
    }
    let mut again = options(&ann, &images, &parts, 5);
    again.resume = true;
    let (o, logs) = run(&again, None);
    assert_eq!(o, Outcome::Finished);
    assert_eq!(logs.first().map(|e| e.iteration), Some(3));

    let a = load_checkpoint(&whole.join("final.safetensors")).unwrap();
    let b = load_checkpoint(&parts.join("final.safetensors")).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in &a {
        let (x, y) = (
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
            b[k].to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{k} differs after the resume"
        );
    }
    let lines = std::fs::read_to_string(parts.join("train.jsonl")).unwrap();
    let its: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["iteration"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        its,
        [1, 2, 3, 4, 5],
        "the log continues across the resume, once per iteration"
    );
}

#[test]
fn train_cli_explains_itself_and_refuses_a_bad_set_argument() {
    let o = yolact(&["train", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for s in ["--resume", "--freeze", "final.safetensors", "130"] {
        assert!(t.contains(s), "--help lacks {s}: {t}");
    }
    let o = yolact(&[
        "train",
        "--config",
        "yolact_resnet50",
        "--train",
        "nocolon",
        "--init",
        "scratch",
        "--out",
        "/tmp/x",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("ANN.json:IMAGES_DIR"), "{}", text(&o));
}
