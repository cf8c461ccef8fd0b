//! The training loss (`train::loss::multibox_loss`) against the reference's `MultiBoxLoss`
//! (tests/fixtures/train, made by tools/make_train_fixtures.py).
//!
//! Level (a): the reference's own train-mode network outputs go into our loss; every term must be
//! within 1e-4 relative, and the gradients of the total w.r.t. loc, conf, the coefficients (before
//! tanh), proto and segm (and, for YOLACT++, the mask-IoU net's parameters) within 1e-3
//! (|ours - ref| / |ref|).

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use yolact_ros2::config::{LossConfig, YolactConfig};
use yolact_ros2::engine::priors::make_priors;
use yolact_ros2::model::conv_sizes;
use yolact_ros2::model::{Logits, Yolact};
use yolact_ros2::train::loss::multibox_loss;
use yolact_ros2::weights::{synth, WeightStore};

use crate::support::train::{ground_truth, LossFixture, StepFixture, SEED};

const TERM_RTOL: f32 = 1e-4;
const GRAD_RTOL: f64 = 1e-3;
/// Fewer sampled elements than this say nothing about their tensor alone (see `train_step_parity`).
const MIN_SAMPLE: usize = 8;

fn rel_diff(ours: &Tensor, theirs: &Tensor) -> f64 {
    let a = ours.to_dtype(DType::F64).unwrap();
    let b = theirs.to_dtype(DType::F64).unwrap();
    let d = a
        .sub(&b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let n = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(n > 0.0, "reference gradient is zero");
    (d / n).sqrt()
}

fn loss_parity(name: &str) {
    let fx = LossFixture::load(name);
    let f = &fx.file;
    let dev = Device::Cpu;
    let mut cfg = YolactConfig::by_name(name).unwrap();
    let weights = synth::synth_state_dict(&cfg, SEED).unwrap();
    let store = WeightStore::from_state_dict(weights, &cfg, &dev).unwrap();
    let model = Yolact::load_train(store.vb(), &cfg).unwrap();

    // Our priors at the fixture's size must be the reference's, bit for bit.
    cfg.max_size = fx.max_size();
    let ours: Vec<f32> = make_priors(&cfg, &conv_sizes(&cfg, cfg.max_size, cfg.max_size))
        .into_iter()
        .flatten()
        .collect();
    let theirs = f
        .get("priors")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert!(
        ours.iter()
            .zip(&theirs)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "priors differ"
    );
    let priors = f.get("priors").clone();

    let var = |k: &str| Var::from_tensor(f.get(k)).unwrap();
    let (loc, conf, coef, proto, segm) = (
        var("loc"),
        var("conf"),
        var("coef"),
        var("proto"),
        var("segm"),
    );
    let out = Logits {
        loc: loc.as_tensor().clone(),
        conf: conf.as_tensor().clone(),
        coef: coef.as_tensor().clone(),
        proto: proto.as_tensor().clone(),
        segm: Some(segm.as_tensor().clone()),
    };
    let truths = ground_truth(&dev);
    let lcfg = LossConfig::for_config(&cfg);
    let positives: Vec<usize> = serde_json::from_value(f.meta_json("positives")).unwrap();
    // No image reaches masks_to_train, so no random subsample is drawn.
    assert!(positives.iter().all(|&p| p <= lcfg.masks_to_train));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let losses = multibox_loss(&model, &out, &priors, &truths, &lcfg, &mut rng).unwrap();
    assert_eq!(losses.num_pos, positives.iter().sum::<usize>());

    let terms = losses.terms().unwrap();
    let names: Vec<&str> = terms.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, fx.terms(), "{name}: loss terms");
    let total = losses.total.to_scalar::<f32>().unwrap();
    let mut report = Vec::new();
    for (k, v) in terms.iter().copied().chain([("total", total)]) {
        let want = f.scalar(&format!("loss_{k}"));
        let rel = (v - want).abs() / want.abs();
        report.push(format!("{k}: {v} vs {want} (rel {rel:.2e})"));
        assert!(rel <= TERM_RTOL, "{name}: {}", report.join(", "));
    }
    eprintln!("{name}: {}", report.join(", "));

    let grads = losses.total.backward().unwrap();
    for (k, v) in [
        ("loc", &loc),
        ("conf", &conf),
        ("coef", &coef),
        ("proto", &proto),
        ("segm", &segm),
    ] {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
        let rel = rel_diff(g, &fx.grad(k));
        eprintln!("{name}: d total / d {k}: rel {rel:.2e}");
        assert!(
            rel <= GRAD_RTOL,
            "{name}: gradient w.r.t. {k} off by {rel:.2e}"
        );
    }
    if cfg.use_maskiou {
        let params = store.trainable(true).unwrap();
        let mut n = 0;
        for (key, var) in params.iter().filter(|(k, _)| k.starts_with("maskiou_net.")) {
            let want = f.get(&format!("grad_param/{key}"));
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {key}"));
            let rel = rel_diff(g, want);
            eprintln!("{name}: d total / d {key}: rel {rel:.2e}");
            assert!(
                rel <= GRAD_RTOL,
                "{name}: gradient of {key} off by {rel:.2e}"
            );
            n += 1;
        }
        assert_eq!(n, 12, "the mask-IoU net has six convs");
    }
}

