//! Module-tree and end-to-end shape tests for `yolact_ros2::model`.

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolact_ros2::config::{YolactConfig, CONFIG_NAMES};
use yolact_ros2::model::{conv_sizes, Yolact};

fn key_file(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/keys/{name}.keys.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (name, shape) pairs from a reference key list, minus the keys the model must not request.
fn expected_keys(name: &str) -> BTreeSet<(String, Vec<usize>)> {
    key_file(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, shape) = l.split_once(' ').expect("`name (shape)` line");
            let dims = shape
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().expect("dimension"))
                .collect::<Vec<_>>();
            (k.to_string(), dims)
        })
        .filter(|(k, _)| !k.ends_with("num_batches_tracked") && !k.starts_with("semantic_seg_conv"))
        .collect()
}

#[test]
fn module_tree_matches_reference_keys_for_all_configs() {
    let dev = Device::Cpu;
    for name in CONFIG_NAMES {
        let cfg = YolactConfig::by_name(name).unwrap();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        Yolact::load(vb, &cfg).unwrap();
        let got: BTreeSet<(String, Vec<usize>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let want = expected_keys(name);
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: not requested {missing:?}; unexpected {extra:?}"
        );
        assert_eq!(got.len(), want.len(), "{name}");
    }
}

/// Weights for every key of `name` with magnitudes that keep activations O(1): conv weights
/// uniform with variance ~1/fan_in, BN scale in [0.3, 0.7], running var in [0.5, 1.5].
fn small_weights(name: &str, dev: &Device) -> HashMap<String, Tensor> {
    expected_keys(name)
        .into_iter()
        .map(|(k, dims)| {
            let t = if k.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, dims.as_slice(), dev)
            } else if k.ends_with("running_mean") || k.ends_with("bias") {
                Tensor::rand(-0.1f32, 0.1, dims.as_slice(), dev)
            } else if dims.len() == 1 {
                Tensor::rand(0.3f32, 0.7, dims.as_slice(), dev)
            } else {
                let fan_in: usize = dims[1..].iter().product();
                let a = (3.0 / fan_in as f64).sqrt() as f32;
                Tensor::rand(-a, a, dims.as_slice(), dev)
            };
            (k, t.unwrap())
        })
        .collect()
}

fn load_small(name: &str) -> Yolact {
    let dev = Device::Cpu;
    let cfg = YolactConfig::by_name(name).unwrap();
    let vb = VarBuilder::from_tensors(small_weights(name, &dev), DType::F32, &dev);
    Yolact::load(vb, &cfg).unwrap()
}

