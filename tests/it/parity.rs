//! Parity with the reference YOLACT (dbolya/yolact on CPU, torchvision DCN) on synthetic
//! full-size weights. Fixtures: tests/fixtures/parity (see its README.md for how they were made).
//!
//! Two groups:
//! * fixture checks that need only the fixtures (they keep the committed files honest);
//! * `engine::*`, the parity tests of `pipeline::Engine`: the two goal configs from legacy and zip
//!   `.pth` files, the other four from safetensors.
//!
//! Run: `cargo test --release --test it parity:: -- --nocapture`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde::Deserialize;

/// Configs with committed fixtures. The first two are the acceptance targets; the others
/// use automatically chosen thresholds (see the fixture README).
const CONFIGS: [&str; 6] = [
    "yolact_resnet50",
    "yolact_plus_resnet50",
    "yolact_darknet53",
    "yolact_base",
    "yolact_im700",
    "yolact_plus_base",
];

fn fixture_dir() -> PathBuf {
    crate::support::fixture("parity")
}

#[derive(Debug, Deserialize)]
struct RleFx {
    size: [usize; 2],
    counts: String,
}

#[derive(Debug, Deserialize)]
struct DetFx {
    class_id: usize,
    score: f32,
    class_score: f32,
    mask_iou: Option<f32>,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    box_int: [i64; 4],
    mask: RleFx,
    area: usize,
}

#[derive(Debug, Deserialize)]
struct DetsFx {
    config: String,
    seed: u64,
    image: String,
    width: usize,
    height: usize,
    score_threshold: f32,
    top_k: usize,
    num_priors: usize,
    detections: Vec<DetFx>,
}