#[test]
fn yolact_resnet50_loss_matches_the_reference() {
    loss_parity("yolact_resnet50");
}

#[test]
fn yolact_plus_resnet50_loss_matches_the_reference() {
    loss_parity("yolact_plus_resnet50");
}

/// Level (b)'s fixtures, checked for what they say about the parameters: the keys that received a gradient in the
/// reference's step (frozen BN) are exactly the ones our store trains, 89 and 140 as measured for
/// the reference, and each sample has the length its stride gives for the parameter's shape.
#[test]
fn step_fixture_covers_exactly_our_trainable_parameters() {
    for (name, count) in [("yolact_resnet50", 89), ("yolact_plus_resnet50", 140)] {
        let fx = StepFixture::load(name);
        let cfg = YolactConfig::by_name(name).unwrap();
        let dev = Device::Cpu;
        let store = WeightStore::from_state_dict(train_weights(&cfg), &cfg, &dev).unwrap();
        let ours = store.trainable(true).unwrap();
        let keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, fx.keys(), "{name}");
        assert_eq!(keys.len(), count, "{name}");
        let s = fx.grad_stride();
        for (k, v) in &ours {
            let sample = fx.sample(k);
            assert_eq!(sample.len(), v.elem_count().div_ceil(s), "{name}: {k}");
            // A zero gradient tensor is possible (P7 with no positive and no hard negative there),
            // but then its sample is zero too.
            let norm = fx.norm(k);
            assert!(
                norm.is_finite() && (norm > 0.0 || sample.iter().all(|&g| g == 0.0)),
                "{name}: {k}"
            );
        }
        let terms: f32 = ["B", "M", "C", "I", "S"]
            .iter()
            .filter(|t| fx.file.tensors.contains_key(&format!("loss_{t}")))
            .map(|t| fx.file.scalar(&format!("loss_{t}")))
            .sum();
        assert!((terms - fx.file.scalar("loss_total")).abs() <= 1e-5 * terms);
    }
}

