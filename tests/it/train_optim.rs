//! Training's optimiser, checkpoints and initialisation (`train::optim`, `train::init`): SGD
//! against PyTorch's `torch.optim.SGD` (fixture by tools/make_sgd_fixture.py) and against the
//! formula in f64; a training checkpoint saved and read back bit for bit; a model with its own
//! config and class names loaded by the normal inference path (`yolact infer`) with no flags and
//! labelled with its own names; initialisation from an ImageNet-style backbone `.pth`, from a
//! checkpoint with another class count, and `--freeze`.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use yolact_ros2::config::{BackboneKind, YolactConfig};
use yolact_ros2::train::init::{initialise, trainable_params, Freeze, Init};
use yolact_ros2::train::optim::{checkpoint, Sgd, TrainState};
use yolact_ros2::weights::{
    load_checkpoint, load_checkpoint_with_metadata, save_torch, synth, CheckpointFormat, StateDict,
};

use crate::support::{fixture, text, yolact};

fn vec_of(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A ResNet config small enough for CPU tests: one block per stage, 64-pixel input, its own
/// classes.
fn tiny(names: &[&str], plus: bool) -> YolactConfig {
    let base = if plus {
        "yolact_plus_resnet50"
    } else {
        "yolact_resnet50"
    };
    let mut c = YolactConfig::by_name(base)
        .unwrap()
        .with_classes("tiny_cups", names.iter().map(|s| s.to_string()).collect());
    c.backbone = BackboneKind::resnet([1, 1, 1, 1], plus.then_some(1));
    c.max_size = 64;
    c.fpn_channels = 32;
    c.mask_dim = 8;
    c
}

#[test]
fn sgd_matches_torch_optim_sgd_and_the_formula() {
    let (sd, meta) =
        load_checkpoint_with_metadata(&fixture("train_optim/sgd_torch.safetensors")).unwrap();
    let lrs: Vec<f64> = serde_json::from_str(&meta["lrs"]).unwrap();
    let names = ["a", "b", "c"];
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|k| {
            let v = Var::from_tensor(&sd[&format!("init.{k}")]).unwrap();
            (k.to_string(), v)
        })
        .collect();
    let mut sgd = Sgd::new(vars.clone(), 0.9, 5e-4);
    // The formula in f64, independent of the code under test.
    let mut p64: BTreeMap<String, Vec<f64>> = names
        .iter()
        .map(|k| {
            let init = vec_of(&sd[&format!("init.{k}")]);
            (k.to_string(), init.iter().map(|&x| x as f64).collect())
        })
        .collect();
    let mut buf64: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut skipped_seen = false;
    for (s, &lr) in lrs.iter().enumerate() {
        let mut grads = GradStore::default();
        for (k, v) in &vars {
            let Some(g) = sd.get(&format!("grad.{s}.{k}")) else {
                skipped_seen = true;
                continue;
            };
            grads.insert(v.as_tensor(), g.clone());
            let g: Vec<f64> = vec_of(g).iter().map(|&x| x as f64).collect();
            let p = p64.get_mut(k).unwrap();
            let d: Vec<f64> = g.iter().zip(p.iter()).map(|(g, p)| g + 5e-4 * p).collect();
            let b: Vec<f64> = match buf64.get(k) {
                Some(b) => b.iter().zip(&d).map(|(b, d)| 0.9 * b + d).collect(),
                None => d,
            };
            for (p, b) in p.iter_mut().zip(&b) {
                *p -= lr * b;
            }
            buf64.insert(k.clone(), b);
        }
        let r = sgd.step(&grads, lr, s as u64).unwrap();
        assert_eq!(r.updated + r.skipped, 3);
        for (k, v) in &vars {
            let got = vec_of(v.as_tensor());
            let torch = vec_of(&sd[&format!("after.{s}.{k}")]);
            let formula = &p64[k];
            for ((g, t), f) in got.iter().zip(&torch).zip(formula) {
                assert!(
                    (g - t).abs() <= 1e-6 * (1.0 + t.abs()),
                    "step {s} `{k}`: ours {g}, torch {t}"
                );
                assert!(
                    (*g as f64 - f).abs() <= 1e-5 * (1.0 + f.abs()),
                    "step {s} `{k}`: ours {g}, formula {f}"
                );
            }
        }
    }
    assert!(skipped_seen, "the fixture has a step without a gradient");
    for k in names {
        let ours = vec_of(&sgd.state()[k]);
        let torch = vec_of(&sd[&format!("momentum.{k}")]);
        for (o, t) in ours.iter().zip(&torch) {
            assert!(
                (o - t).abs() <= 1e-5 * (1.0 + t.abs()),
                "momentum `{k}`: {o} vs {t}"
            );
        }
    }
}

