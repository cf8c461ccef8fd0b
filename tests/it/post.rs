//! Detection post-processing against independent references: Python/NumPy/pycocotools fixtures
//! (tools/make_post_fixtures.py) and naive O(n^2) NMS written here.

use candle_core::{Device, Tensor};
use serde_json::Value;
use yolact_ros2::engine::cpu::Cpu;
use yolact_ros2::engine::priors::{make_priors, priors_tensor};
use yolact_ros2::output::detection::Mask;
use yolact_ros2::output::rle;
use yolact_ros2::post::decode::decode_boxes;
use yolact_ros2::post::fast_nms::{detect, Dets, NmsKind, NmsOptions};
use yolact_ros2::post::masks::{crop_masks, postprocess, MaskIouFn, PostprocessOptions};
use yolact_ros2::YolactConfig;

/// P3..P7 sizes for the config's square input (the network's geometry).
fn conv_sizes(cfg: &YolactConfig) -> [(usize, usize); 5] {
    yolact_ros2::model::conv_sizes(cfg, cfg.max_size, cfg.max_size)
}

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/post/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).expect(&p)).expect("json")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x {
            Value::Array(_) => f32s(x),
            _ => vec![x.as_f64().unwrap() as f32],
        })
        .collect()
}

/// Tiny deterministic generator so the tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

// ------------------------------------------------------------------------------------------ priors

#[test]
fn conv_sizes_follow_the_spec_table() {
    let b = YolactConfig::by_name("yolact_base").unwrap();
    let im = YolactConfig::by_name("yolact_im700").unwrap();
    let s: Vec<usize> = conv_sizes(&b).iter().map(|s| s.0).collect();
    assert_eq!(s, vec![69, 35, 18, 9, 5]);
    let s: Vec<usize> = conv_sizes(&im).iter().map(|s| s.1).collect();
    assert_eq!(s, vec![88, 44, 22, 11, 6]);
}

#[test]
fn priors_match_float64_reference() {
    let fx = fixture("priors");
    for (name, want) in fx.as_object().unwrap() {
        let cfg = YolactConfig::by_name(name).unwrap();
        let pri = make_priors(&cfg, &conv_sizes(&cfg));
        assert_eq!(pri.len() as u64, want["count"].as_u64().unwrap(), "{name}");
        for s in want["samples"].as_array().unwrap() {
            let v = f32s(s);
            let i = v[0] as usize;
            assert_eq!(pri[i], [v[1], v[2], v[3], v[4]], "{name} prior {i}");
        }
        if cfg.use_square_anchors {
            assert!(
                pri.iter().all(|p| p[2] == p[3]),
                "{name}: v1 anchors are square"
            );
        }
        let t = priors_tensor(&cfg, &conv_sizes(&cfg), &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[pri.len(), 4]);
    }
    assert_eq!(
        make_priors(
            &YolactConfig::by_name("yolact_plus_resnet50").unwrap(),
            &conv_sizes(&YolactConfig::by_name("yolact_plus_resnet50").unwrap())
        )
        .len(),
        57744
    );
}

