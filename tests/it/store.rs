//! The trainable weight store (`weights::WeightStore`): a checkpoint loaded into it and saved back
//! is the same file's tensors bit for bit, the model built on it infers exactly as the engine's
//! model, and optimiser-style updates and training passes reach the stored tensors.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use yolact_ros2::config::YolactConfig;
use yolact_ros2::model::{TrainBn, Yolact};
use yolact_ros2::weights::{
    load_checkpoint, prepare, save_safetensors, synth, StateDict, WeightStore,
};

const CONFIG: &str = "yolact_resnet50";

/// A synthetic checkpoint laid out as a released file: every inference key, the training-only
/// `semantic_seg_conv`, integer `num_batches_tracked` counters, and one tensor stored in f16.
fn released_like(cfg: &YolactConfig) -> StateDict {
    let mut sd = synth::synth_state_dict(cfg, 7).unwrap();
    let dev = Device::Cpu;
    let bns: Vec<String> = sd
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_owned))
        .collect();
    for (i, bn) in bns.iter().enumerate() {
        let n = Tensor::new(1000 + i as i64, &dev).unwrap();
        sd.insert(format!("{bn}.num_batches_tracked"), n);
    }
    let c = cfg.num_fg_classes();
    sd.insert(
        "semantic_seg_conv.weight".into(),
        Tensor::randn(0f32, 0.05, (c, cfg.fpn_channels, 1, 1), &dev).unwrap(),
    );
    sd.insert(
        "semantic_seg_conv.bias".into(),
        Tensor::randn(0f32, 0.1, c, &dev).unwrap(),
    );
    let k = "fpn.lat_layers.0.bias";
    let half = sd[k].to_dtype(DType::F16).unwrap();
    sd.insert(k.into(), half);
    sd
}

/// The bits of every element (f64 holds every f32, f16 and i64 counter used here exactly, and
/// keeps the sign of zero).
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

fn store_of(sd: StateDict, cfg: &YolactConfig) -> WeightStore {
    WeightStore::from_state_dict(sd, cfg, &Device::Cpu).unwrap()
}

/// The engine's model: plain tensors, loaded, fused.
fn engine_model(sd: StateDict, cfg: &YolactConfig) -> Yolact {
    let t: HashMap<String, Tensor> = prepare(sd, cfg).unwrap();
    Yolact::load(VarBuilder::from_tensors(t, DType::F32, &Device::Cpu), cfg)
        .unwrap()
        .fuse()
        .unwrap()
}