#[test]
fn a_training_checkpoint_round_trips_tensors_config_names_and_optimiser_state() {
    let cfg = tiny(&["cup", "mug"], true);
    let (store, model, _) = initialise(&cfg, &Init::Scratch, 3, &Device::Cpu).unwrap();
    let params = trainable_params(&store, &cfg, true, Freeze::None).unwrap();
    let mut sgd = Sgd::from_solver(params, &cfg.solver);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let out = model.forward_t(&x, true).unwrap();
    let loss = (out.conf.sqr().unwrap().mean_all().unwrap()
        + out.segm.unwrap().sqr().unwrap().mean_all().unwrap())
    .unwrap();
    sgd.step(&loss.backward().unwrap(), 0.01, 0).unwrap();
    assert!(!sgd.state().is_empty());
    let state = TrainState {
        iteration: 1,
        epoch: 0,
        batch_in_epoch: 1,
        batch_size: 1,
        seed: 3,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    checkpoint::save(&path, &cfg, &store, Some(&sgd), Some(&state)).unwrap();

    let back = checkpoint::load(&path).unwrap();
    assert_eq!(back.config, cfg);
    assert_eq!(
        back.config.class_names.as_deref(),
        Some(&["cup".to_string(), "mug".to_string()][..])
    );
    assert_eq!(back.state, Some(state));
    let saved = store.to_state_dict().unwrap();
    assert_eq!(
        back.weights.keys().collect::<Vec<_>>(),
        saved.keys().collect::<Vec<_>>()
    );
    for (k, t) in &saved {
        assert!(bits(&back.weights[k]) == bits(t), "{k} differs");
    }
    assert_eq!(back.momentum.len(), sgd.state().len());
    for (k, t) in sgd.state() {
        assert!(bits(&back.momentum[k]) == bits(t), "momentum {k} differs");
    }
    // A second optimiser takes the state back.
    let params = trainable_params(&store, &cfg, true, Freeze::None).unwrap();
    let mut again = Sgd::from_solver(params, &cfg.solver);
    again.load_state(back.momentum).unwrap();
    assert_eq!(again.state().len(), sgd.state().len());
}

/// The conf bias that makes foreground class `fg` the clear winner at every anchor.
fn favour_class(store_sd: &mut StateDict, cfg: &YolactConfig, fg: usize) {
    let a = cfg.priors_per_cell();
    let c = cfg.num_classes;
    let mut bias = vec![-8f32; a * c];
    for anchor in 0..a {
        bias[anchor * c + 1 + fg] = 8.0;
    }
    store_sd.insert(
        "prediction_layers.0.conf_layer.bias".into(),
        Tensor::from_vec(bias, a * c, &Device::Cpu).unwrap(),
    );
}

#[test]
fn a_custom_config_loads_through_infer_with_no_flags_and_labels_with_its_own_names() {
    let cfg = tiny(&["cup", "mug"], false);
    let (store, _model, _) = initialise(&cfg, &Init::Scratch, 5, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Make class 1 ("mug") win everywhere, so detections exist whatever the random weights.
    let mut sd = store.to_state_dict().unwrap();
    favour_class(&mut sd, &cfg, 1);
    let biased = yolact_ros2::weights::WeightStore::from_partial(sd, &Device::Cpu).unwrap();
    let ck = dir.path().join("model.safetensors");
    checkpoint::save(&ck, &cfg, &biased, None, None).unwrap();

    // The library path: config and names from the file.
    let engine = yolact_ros2::engine::Engine::load(&ck, None, &Device::Cpu).unwrap();
    assert_eq!(engine.config(), &cfg);

    let img = dir.path().join("img.png");
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    })
    .save(&img)
    .unwrap();
    let json = dir.path().join("out.json");
    let o = yolact(&[
        "infer",
        "--weights",
        ck.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["config"], "tiny_cups");
    let dets = v["detections"].as_array().cloned();
    let dets = dets.unwrap_or_else(|| panic!("no detections array in {v}"));
    assert!(!dets.is_empty(), "{v}");
    for d in &dets {
        assert_eq!(d["class_id"], 1, "{d}");
        assert_eq!(d["label"], "mug", "{d}");
    }
    // A released-config checkpoint still labels with COCO's names: the default is unchanged.
    assert_eq!(
        YolactConfig::by_name("yolact_base").unwrap().class_name(1),
        "bicycle"
    );
}

/// A torchvision-named ResNet state dict for `cfg`'s backbone (random values), with `fc.*`.
fn imagenet_like(cfg: &YolactConfig) -> StateDict {
    let plain = YolactConfig {
        backbone: match cfg.backbone {
            BackboneKind::ResNet { blocks, width, .. } => BackboneKind::ResNet {
                blocks,
                dcn_interval: None,
                width,
            },
            ref b => b.clone(),
        },
        use_maskiou: false,
        ..cfg.clone()
    };
    let mut sd = StateDict::new();
    for (k, t) in synth::synth_state_dict(&plain, 11).unwrap() {
        let Some(rest) = k.strip_prefix("backbone.") else {
            continue;
        };
        let key = match rest.strip_prefix("layers.") {
            Some(r) => {
                let (n, tail) = r.split_once('.').unwrap();
                format!("layer{}.{tail}", n.parse::<usize>().unwrap() + 1)
            }
            None => rest.to_owned(),
        };
        sd.insert(key, t);
    }
    let dev = Device::Cpu;
    sd.insert(
        "fc.weight".into(),
        Tensor::zeros((10, 2048), DType::F32, &dev).unwrap(),
    );
    sd.insert(
        "fc.bias".into(),
        Tensor::zeros(10, DType::F32, &dev).unwrap(),
    );
    sd
}

#[test]
fn init_from_an_imagenet_backbone_file_loads_renamed_keys_zeroes_dcn_extras_and_xaviers_the_rest() {
    let cfg = tiny(&["cup", "mug"], true);
    let file = imagenet_like(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("resnet_tiny.pth");
    save_torch(&file, &pth, CheckpointFormat::TorchLegacy).unwrap();
    let init = Init::from_arg(pth.to_str().unwrap()).unwrap();
    assert_eq!(init, Init::Backbone(pth.clone()));
    let (store, _model, report) = initialise(&cfg, &init, 1, &Device::Cpu).unwrap();
    let sd = store.to_state_dict().unwrap();

    assert_eq!(
        report.ignored,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );
    let t = |k: &str| vec_of(&sd[k]);
    assert_eq!(
        t("backbone.layers.2.0.conv2.weight"),
        vec_of(&file["layer3.0.conv2.weight"])
    );
    assert_eq!(
        t("backbone.bn1.running_var"),
        vec_of(&file["bn1.running_var"])
    );
    assert_eq!(t("backbone.conv1.weight"), vec_of(&file["conv1.weight"]));
    // DCN extras are absent from the file and stay zero, as the reference's Bottleneck makes them.
    for k in [
        "backbone.layers.1.0.conv2.bias",
        "backbone.layers.1.0.conv2.conv_offset_mask.weight",
        "backbone.layers.1.0.conv2.conv_offset_mask.bias",
    ] {
        assert!(report.missing.contains(&k.to_string()), "{k}");
        assert!(t(k).iter().all(|&v| v == 0.0), "{k} not zero");
    }
    // Outside the backbone: xavier_uniform with its exact bound, zero biases.
    for (k, (o, i, kk)) in [
        ("fpn.pred_layers.0.weight", (32, 32, 3)),
        ("prediction_layers.0.conf_layer.weight", (27, 32, 3)),
        ("maskiou_net.maskiou_net.10.weight", (2, 128, 1)),
        ("semantic_seg_conv.weight", (2, 32, 1)),
    ] {
        let bound = (6.0 / ((o + i) * kk * kk) as f64).sqrt() as f32;
        let v = t(k);
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            max <= bound && max > 0.5 * bound,
            "{k}: max {max}, bound {bound}"
        );
        let bias = k.replace(".weight", ".bias");
        assert!(t(&bias).iter().all(|&b| b == 0.0), "{bias}");
    }
}

#[test]
fn fine_tuning_for_other_classes_redraws_only_the_class_dependent_tensors() {
    let coco = {
        let mut c = tiny(&["x"; 80], true);
        c.class_names = None;
        c
    };
    let mut file = synth::synth_state_dict(&coco, 4).unwrap();
    let dev = Device::Cpu;
    file.insert(
        "semantic_seg_conv.weight".into(),
        Tensor::randn(0f32, 0.1, (80, 32, 1, 1), &dev).unwrap(),
    );
    file.insert(
        "semantic_seg_conv.bias".into(),
        Tensor::zeros(80, DType::F32, &dev).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("released_like.pth");
    save_torch(&file, &pth, CheckpointFormat::TorchZip).unwrap();

    let cfg = tiny(&["cup", "mug", "plate"], true);
    let init = Init::from_arg(pth.to_str().unwrap()).unwrap();
    assert_eq!(init, Init::Checkpoint(pth.clone()));
    let (store, _m, report) = initialise(&cfg, &init, 9, &dev).unwrap();
    let mut redrawn = report.reinitialised.clone();
    redrawn.sort();
    assert_eq!(
        redrawn,
        [
            "maskiou_net.maskiou_net.10.bias",
            "maskiou_net.maskiou_net.10.weight",
            "prediction_layers.0.conf_layer.bias",
            "prediction_layers.0.conf_layer.weight",
            "semantic_seg_conv.bias",
            "semantic_seg_conv.weight",
        ]
    );
    let sd = store.to_state_dict().unwrap();
    for (k, t) in &file {
        if !redrawn.contains(k) {
            assert!(bits(&sd[k]) == bits(t), "{k} not loaded as is");
        }
    }
    // PyTorch's Conv2d defaults: U(±1/√fan_in) for weight and bias alike.
    let conf_fan_in = 32 * 9;
    for k in [
        "prediction_layers.0.conf_layer.weight",
        "prediction_layers.0.conf_layer.bias",
    ] {
        let v = vec_of(&sd[k]);
        let bound = 1.0 / (conf_fan_in as f32).sqrt();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max <= bound && max > 0.5 * bound, "{k}: {max} vs {bound}");
    }
    assert_eq!(sd["prediction_layers.0.conf_layer.bias"].dims(), &[9 * 4]);

    // Another config's checkpoint is refused, naming the key.
    let other = tiny(&["cup"], false);
    let e = initialise(&other, &init, 9, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unexpected key") || e.contains("expected shape"),
        "{e}"
    );

    // --freeze 2: stem and stages 0-1 are not handed to the optimiser.
    let p = trainable_params(&store, &cfg, false, Freeze::Stages(2)).unwrap();
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!keys
        .iter()
        .any(|k| k.starts_with("backbone.layers.1.") || *k == "backbone.conv1.weight"));
    assert!(keys.contains(&"backbone.layers.2.0.conv1.weight"));
    assert!(keys.contains(&"backbone.layers.2.0.bn1.weight"));
    assert!(trainable_params(&store, &cfg, false, Freeze::Stages(5)).is_err());
    let all = load_checkpoint(&pth).unwrap().len();
    assert!(all > keys.len());
}