fn load_dets(config: &str) -> DetsFx {
    let p = fixture_dir().join(format!("{config}.dets.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load_raw(config: &str) -> BTreeMap<String, Tensor> {
    let p = fixture_dir().join(format!("{config}.raw.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_iter()
        .collect()
}

/// Decodes a COCO compressed RLE string (pycocotools `rleFrString`) into a row-major 0/1 mask.
/// Written here, independently of `crate::output::rle`, so the test does not trust the code it checks.
fn rle_decode(rle: &RleFx) -> Vec<u8> {
    let [h, w] = rle.size;
    let s = rle.counts.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < s.len() {
        let (mut x, mut k, mut more) = (0i64, 0u32, true);
        while more {
            let c = (s[p] as i64) - 48;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && (c & 0x10) != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    // Column-major runs, starting with zeros.
    let mut col_major = Vec::with_capacity(h * w);
    for (i, &c) in counts.iter().enumerate() {
        let c = usize::try_from(c).expect("negative run length");
        col_major.extend(std::iter::repeat_n((i % 2) as u8, c));
    }
    assert_eq!(col_major.len(), h * w, "RLE length");
    let mut out = vec![0u8; h * w];
    for x in 0..w {
        for y in 0..h {
            out[y * w + x] = col_major[x * h + y];
        }
    }
    out
}

fn mask_iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut uni) = (0usize, 0usize);
    for (&p, &q) in a.iter().zip(b) {
        let (p, q) = (p != 0, q != 0);
        inter += (p && q) as usize;
        uni += (p || q) as usize;
    }
    if uni == 0 {
        1.0
    } else {
        inter as f64 / uni as f64
    }
}

/// Priors per docs/model.md §4, in f64, for one flat prior index: independent of
/// `crate::engine::priors`.
fn prior_f64(cfg: &yolact_ros2::YolactConfig, mut idx: usize) -> [f64; 4] {
    let s = cfg.max_size;
    // Feature sizes of a ResNet/DarkNet at max_size: conv arithmetic (k3 s2 p1) from /8.
    let mut sizes = Vec::new();
    let mut f = s.div_ceil(2).div_ceil(2).div_ceil(2);
    for _ in 0..5 {
        sizes.push(f);
        f = f.div_ceil(2);
    }
    let a = cfg.priors_per_cell();
    for (lvl, &n) in sizes.iter().enumerate() {
        let cnt = n * n * a;
        if idx >= cnt {
            idx -= cnt;
            continue;
        }
        let cell = idx / a;
        let k = idx % a;
        let (y, x) = (cell / n, cell % n);
        let scales = &cfg.pred_scales[lvl];
        let scale = scales[k / cfg.aspect_ratios.len()];
        let ar = cfg.aspect_ratios[k % cfg.aspect_ratios.len()];
        let r = ar.sqrt();
        let w = scale * r / s as f64;
        let h = if cfg.use_square_anchors {
            w
        } else {
            scale / r / s as f64
        };
        return [
            (x as f64 + 0.5) / n as f64,
            (y as f64 + 0.5) / n as f64,
            w,
            h,
        ];
    }
    panic!("prior index out of range");
}

#[test]
fn fixture_detections_are_consistent() {
    for name in CONFIGS {
        let fx = load_dets(name);
        assert_eq!(fx.config, name);
        assert_eq!(fx.seed, yolact_ros2::weights::synth::DEFAULT_SEED);
        assert!(
            (5..=50).contains(&fx.detections.len()),
            "{name}: {} detections",
            fx.detections.len()
        );
        let mut prev = f32::INFINITY;
        for d in &fx.detections {
            assert!(
                d.score <= prev && d.score >= fx.score_threshold,
                "{name}: order/threshold"
            );
            prev = d.score;
            assert!(d.class_id < 80);
            let m = rle_decode(&d.mask);
            assert_eq!(d.mask.size, [fx.height, fx.width]);
            assert_eq!(
                m.iter().filter(|&&v| v != 0).count(),
                d.area,
                "{name}: mask area"
            );
            // docs/model.md §6.5.7: the int box is the float box truncated toward zero.
            for i in 0..4 {
                assert_eq!(d.box_int[i], d.bbox[i].trunc() as i64, "{name}: box_int");
            }
            assert!(d.bbox[0] >= 0.0 && d.bbox[2] <= fx.width as f32 && d.bbox[0] <= d.bbox[2]);
            match d.mask_iou {
                Some(iou) => {
                    let rescored = d.class_score * iou;
                    assert!(
                        (rescored - d.score).abs() <= 1e-6 * d.score.max(1.0),
                        "{name}: rescore"
                    );
                }
                None => assert_eq!(d.score, d.class_score),
            }
            // The crop (docs/model.md §6.5.3) bounds the mask to the box plus ~1 pixel of blur.
            for (i, &v) in m.iter().enumerate() {
                if v != 0 {
                    let (y, x) = ((i / fx.width) as f32, (i % fx.width) as f32);
                    let pad_x = 2.0 * fx.width as f32 / 138.0 + 1.0;
                    let pad_y = 2.0 * fx.height as f32 / 138.0 + 1.0;
                    assert!(
                        x + 1.0 >= d.bbox[0] - pad_x && x <= d.bbox[2] + pad_x,
                        "{name}: mask x"
                    );
                    assert!(
                        y + 1.0 >= d.bbox[1] - pad_y && y <= d.bbox[3] + pad_y,
                        "{name}: mask y"
                    );
                }
            }
        }
    }
}

#[test]
fn fixture_raw_rows_are_consistent() {
    for name in CONFIGS {
        let cfg = yolact_ros2::YolactConfig::by_name(name).unwrap();
        let fx = load_dets(name);
        let raw = load_raw(name);
        let rows: Vec<i64> = raw["rows"].to_vec1().unwrap();
        let conf: Vec<Vec<f32>> = raw["conf"].to_vec2().unwrap();
        let mask: Vec<Vec<f32>> = raw["mask"].to_vec2().unwrap();
        let priors: Vec<Vec<f32>> = raw["priors"].to_vec2().unwrap();
        let cells = if cfg.max_size == 700 { 10_321 } else { 6416 };
        assert_eq!(fx.num_priors, cfg.priors_per_cell() * cells);
        assert!(rows.len() > 300 && *rows.last().unwrap() < fx.num_priors as i64);
        for (i, &r) in rows.iter().enumerate() {
            let s: f64 = conf[i].iter().map(|&v| v as f64).sum();
            assert!(
                (s - 1.0).abs() < 1e-5,
                "{name}: softmax row {r} sums to {s}"
            );
            assert!(mask[i].iter().all(|v| v.abs() <= 1.0), "{name}: tanh range");
            let p = prior_f64(&cfg, r as usize);
            for c in 0..4 {
                assert_eq!(priors[i][c], p[c] as f32, "{name}: prior {r}[{c}]");
            }
        }
        let proto = &raw["proto"];
        assert_eq!(proto.dims()[2], 32);
        let pv: Vec<f32> = proto.flatten_all().unwrap().to_vec1().unwrap();
        assert!(pv.iter().all(|&v| v >= 0.0), "{name}: proto is ReLU'd");
    }
}

#[test]
fn rle_decoder_reads_pycocotools_strings() {
    // Both strings were produced by pycocotools.mask.encode for the masks built below.
    let rle = RleFx {
        size: [3, 2],
        counts: "123".into(),
    };
    assert_eq!(rle_decode(&rle), vec![0, 0, 1, 0, 1, 0]);
    let rle = RleFx {
        size: [40, 50],
        counts: ":2V10000000Ii0^O0000000000000000000000000000000000000000000000000000000000000000000000000007WOb0000000000F"
            .into(),
    };
    let (h, w) = (40, 50);
    let mut expect = vec![0u8; h * w];
    for y in 0..h {
        for x in 0..w {
            let in_rect = (3..30).contains(&y) && (5..44).contains(&x);
            expect[y * w + x] = (in_rect || (10..12).contains(&y)) as u8;
        }
    }
    assert_eq!(rle_decode(&rle), expect);
}

/// The actual parity tests (needs `pipeline::Engine` and `weights::save_torch`).
mod engine {
    use super::*;

    const RAW_TOL: f32 = 1e-4;
    const BOX_TOL: f32 = 0.5;
    const SCORE_TOL: f32 = 1e-3;
    const MASK_IOU_MIN: f64 = 0.99;
    const MATCH_MIN: f64 = 0.99;

    use yolact_ros2::engine::{Engine, InferOptions};
    use yolact_ros2::output::detection::Detections;
    use yolact_ros2::weights::CheckpointFormat;

    fn max_abs_diff(ours: &Tensor, reference: &Tensor) -> f32 {
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    struct Summary {
        matched: usize,
        ours: usize,
        reference: usize,
        worst_box: f32,
        worst_score: f32,
        worst_iou: f64,
    }

    /// Greedy one-to-one matching in reference order; the closest same-class candidate within
    /// the box and score tolerances whose mask IoU passes.
    fn match_detections(ours: &Detections, fx: &DetsFx) -> Summary {
        let mut used = vec![false; ours.items.len()];
        let mut s = Summary {
            matched: 0,
            ours: ours.items.len(),
            reference: fx.detections.len(),
            worst_box: 0.0,
            worst_score: 0.0,
            worst_iou: 1.0,
        };
        for r in &fx.detections {
            let rm = rle_decode(&r.mask);
            let mut best: Option<(usize, f32, f32, f64)> = None;
            for (j, d) in ours.items.iter().enumerate() {
                if used[j] || d.class_id != r.class_id {
                    continue;
                }
                let db = (0..4)
                    .map(|k| (d.bbox[k] - r.bbox[k]).abs())
                    .fold(0.0, f32::max);
                let ds = (d.score - r.score).abs();
                if db > BOX_TOL || ds > SCORE_TOL {
                    continue;
                }
                let iou = mask_iou(&d.mask.to_full(), &rm);
                if iou < MASK_IOU_MIN {
                    continue;
                }
                if best.is_none_or(|b| db < b.1) {
                    best = Some((j, db, ds, iou));
                }
            }
            match best {
                Some((j, db, ds, iou)) => {
                    used[j] = true;
                    s.matched += 1;
                    s.worst_box = s.worst_box.max(db);
                    s.worst_score = s.worst_score.max(ds);
                    s.worst_iou = s.worst_iou.min(iou);
                }
                None => eprintln!(
                    "unmatched reference detection: class {} score {:.5} box {:?}",
                    r.class_id, r.score, r.bbox
                ),
            }
        }
        s
    }

    fn run(config: &str, format: CheckpointFormat) {
        let cfg = yolact_ros2::YolactConfig::by_name(config).unwrap();
        let fx = load_dets(config);
        let raw_fx = load_raw(config);
        let sd = yolact_ros2::weights::synth::synth_state_dict(&cfg, fx.seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{config}_synth.pth"));
        match format {
            CheckpointFormat::SafeTensors => {
                yolact_ros2::weights::save_safetensors(&sd, &path).unwrap()
            }
            _ => yolact_ros2::weights::save_torch(&sd, &path, format).unwrap(),
        }
        let engine = Engine::load(&path, Some(config), &Device::Cpu).unwrap();
        let img = image::open(fixture_dir().join(&fx.image))
            .unwrap()
            .to_rgb8();

        let raw = engine.raw(&img).unwrap();
        let rows = &raw_fx["rows"];
        let mut worst = 0f32;
        for (name, ours) in [
            ("loc", &raw.loc),
            ("conf", &raw.conf),
            ("mask", &raw.mask),
            ("priors", &raw.priors),
        ] {
            assert_eq!(ours.dims()[0], fx.num_priors, "{config}: {name} rows");
            let picked = ours.index_select(rows, 0).unwrap();
            let d = max_abs_diff(&picked, &raw_fx[name]);
            eprintln!("{config} {format:?} raw {name}: max |diff| {d:.3e}");
            worst = worst.max(d);
        }
        let proto = raw
            .proto
            .index_select(&raw_fx["proto_rows"], 0)
            .unwrap()
            .index_select(&raw_fx["proto_cols"], 1)
            .unwrap();
        let d = max_abs_diff(&proto, &raw_fx["proto"]);
        eprintln!("{config} {format:?} raw proto: max |diff| {d:.3e}");
        worst = worst.max(d);
        assert!(
            worst <= RAW_TOL,
            "{config}: raw outputs differ by {worst:e}"
        );

        let opts = InferOptions {
            score_threshold: fx.score_threshold,
            top_k: fx.top_k,
            ..Default::default()
        };
        let dets = engine.infer(&img, &opts).unwrap();
        assert_eq!((dets.width, dets.height), (fx.width, fx.height));
        let s = match_detections(&dets, &fx);
        let denom = s.ours.max(s.reference).max(1);
        let frac = s.matched as f64 / denom as f64;
        eprintln!(
            "{config} {format:?}: matched {}/{} (ours {}), worst box {:.3e} px, worst score {:.3e}, \
             worst mask IoU {:.5}",
            s.matched, s.reference, s.ours, s.worst_box, s.worst_score, s.worst_iou
        );
        assert!(
            frac >= MATCH_MIN,
            "{config}: only {:.1}% matched",
            100.0 * frac
        );
    }

    #[test]
    fn yolact_resnet50_legacy() {
        run("yolact_resnet50", CheckpointFormat::TorchLegacy);
    }

    #[test]
    fn yolact_resnet50_zip() {
        run("yolact_resnet50", CheckpointFormat::TorchZip);
    }

    #[test]
    fn yolact_plus_resnet50_legacy() {
        run("yolact_plus_resnet50", CheckpointFormat::TorchLegacy);
    }

    #[test]
    fn yolact_plus_resnet50_zip() {
        run("yolact_plus_resnet50", CheckpointFormat::TorchZip);
    }

    #[test]
    fn yolact_darknet53_safetensors() {
        run("yolact_darknet53", CheckpointFormat::SafeTensors);
    }

    #[test]
    fn yolact_base_safetensors() {
        run("yolact_base", CheckpointFormat::SafeTensors);
    }

    #[test]
    fn yolact_im700_safetensors() {
        run("yolact_im700", CheckpointFormat::SafeTensors);
    }

    #[test]
    fn yolact_plus_base_safetensors() {
        run("yolact_plus_base", CheckpointFormat::SafeTensors);
    }
}