#[test]
fn checkpoint_saved_back_is_bit_identical_and_infers_identically() {
    let cfg = YolactConfig::by_name(CONFIG).unwrap();
    let original = released_like(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.safetensors");
    save_safetensors(&original, &src).unwrap();

    let store = store_of(load_checkpoint(&src).unwrap(), &cfg);
    // Building the training model requests every key, semantic_seg_conv included.
    let model = Yolact::load_train(store.vb(), &cfg).unwrap();
    let out = dir.path().join("out.safetensors");
    store.save_safetensors(&out).unwrap();

    let saved = load_checkpoint(&out).unwrap();
    assert_eq!(
        saved.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>(),
        "key set"
    );
    for (k, want) in &original {
        let got = &saved[k];
        assert_eq!(got.dtype(), want.dtype(), "{k}: dtype");
        assert_eq!(got.dims(), want.dims(), "{k}: shape");
        assert!(bits(got) == bits(want), "{k}: values differ");
    }

    // The same inference output from the original and the saved file, bit for bit.
    let x = Tensor::randn(0f32, 1.0, (1, 3, 96, 96), &Device::Cpu).unwrap();
    let a = engine_model(original, &cfg).forward(&x).unwrap();
    let b = engine_model(saved, &cfg).forward(&x).unwrap();
    for (name, p, q) in [
        ("loc", &a.loc, &b.loc),
        ("conf", &a.conf, &b.conf),
        ("mask", &a.mask, &b.mask),
        ("proto", &a.proto, &b.proto),
    ] {
        assert!(bits(p) == bits(q), "{name} differs after the round trip");
    }
    // The store's own (unfused) model agrees with the fused one up to the fold's rounding.
    let c = model.forward(&x).unwrap();
    let d = (&c.loc - &a.loc).unwrap().abs().unwrap().max_all().unwrap();
    let d = d.to_scalar::<f32>().unwrap();
    assert!(d < 1e-3, "unfused vs fused loc: {d}");
}

#[test]
fn updates_to_store_variables_reach_the_model_and_the_saved_file() {
    let cfg = YolactConfig::by_name(CONFIG).unwrap();
    let store = store_of(synth::synth_state_dict(&cfg, 3).unwrap(), &cfg);
    let model = Yolact::load(store.vb(), &cfg).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let before = model.forward(&x).unwrap();

    let trainable = store.trainable(false).unwrap();
    let frozen = store.trainable(true).unwrap();
    let names = |v: &[(String, candle_core::Var)]| -> Vec<String> {
        v.iter().map(|(k, _)| k.clone()).collect()
    };
    let (all, some) = (names(&trainable), names(&frozen));
    assert!(all
        .iter()
        .all(|k| !k.ends_with("running_mean") && !k.ends_with("running_var")));
    assert!(all.contains(&"backbone.bn1.weight".to_string()));
    assert!(!some.contains(&"backbone.bn1.weight".to_string()));
    assert!(some.contains(&"backbone.conv1.weight".to_string()));
    assert!(some.contains(&"fpn.lat_layers.0.bias".to_string()));

    let key = "prediction_layers.0.bbox_layer.bias";
    let (_, var) = trainable.iter().find(|(k, _)| k == key).unwrap();
    let bumped = (var.as_tensor() + 0.5).unwrap();
    var.set(&bumped).unwrap();
    let after = model.forward(&x).unwrap();
    // Every box regression moves by exactly the bias change (up to f32 rounding).
    let diff = (&after.loc - &before.loc).unwrap().flatten_all().unwrap();
    let diff = diff.to_vec1::<f32>().unwrap();
    assert!(
        diff.iter().all(|d| (d - 0.5).abs() < 1e-4),
        "model did not see the update"
    );
    assert!(bits(&store.to_state_dict().unwrap()[key]) == bits(&bumped));
}

#[test]
fn training_pass_returns_segmentation_logits_gradients_and_moves_running_stats() {
    let cfg = YolactConfig::by_name(CONFIG).unwrap();
    let mut sd = synth::synth_state_dict(&cfg, 5).unwrap();
    let c = cfg.num_fg_classes();
    sd.insert(
        "semantic_seg_conv.weight".into(),
        Tensor::randn(0f32, 0.05, (c, cfg.fpn_channels, 1, 1), &Device::Cpu).unwrap(),
    );
    sd.insert(
        "semantic_seg_conv.bias".into(),
        Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap(),
    );
    let store = store_of(sd, &cfg);
    let mut model = Yolact::load_train(store.vb(), &cfg).unwrap();
    model.set_train_bn(TrainBn::Batch);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let rm_key = "backbone.bn1.running_mean";
    let rm_before = bits(&store.to_state_dict().unwrap()[rm_key]);

    let out = model.forward_t(&x, true).unwrap();
    let segm = out.segm.as_ref().expect("segmentation logits in training");
    assert_eq!(segm.dims(), &[2, c, 8, 8]);
    let loss = (out.conf.sqr().unwrap().mean_all().unwrap()
        + out.coef.tanh().unwrap().mean_all().unwrap()
        + segm.sqr().unwrap().mean_all().unwrap()
        + out.loc.sqr().unwrap().mean_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let vars: HashMap<String, candle_core::Var> =
        store.trainable(false).unwrap().into_iter().collect();
    for k in [
        "semantic_seg_conv.weight",
        "prediction_layers.0.conf_layer.weight",
        "prediction_layers.0.mask_layer.weight",
        "fpn.lat_layers.2.weight",
        "backbone.layers.1.0.conv2.weight",
        "backbone.layers.1.0.bn2.weight",
        "backbone.conv1.weight",
    ] {
        let g = grads
            .get(vars[k].as_tensor())
            .unwrap_or_else(|| panic!("{k}: no gradient"));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0 && n.is_finite(), "{k}: gradient norm² {n}");
    }
    assert!(
        bits(&store.to_state_dict().unwrap()[rm_key]) != rm_before,
        "running mean unchanged"
    );
    // Eval passes have no segmentation output; a fused model does not train.
    assert!(model.forward_t(&x, false).unwrap().segm.is_none());
    assert!(model.fuse().unwrap().forward_t(&x, true).is_err());
}