/// The synthetic weights with the training-only `semantic_seg_conv` from the same generator, as
/// the reference's state dict has them.
fn train_weights(cfg: &YolactConfig) -> yolact_ros2::weights::StateDict {
    let mut sd = synth::synth_state_dict(cfg, SEED).unwrap();
    let (c, f) = (cfg.num_fg_classes(), cfg.fpn_channels);
    for (k, shape) in [("weight", vec![c, f, 1, 1]), ("bias", vec![c])] {
        let key = format!("semantic_seg_conv.{k}");
        let v = synth::synth_tensor(&key, &shape, SEED);
        sd.insert(key, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    }
    sd
}

/// Level (b), the whole step at 550: images through our preprocessing, the network's training
/// pass (frozen BN; for YOLACT++ through the DCNv2 backward and the mask-IoU net), the loss, and the
/// gradient of every parameter: loss terms within 1e-4, each gradient's norm and its strided sample
/// within 1e-3.
#[test]
fn yolact_resnet50_train_step_matches_the_reference() {
    train_step_parity("yolact_resnet50");
}

#[test]
fn yolact_plus_resnet50_train_step_matches_the_reference() {
    train_step_parity("yolact_plus_resnet50");
}

fn train_step_parity(name: &str) {
    use yolact_ros2::engine::preprocess::{image_to_tensor, load_image, normalize};

    let fx = StepFixture::load(name);
    let dev = Device::Cpu;
    let cfg = YolactConfig::by_name(name).unwrap();
    let store = WeightStore::from_state_dict(train_weights(&cfg), &cfg, &dev).unwrap();
    let model = Yolact::load_train(store.vb(), &cfg).unwrap();
    let images: Vec<Tensor> = (0..2)
        .map(|i| {
            let img = load_image(&crate::support::train::path(&format!(
                "images/train_{i}.png"
            )))
            .unwrap();
            image_to_tensor(&img, &dev).unwrap()
        })
        .collect();
    let x = normalize(&Tensor::cat(&images, 0).unwrap(), cfg.transform).unwrap();
    let out = model.forward_t(&x, true).unwrap();
    let priors = yolact_ros2::engine::priors::priors_tensor(
        &cfg,
        &conv_sizes(&cfg, cfg.max_size, cfg.max_size),
        &dev,
    )
    .unwrap();
    let truths = ground_truth(&dev);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let lcfg = LossConfig::for_config(&cfg);
    let losses = multibox_loss(&model, &out, &priors, &truths, &lcfg, &mut rng).unwrap();
    let (mut report, mut worst_term) = (Vec::new(), 0f32);
    for (k, v) in losses.terms().unwrap() {
        let want = fx.file.scalar(&format!("loss_{k}"));
        let rel = (v - want).abs() / want.abs();
        worst_term = worst_term.max(rel);
        report.push(format!("{k}: {v} vs {want} (rel {rel:.2e})"));
    }
    eprintln!("{name} step: {}", report.join(", "));
    let grads = losses.total.backward().unwrap();
    let s = fx.grad_stride();
    let mut worst = (0f64, String::new());
    // (sum of mean squared sample differences, sum of squared tensor RMS) over small samples.
    let mut pooled = (0f64, 0f64);
    for (key, var) in store.trainable(true).unwrap() {
        let want = fx.norm(&key);
        let g = grads.get(var.as_tensor()).map(|g| g.flatten_all().unwrap());
        let g = match g {
            Some(g) => g.to_vec1::<f32>().unwrap(),
            None => vec![0.0; var.elem_count()],
        };
        let norm = g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let sample: Vec<f32> = g.iter().step_by(s).copied().collect();
        let theirs = fx.sample(&key);
        let d: f64 = sample
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| f64::from(a - b).powi(2))
            .sum();
        let rel_norm = if want > 0.0 {
            (norm - want).abs() / want
        } else {
            norm
        };
        // The measure, |ours - theirs| / |theirs| over the whole tensor, estimated on the
        // sample: the sample's RMS difference over the tensor's RMS (from the reference's exact
        // norm). A sample of a few elements (a 256-element bias at stride 997 is one element)
        // estimates nothing about its tensor; those tensors are held to their exact norms here
        // and their samples are pooled below.
        let rms_diff = (d / sample.len().max(1) as f64).sqrt();
        let rms_theirs = want / (var.elem_count() as f64).sqrt();
        let rel_sample = if want > 0.0 {
            rms_diff / rms_theirs
        } else {
            rms_diff
        };
        let r = if sample.len() < MIN_SAMPLE {
            pooled.0 += d / sample.len().max(1) as f64;
            pooled.1 += rms_theirs.powi(2);
            rel_norm
        } else {
            rel_norm.max(rel_sample)
        };
        if r > worst.0 {
            worst = (r, key.clone());
        }
        eprintln!("{key}: norm {norm:.6e} vs {want:.6e}, sample rel {rel_sample:.2e}");
    }
    let pooled_rel = (pooled.0 / pooled.1.max(f64::MIN_POSITIVE)).sqrt();
    eprintln!(
        "{name} step: tensors with fewer than {MIN_SAMPLE} sampled elements, pooled: {pooled_rel:.2e}"
    );
    assert!(
        pooled_rel <= GRAD_RTOL,
        "{name} step: the small tensors' pooled samples are off by {pooled_rel:.2e}"
    );
    eprintln!("{name} step: worst gradient {:.2e} at {}", worst.0, worst.1);
    assert!(
        worst_term <= TERM_RTOL,
        "{name} step: {}",
        report.join(", ")
    );
    assert!(
        worst.0 <= GRAD_RTOL,
        "{name} step: gradient of {} off by {:.2e}",
        worst.1,
        worst.0
    );
}