fn all_finite(t: &Tensor) -> bool {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

fn check_forward(name: &str, size: usize, priors: usize, proto: usize) {
    let model = load_small(name);
    assert_eq!(model.config().max_size, size);
    let x = Tensor::randn(0f32, 1.0, (1, 3, size, size), &Device::Cpu).unwrap();
    let out = model.forward(&x).unwrap();
    let nc = model.config().num_classes;
    assert_eq!(out.loc.dims(), &[1, priors, 4], "{name} loc");
    assert_eq!(out.conf.dims(), &[1, priors, nc], "{name} conf");
    assert_eq!(out.mask.dims(), &[1, priors, 32], "{name} mask");
    assert_eq!(out.proto.dims(), &[1, proto, proto, 32], "{name} proto");
    for t in [&out.loc, &out.conf, &out.mask, &out.proto] {
        assert!(all_finite(t), "{name}: non-finite output");
    }
    let sums = out
        .conf
        .sum(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        sums.iter().all(|s| (s - 1.0).abs() < 1e-4),
        "{name}: conf rows do not sum to 1"
    );
    let m = out
        .mask
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .flatten_all()
        .unwrap();
    assert!(
        m.to_vec1::<f32>().unwrap().iter().all(|&v| v <= 1.0),
        "{name}: |tanh| > 1"
    );
    let pmin = out
        .proto
        .flatten_all()
        .unwrap()
        .min(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(pmin >= 0.0, "{name}: proto not ReLU'd");
    // The level sizes the model reports are the ones its prior count implies.
    let a = model.config().priors_per_cell();
    let cells: usize = model.conv_sizes().iter().map(|(h, w)| h * w).sum();
    assert_eq!(cells * a, priors);
    assert_eq!(model.conv_sizes()[0], (proto / 2, proto / 2));
}

#[test]
fn forward_shapes_resnet50() {
    check_forward("yolact_resnet50", 550, 19248, 138);
}

#[test]
fn forward_shapes_darknet53() {
    check_forward("yolact_darknet53", 550, 19248, 138);
}

#[test]
fn forward_shapes_base() {
    check_forward("yolact_base", 550, 19248, 138);
}

#[test]
fn forward_shapes_im700() {
    check_forward("yolact_im700", 700, 30963, 176);
}

#[test]
fn forward_shapes_plus_resnet50() {
    check_forward("yolact_plus_resnet50", 550, 57744, 138);
}

#[test]
fn forward_shapes_plus_base() {
    check_forward("yolact_plus_base", 550, 57744, 138);
}

/// The ++ stages after the (deformable) backbone, fed with backbone-shaped random maps.
#[test]
fn plus_fpn_heads_protonet_and_maskiou_shapes() {
    let model = load_small("yolact_plus_resnet50");
    let dev = Device::Cpu;
    let c: Vec<Tensor> = [(512, 69), (1024, 35), (2048, 18)]
        .iter()
        .map(|&(ch, s)| Tensor::rand(0f32, 1.0, (1, ch, s, s), &dev).unwrap())
        .collect();
    let p = model.fpn(&c).unwrap();
    let sizes: Vec<(usize, usize)> = p
        .iter()
        .map(|t| (t.dim(2).unwrap(), t.dim(3).unwrap()))
        .collect();
    assert_eq!(sizes, model.conv_sizes().to_vec());
    assert_eq!(sizes, vec![(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]);
    let (loc, conf, mask) = model.heads(&p).unwrap();
    assert_eq!(loc.dims(), &[1, 57744, 4]);
    assert_eq!(conf.dims(), &[1, 57744, 81]);
    assert_eq!(mask.dims(), &[1, 57744, 32]);
    let proto = model.protonet(&p[0]).unwrap();
    assert_eq!(proto.dims(), &[1, 138, 138, 32]);
    let masks = Tensor::rand(0f32, 1.0, (3, 1, 138, 138), &dev).unwrap();
    let iou = model.maskiou(&masks).unwrap();
    assert_eq!(iou.dims(), &[3, 80]);
    assert!(all_finite(&iou));
    let v1 = load_small("yolact_resnet50");
    assert!(v1.maskiou(&masks).is_err());
}

#[test]
fn conv_sizes_match_the_spec_table() {
    let s550 = vec![(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)];
    for name in CONFIG_NAMES {
        let cfg = YolactConfig::by_name(name).unwrap();
        let got = conv_sizes(&cfg, cfg.max_size, cfg.max_size).to_vec();
        if name == "yolact_im700" {
            assert_eq!(got, vec![(88, 88), (44, 44), (22, 22), (11, 11), (6, 6)]);
        } else {
            assert_eq!(got, s550, "{name}");
        }
    }
}

/// Compares against a dump of the reference PyTorch network: a safetensors file with the weights
/// under `w.<state-dict key>`, the input `x`, and the eval outputs `out.{loc,conf,mask,proto}`
/// (raw head outputs, i.e. with `Detect` bypassed). Set `YOLACT_PARITY_FILE` and
/// `YOLACT_PARITY_CONFIG`, then run with `--ignored`. `tools/model_parity_dump.py` writes such a
/// file from an extracted reference checkout (`git --git-dir=<mirror> archive HEAD | tar -x`).
#[test]
#[ignore = "needs a reference dump (YOLACT_PARITY_FILE)"]
fn parity_with_reference_dump() {
    let path = std::env::var("YOLACT_PARITY_FILE").expect("YOLACT_PARITY_FILE");
    let name = std::env::var("YOLACT_PARITY_CONFIG").expect("YOLACT_PARITY_CONFIG");
    let dev = Device::Cpu;
    let all = candle_core::safetensors::load(&path, &dev).unwrap();
    let weights: HashMap<String, Tensor> = all
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("w.").map(|k| (k.to_string(), v.clone())))
        .collect();
    let cfg = YolactConfig::by_name(&name).unwrap();
    let model = Yolact::load(VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg).unwrap();
    let out = model.forward(&all["x"]).unwrap();
    for (k, got) in [
        ("loc", &out.loc),
        ("conf", &out.conf),
        ("mask", &out.mask),
        ("proto", &out.proto),
    ] {
        let want = &all[&format!("out.{k}")];
        assert_eq!(got.dims(), want.dims(), "{k}");
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let (d, s) = (
            diff.to_scalar::<f32>().unwrap(),
            scale.to_scalar::<f32>().unwrap(),
        );
        eprintln!("{name} {k}: max |diff| {d:e} (max |ref| {s:e})");
        assert!(d <= 1e-3 * s.max(1.0), "{k}: {d} vs scale {s}");
    }
    if let (Some(m), Some(want)) = (all.get("miou.in"), all.get("miou.out")) {
        let got = model.maskiou(m).unwrap();
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let d = d.to_scalar::<f32>().unwrap();
        eprintln!("{name} maskiou: max |diff| {d:e}");
        assert!(d < 1e-4);
    }
}