#[test]
fn first_plus_priors_listed_in_the_spec() {
    let cfg = YolactConfig::by_name("yolact_plus_base").unwrap();
    let p = make_priors(&cfg, &conv_sizes(&cfg));
    let want = [
        [0.0072464, 0.0072464, 0.0436364, 0.0436364],
        [0.0072464, 0.0072464, 0.0308556, 0.0617111],
        [0.0072464, 0.0072464, 0.0617111, 0.0308556],
    ];
    for (got, want) in p.iter().zip(want) {
        for k in 0..4 {
            assert!((got[k] - want[k]).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
    assert!((p[3][2] - 0.0549784).abs() < 1e-6 && (p[3][3] - 0.0549784).abs() < 1e-6);
}

// ------------------------------------------------------------------------------------------ decode

#[test]
fn decode_matches_numpy() {
    let fx = fixture("decode");
    let n = fx["loc"].as_array().unwrap().len();
    let t = |k: &str| Tensor::from_vec(f32s(&fx[k]), (n, 4), &Device::Cpu).unwrap();
    let got = decode_boxes(&t("loc"), &t("priors"))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = f32s(&fx["boxes"]);
    let mut exact = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // exp may differ by an ulp between libms; rows with zero size regressions have exp(0) = 1.
        if i / 4 >= n / 2 {
            assert_eq!(g, w, "row {}", i / 4);
            exact += 1;
        } else {
            assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
    assert_eq!(exact, 2 * n);
    let bad = Tensor::zeros((n, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(decode_boxes(&bad, &t("priors")).is_err());
}

// ------------------------------------------------------------------------------------------ NMS

fn iou64(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let a = a.map(|v| v as f64);
    let b = b.map(|v| v as f64);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = iw * ih;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

/// Selection sort: descending score, earlier index first on ties.
fn naive_order(s: &[f32]) -> Vec<usize> {
    let mut left: Vec<usize> = (0..s.len()).collect();
    let mut out = vec![];
    while !left.is_empty() {
        let mut best = 0;
        for k in 1..left.len() {
            if s[left[k]] > s[left[best]] {
                best = k;
            }
        }
        out.push(left.remove(best));
    }
    out
}

/// (prior, class, score) triples, the reference's way.
fn naive_nms(
    boxes: &[[f32; 4]],
    conf: &[Vec<f32>],
    kind: NmsKind,
    max_size: f32,
) -> Vec<(usize, u32, f32)> {
    let nc = conf[0].len() - 1;
    let cands: Vec<usize> = (0..conf.len())
        .filter(|&p| conf[p][1..].iter().any(|&s| s > 0.05))
        .collect();
    let mut kept: Vec<(usize, u32, f32)> = vec![];
    match kind {
        NmsKind::Fast => {
            for c in 0..nc {
                let s: Vec<f32> = cands.iter().map(|&p| conf[p][c + 1]).collect();
                let ord: Vec<usize> = naive_order(&s).into_iter().take(200).collect();
                for (j, &oj) in ord.iter().enumerate() {
                    let sup = ord[..j]
                        .iter()
                        .any(|&oi| iou64(&boxes[cands[oi]], &boxes[cands[oj]]) > 0.5);
                    if !sup {
                        kept.push((cands[oj], c as u32, s[oj]));
                    }
                }
            }
        }
        NmsKind::FastCrossClass => {
            let (mut best, mut cls) = (vec![], vec![]);
            for &p in &cands {
                let mut b = 0;
                for c in 1..nc {
                    if conf[p][c + 1] > conf[p][b + 1] {
                        b = c;
                    }
                }
                best.push(conf[p][b + 1]);
                cls.push(b as u32);
            }
            let ord: Vec<usize> = naive_order(&best).into_iter().take(200).collect();
            for (j, &oj) in ord.iter().enumerate() {
                if !ord[..j]
                    .iter()
                    .any(|&oi| iou64(&boxes[cands[oi]], &boxes[cands[oj]]) > 0.5)
                {
                    kept.push((cands[oj], cls[oj], best[oj]));
                }
            }
            return kept;
        }
        NmsKind::Traditional => {
            for c in 0..nc {
                let idx: Vec<usize> = cands
                    .iter()
                    .copied()
                    .filter(|&p| conf[p][c + 1] > 0.05)
                    .collect();
                let s: Vec<f32> = idx.iter().map(|&p| conf[p][c + 1]).collect();
                let px = |p: usize| boxes[p].map(|v| v as f64 * max_size as f64);
                let mut sup = vec![false; idx.len()];
                let ord = naive_order(&s);
                for (a, &i) in ord.iter().enumerate() {
                    if sup[i] {
                        continue;
                    }
                    for &j in &ord[a + 1..] {
                        let (bi, bj) = (px(idx[i]), px(idx[j]));
                        let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
                        let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
                        let ar = |b: [f64; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
                        if w * h / (ar(bi) + ar(bj) - w * h) >= 0.5 {
                            sup[j] = true;
                        }
                    }
                }
                for i in 0..idx.len() {
                    if !sup[i] {
                        kept.push((idx[i], c as u32, s[i]));
                    }
                }
            }
        }
    }
    let s: Vec<f32> = kept.iter().map(|k| k.2).collect();
    naive_order(&s)
        .into_iter()
        .take(100)
        .map(|i| kept[i])
        .collect()
}

struct Case {
    boxes: Vec<[f32; 4]>,
    conf: Vec<Vec<f32>>,
}

impl Case {
    fn tensors(&self) -> (Tensor, Tensor, Tensor) {
        let p = self.boxes.len();
        let c1 = self.conf[0].len();
        let b = Tensor::from_vec(self.boxes.concat(), (p, 4), &Device::Cpu).unwrap();
        let c = Tensor::from_vec(self.conf.concat(), (p, c1), &Device::Cpu).unwrap();
        // Coefficient row i holds i, so the gathered rows identify their priors.
        let m: Vec<f32> = (0..p).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let m = Tensor::from_vec(m, (p, 2), &Device::Cpu).unwrap();
        (b, c, m)
    }

    fn run(&self, opts: &NmsOptions) -> Vec<(usize, u32, f32)> {
        let (b, c, m) = self.tensors();
        let d = detect(&b, &c, &m, opts).unwrap();
        let rows = d.coefs.to_vec2::<f32>().unwrap();
        let boxes = d.boxes.to_vec2::<f32>().unwrap();
        assert_eq!(rows.len(), d.len());
        (0..d.len())
            .map(|i| {
                let p = rows[i][0] as usize;
                let want = if opts.kind == NmsKind::Traditional {
                    let s = opts.max_size as f32;
                    self.boxes[p].map(|v| v * s / s)
                } else {
                    self.boxes[p]
                };
                assert_eq!(boxes[i], want.to_vec(), "box of prior {p}");
                (p, d.classes[i], d.scores[i])
            })
            .collect()
    }
}

fn random_case(rng: &mut Rng, p: usize, nc: usize, peak: f64) -> Case {
    let mut boxes = vec![];
    let centres: Vec<(f64, f64)> = (0..6).map(|_| (rng.next(), rng.next())).collect();
    for _ in 0..p {
        let (cx, cy) = centres[(rng.next() * 6.0) as usize % 6];
        let (cx, cy) = (cx + 0.05 * rng.normal(), cy + 0.05 * rng.normal());
        let (w, h) = (0.05 + 0.2 * rng.next(), 0.05 + 0.2 * rng.next());
        boxes.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0].map(|v| v as f32));
    }
    let conf = (0..p)
        .map(|_| {
            let l: Vec<f64> = (0..=nc).map(|_| peak * rng.normal()).collect();
            let m = l.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
            l.iter().map(|v| ((v - m).exp() / z) as f32).collect()
        })
        .collect();
    Case { boxes, conf }
}

#[test]
fn nms_matches_naive_reference_on_random_inputs() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for (p, nc, peak) in [
        (50, 5, 1.5),
        (400, 4, 1.0),
        (700, 3, 0.3),
        (300, 80, 2.5),
        (60, 80, 0.5),
    ] {
        let case = random_case(&mut rng, p, nc, peak);
        for kind in [NmsKind::Fast, NmsKind::FastCrossClass, NmsKind::Traditional] {
            let opts = NmsOptions {
                kind,
                ..NmsOptions::default()
            };
            let got = case.run(&opts);
            let want = naive_nms(&case.boxes, &case.conf, kind, 550.0);
            assert_eq!(got, want, "P={p} C={nc} {kind:?}");
            assert!(!got.is_empty());
            if kind != NmsKind::FastCrossClass {
                assert!(got.len() <= 100);
            }
        }
    }
}

fn one_class(boxes: Vec<[f32; 4]>, scores: &[f32]) -> Case {
    let conf = scores.iter().map(|&s| vec![1.0 - s, s]).collect();
    Case { boxes, conf }
}

#[test]
fn fast_nms_lets_suppressed_boxes_suppress() {
    // A > B > C: IoU(A,B) = 0.54 suppresses B; C overlaps only B (0.54) and A by 0.25.
    let r = |x: f32| x / 100.0;
    let case = one_class(
        vec![
            [r(0.0), 0.0, r(10.0), r(10.0)],
            [r(3.0), 0.0, r(13.0), r(10.0)],
            [r(6.0), 0.0, r(16.0), r(10.0)],
        ],
        &[0.9, 0.8, 0.7],
    );
    let fast = case.run(&NmsOptions::default());
    assert_eq!(fast.iter().map(|k| k.0).collect::<Vec<_>>(), vec![0]);
    let trad = case.run(&NmsOptions {
        kind: NmsKind::Traditional,
        ..NmsOptions::default()
    });
    assert_eq!(trad.iter().map(|k| k.0).collect::<Vec<_>>(), vec![0, 2]);
}

#[test]
fn iou_of_exactly_one_half() {
    // Fast NMS keeps IoU <= 0.5; traditional suppresses IoU >= 0.5 (+1 px, boxes x 512).
    let fast = one_class(
        vec![[0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.25, 0.25]],
        &[0.9, 0.8],
    );
    assert_eq!(fast.run(&NmsOptions::default()).len(), 2);
    let px = |v: f32| v / 512.0;
    let trad = one_class(
        vec![[0.0, 0.0, px(1.0), 0.0], [0.0, 0.0, 0.0, 0.0]],
        &[0.9, 0.8],
    );
    let opts = NmsOptions {
        kind: NmsKind::Traditional,
        max_size: 512,
        ..NmsOptions::default()
    };
    assert_eq!(trad.run(&opts).len(), 1);
}

#[test]
fn ties_keep_index_order_and_duplicates_suppress_later() {
    let b = [0.1, 0.1, 0.2, 0.2];
    let far = [0.6, 0.6, 0.7, 0.7];
    let case = one_class(vec![far, b, b, far], &[0.5, 0.5, 0.5, 0.5]);
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass, NmsKind::Traditional] {
        let got = case.run(&NmsOptions {
            kind,
            ..NmsOptions::default()
        });
        assert_eq!(
            got.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![0, 1],
            "{kind:?}"
        );
    }
}

#[test]
fn no_candidates_and_strict_conf_threshold() {
    // 0.05 exactly is not a candidate.
    let case = one_class(vec![[0.0, 0.0, 0.1, 0.1]; 3], &[0.05, 0.01, 0.0]);
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass, NmsKind::Traditional] {
        let (b, c, m) = case.tensors();
        let d = detect(
            &b,
            &c,
            &m,
            &NmsOptions {
                kind,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(d.is_empty());
        assert_eq!(d.boxes.dims(), &[0, 4]);
        assert_eq!(d.coefs.dims(), &[0, 2]);
    }
}

#[test]
fn fast_nms_has_no_second_threshold_and_caps_at_100() {
    // 150 disjoint boxes in class 1 (0.9) and the same priors' class 2 (0.001 < 0.05) survive.
    let boxes: Vec<[f32; 4]> = (0..150)
        .map(|i| {
            let x = (i % 15) as f32 / 15.0;
            let y = (i / 15) as f32 / 10.0;
            [x, y, x + 0.05, y + 0.05]
        })
        .collect();
    let conf: Vec<Vec<f32>> = (0..150)
        .map(|i| vec![0.099 - i as f32 * 1e-4, 0.9 + i as f32 * 1e-4, 0.001])
        .collect();
    let case = Case {
        boxes: boxes.clone(),
        conf: conf.clone(),
    };
    let got = case.run(&NmsOptions::default());
    assert_eq!(got.len(), 100);
    assert!(got.windows(2).all(|w| w[0].2 >= w[1].2));
    assert_eq!(got[0].0, 149);
    let cc = case.run(&NmsOptions {
        kind: NmsKind::FastCrossClass,
        ..Default::default()
    });
    assert_eq!(cc.len(), 150, "cross-class has no 100 cap");
    // With max_num_detections large the low class-2 entries appear too.
    let all = case.run(&NmsOptions {
        max_num_detections: 1000,
        ..Default::default()
    });
    assert_eq!(all.len(), 300);
    assert!(all[150..].iter().all(|k| k.1 == 1 && k.2 == 0.001));
}

#[test]
fn per_class_top_k_limits_fast_nms_only() {
    // 300 disjoint boxes of one class: nothing overlaps, so only the top-200 cut removes any.
    let boxes: Vec<[f32; 4]> = (0..300)
        .map(|i| {
            let x = (i % 20) as f32 / 20.0;
            let y = (i / 20) as f32 / 15.0;
            [x, y, x + 0.01, y + 0.01]
        })
        .collect();
    let scores: Vec<f32> = (0..300).map(|i| 0.1 + (i % 7) as f32 * 0.1).collect();
    let case = one_class(boxes, &scores);
    let big = |kind| NmsOptions {
        kind,
        max_num_detections: 1000,
        ..Default::default()
    };
    let fast = case.run(&big(NmsKind::Fast));
    assert_eq!(fast.len(), 200);
    assert_eq!(case.run(&big(NmsKind::FastCrossClass)).len(), 200);
    assert_eq!(case.run(&big(NmsKind::Traditional)).len(), 300);
    // The kept 200 are the best scores, ties broken by prior index.
    let want: Vec<usize> = naive_order(&scores).into_iter().take(200).collect();
    assert_eq!(fast.iter().map(|k| k.0).collect::<Vec<_>>(), want);
}

#[test]
fn display_cut_is_inclusive_after_top_k() {
    use yolact_ros2::post::masks::rank_and_cut;
    let s = [0.2, 0.5, 0.3, 0.3, 0.1];
    assert_eq!(rank_and_cut(&s, 10, 0.3), vec![1, 2, 3]);
    assert_eq!(rank_and_cut(&s, 2, 0.0), vec![1, 2]);
    assert_eq!(rank_and_cut(&s, 10, 0.6), Vec::<usize>::new());
}

#[test]
fn nan_confidences_are_an_error_not_a_panic() {
    let mut case = one_class(vec![[0.0, 0.0, 0.1, 0.1]; 2], &[0.9, 0.8]);
    case.conf[1][1] = f32::NAN;
    let (b, c, m) = case.tensors();
    assert!(detect(&b, &c, &m, &NmsOptions::default()).is_err());
    // NaN boxes do not panic either.
    let mut case = one_class(vec![[0.0, 0.0, 0.1, 0.1]; 2], &[0.9, 0.8]);
    case.boxes[0] = [f32::NAN; 4];
    let (b, c, m) = case.tensors();
    assert!(detect(&b, &c, &m, &NmsOptions::default()).is_ok());
}

// ------------------------------------------------------------------------------------------ crop

#[test]
fn crop_matches_direct_loop() {
    let mut rng = Rng(77);
    let (n, hp, wp) = (9, 17, 23);
    let masks: Vec<f32> = (0..n * hp * wp).map(|_| rng.next() as f32 + 0.01).collect();
    let mut boxes: Vec<[f32; 4]> = (0..n)
        .map(|_| [0; 4].map(|_| (rng.next() * 1.4 - 0.2) as f32))
        .collect();
    boxes[0] = [0.5, 0.5, 0.5, 0.5]; // degenerate: a 2x2 window from the padding
    boxes[1] = [3.0 / 23.0, 2.0 / 17.0, 7.0 / 23.0, 9.0 / 17.0];
    let mt = Tensor::from_vec(masks.clone(), (n, hp, wp), &Device::Cpu).unwrap();
    let bt = Tensor::from_vec(boxes.concat(), (n, 4), &Device::Cpu).unwrap();
    let got = crop_masks(&mt, &bt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut kept = 0;
    for (i, b) in boxes.iter().enumerate() {
        for r in 0..hp {
            for q in 0..wp {
                let (xa, xb) = (b[0] * wp as f32, b[2] * wp as f32);
                let (ya, yb) = (b[1] * hp as f32, b[3] * hp as f32);
                let inside = q as f32 >= (xa.min(xb) - 1.0).max(0.0)
                    && (q as f32) < (xa.max(xb) + 1.0).min(wp as f32)
                    && r as f32 >= (ya.min(yb) - 1.0).max(0.0)
                    && (r as f32) < (ya.max(yb) + 1.0).min(hp as f32);
                let k = (i * hp + r) * wp + q;
                let want = if inside { masks[k] } else { 0.0 };
                kept += inside as usize;
                assert_eq!(got[k], want, "mask {i} r {r} q {q}");
            }
        }
    }
    assert!(kept > 0 && kept < n * hp * wp);
    // Box 1 covers columns 3..7 and rows 2..9, padded by 1 on each side: 6 x 9 pixels.
    let nz = got[hp * wp..2 * hp * wp]
        .iter()
        .filter(|&&v| v != 0.0)
        .count();
    assert_eq!(nz, 6 * 9);
}

// ------------------------------------------------------------------------------------------ RLE

fn mask_of(e: &Value) -> Mask {
    let (h, w) = (
        e["h"].as_u64().unwrap() as usize,
        e["w"].as_u64().unwrap() as usize,
    );
    let data = e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_str().unwrap().bytes().map(|b| (b == b'1') as u8))
        .collect();
    Mask::full(h, w, data)
}

#[test]
fn rle_matches_pycocotools() {
    let fx = fixture("rle");
    let all: Vec<&Value> = fx["masks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(fx["group"].as_array().unwrap())
        .collect();
    for e in &all {
        let m = mask_of(e);
        let r = rle::encode(&m);
        let want = e["counts"].as_str().unwrap();
        assert_eq!(rle::to_string(&r.counts), want);
        assert_eq!(rle::from_string(want).unwrap(), r.counts);
        assert_eq!(rle::area(&r), e["area"].as_u64().unwrap());
        assert_eq!(r.size, [m.height, m.width]);
        assert_eq!(rle::decode(&r).unwrap(), m);
    }
    let g: Vec<rle::Rle> = fx["group"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| rle::encode(&mask_of(e)))
        .collect();
    for (key, crowd) in [("iou", false), ("iou_crowd", true)] {
        let want = fx[key].as_array().unwrap();
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.as_array().unwrap().iter().enumerate() {
                let got = rle::iou(&g[i], &g[j], crowd).unwrap();
                assert!((got - w.as_f64().unwrap()).abs() < 1e-12, "{key} {i} {j}");
            }
        }
    }
    // A continuation bit on the last byte, and a byte outside pycocotools' alphabet.
    assert!(rle::from_string("0a").is_err());
    assert!(rle::from_string("1\x7f").is_err());
    assert!(rle::decode(&rle::Rle {
        size: [2, 2],
        counts: vec![1, 2]
    })
    .is_err());
}

#[test]
fn rle_cropped_window() {
    let fx = fixture("rle");
    let m = mask_of(&fx["group"][0]);
    let (x0, y0, cw, ch) = (5, 7, 20, 13);
    let sub = Mask::full(
        ch,
        cw,
        (0..ch)
            .flat_map(|y| (0..cw).map(move |x| (y, x)))
            .map(|(y, x)| u8::from(m.get(x0 + x, y0 + y)))
            .collect(),
    );
    assert_eq!(rle::encode_cropped(&m, x0, y0, cw, ch), rle::encode(&sub));
}

// ------------------------------------------------------------------------------------------ postprocess

#[test]
fn postprocess_matches_torch_reference() {
    let fx = fixture("postprocess");
    let u = |k: &str| fx[k].as_u64().unwrap() as usize;
    let (w, h, hp, wp, d) = (u("img_w"), u("img_h"), u("hp"), u("wp"), u("d"));
    let dev = Device::Cpu;
    let proto = Tensor::from_vec(f32s(&fx["proto"]), (hp, wp, d), &dev).unwrap();
    let n = fx["scores"].as_array().unwrap().len();
    let dets = Dets {
        boxes: Tensor::from_vec(f32s(&fx["boxes"]), (n, 4), &dev).unwrap(),
        coefs: Tensor::from_vec(f32s(&fx["coefs"]), (n, d), &dev).unwrap(),
        classes: f32s(&fx["classes"]).iter().map(|&c| c as u32).collect(),
        scores: f32s(&fx["scores"]),
    };
    let scale: Vec<f32> = (0..80).map(|c| (1 + c) as f32 / 80.0).collect();
    let scale = Tensor::from_vec(scale, (1, 80), &dev).unwrap();
    let head = move |m: &Tensor| -> candle_core::Result<Tensor> {
        m.flatten_from(1)?.max_keepdim(1)?.broadcast_mul(&scale)
    };
    let mut worst = 0usize;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let opts = PostprocessOptions {
            score_threshold: case["score_threshold"].as_f64().unwrap() as f32,
            top_k: case["top_k"].as_u64().unwrap() as usize,
            crop: case["crop"].as_bool().unwrap(),
        };
        let f: Option<MaskIouFn> = if case["maskiou"].as_bool().unwrap() {
            Some(&head)
        } else {
            None
        };
        let got = postprocess(&Cpu, &dets, &proto, f, w, h, &opts).unwrap();
        let want = case["expected"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(!got.is_empty(), "{name}");
        for (g, e) in got.iter().zip(want) {
            assert_eq!(g.class_id as u64, e["class"].as_u64().unwrap(), "{name}");
            assert_eq!(g.class_score, e["class_score"].as_f64().unwrap() as f32);
            let ws = e["score"].as_f64().unwrap() as f32;
            assert!((g.score - ws).abs() <= 1e-6 * ws.max(1.0), "{name} score");
            match (g.mask_iou, e["mask_iou"].as_f64()) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!((a - b as f32).abs() < 1e-6, "{name} iou"),
                other => panic!("{name}: mask_iou {other:?}"),
            }
            for (a, b) in g.bbox.iter().zip(f32s(&e["bbox"])) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{name} bbox");
            }
            let r = rle::Rle {
                size: [h, w],
                counts: rle::from_string(e["counts"].as_str().unwrap()).unwrap(),
            };
            let wm = rle::decode(&r).unwrap();
            let diff = g
                .mask
                .to_full()
                .iter()
                .zip(&wm.to_full())
                .filter(|(a, b)| a != b)
                .count();
            worst = worst.max(diff);
            // Only pixels whose upsampled value sits within rounding of 0.5 may flip.
            assert!(diff <= 2, "{name}: {diff} mask pixels differ");
            assert_eq!((g.mask.height, g.mask.width), (h, w));
        }
    }
    eprintln!("postprocess: worst mask pixel difference {worst}");
}

#[test]
fn postprocess_edge_cases() {
    let dev = Device::Cpu;
    let proto = Tensor::ones((6, 5, 4), candle_core::DType::F32, &dev).unwrap();
    let empty = Dets::empty(4).unwrap();
    let opts = PostprocessOptions::default();
    assert!(postprocess(&Cpu, &empty, &proto, None, 10, 8, &opts)
        .unwrap()
        .is_empty());
    let dets = Dets {
        boxes: Tensor::from_vec(vec![0.1f32, 0.2, 0.6, 0.9], (1, 4), &dev).unwrap(),
        coefs: Tensor::ones((1, 4), candle_core::DType::F32, &dev).unwrap(),
        classes: vec![79],
        scores: vec![0.7],
    };
    // A mask-IoU head with too few classes, or the wrong row count, is an error, not a panic.
    let narrow = |m: &Tensor| Tensor::ones((m.dim(0)?, 10), candle_core::DType::F32, &dev);
    assert!(postprocess(&Cpu, &dets, &proto, Some(&narrow), 10, 8, &opts).is_err());
    let rows = |_: &Tensor| Tensor::ones((3, 80), candle_core::DType::F32, &dev);
    assert!(postprocess(&Cpu, &dets, &proto, Some(&rows), 10, 8, &opts).is_err());
    // Mismatched prototype depth and a zero-sized image are errors too.
    let proto3 = Tensor::ones((6, 5, 3), candle_core::DType::F32, &dev).unwrap();
    assert!(postprocess(&Cpu, &dets, &proto3, None, 10, 8, &opts).is_err());
    assert!(postprocess(&Cpu, &dets, &proto, None, 0, 8, &opts).is_err());
    // A score exactly at the threshold is dropped before masks (strict >).
    let at = PostprocessOptions {
        score_threshold: 0.7,
        ..opts
    };
    assert!(postprocess(&Cpu, &dets, &proto, None, 10, 8, &at)
        .unwrap()
        .is_empty());
    let out = postprocess(&Cpu, &dets, &proto, None, 10, 8, &opts).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bbox, [1.0, 1.6, 6.0, 7.2]);
    assert_eq!(out[0].class_id, 79);
}
