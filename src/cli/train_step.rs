//! `yolact train-step`: one deterministic training step's loss and gradients, for parity checks
//! against the reference (issue 12 item 9).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use yolact_ros2::config::builtin_names;
use yolact_ros2::engine::priors::priors_tensor;
use yolact_ros2::model::{conv_sizes, TrainBn, Yolact};
use yolact_ros2::train::data::{Batch, TrainSet};
use yolact_ros2::train::loss::{multibox_loss, LossConfig};
use yolact_ros2::weights::source::HostWeights;
use yolact_ros2::weights::{save_safetensors, StateDict, WeightStore};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every image of ANN is one batch, transformed only by the reference's \
Resize to max_size (no augmentation); batch norm frozen; the train-mode forward and MultiBoxLoss. \
The mask subsample (more than masks_to_train positives in an image) is drawn from a fixed seed, \
not torch's generator: keep parity images below that count."
)]
pub struct TrainStepArgs {
    /// Checkpoint (it must hold `semantic_seg_conv.*`, as the released files do), a released
    /// config name, or `synthetic[:SEED]` (the parity fixtures' weights, semantic head included).
    #[arg(long, value_name = "W")]
    pub weights: String,
    /// Config name; taken from the checkpoint when omitted.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(builtin_names()))]
    pub config: Option<String>,
    /// COCO instances JSON.
    #[arg(long, value_name = "ANN.json")]
    pub ann: PathBuf,
    /// Its image folder.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Write the loss terms (B, M, C, I, S as the config has them) and `total` here.
    #[arg(long, value_name = "OUT.json")]
    pub json: PathBuf,
    /// Write d total / d tensor for every trainable tensor, under the checkpoint's keys.
    #[arg(long, value_name = "OUT.safetensors")]
    pub grads: Option<PathBuf>,
    /// cpu, cuda[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: TrainStepArgs) -> Result<ExitCode> {
    let device = super::select(&a.device, false)?.device;
    let host = HostWeights::load_train(&a.weights, a.config.as_deref())
        .with_context(|| format!("--weights {}", a.weights))?;
    let cfg = host.config.clone();
    if !host.state_dict.contains_key("semantic_seg_conv.weight") {
        bail!(
            "{}: no `semantic_seg_conv.*`; the S term needs the training-only head the released \
             checkpoints carry",
            a.weights
        );
    }
    let set = TrainSet::open(&a.ann, &a.images, &cfg)?;
    let samples = (0..set.len())
        .map(|i| set.sample(i, None))
        .collect::<yolact_ros2::Result<Vec<_>>>()?;
    let batch = Batch::from_samples(&samples, &device)?;
    let store = WeightStore::from_state_dict(host.state_dict, &cfg, &device)?;
    let mut model = Yolact::load_train(store.vb(), &cfg)?;
    model.set_train_bn(TrainBn::Frozen);
    let priors = priors_tensor(&cfg, &conv_sizes(&cfg, cfg.max_size, cfg.max_size), &device)?;
    let out = model.forward_t(&batch.images, true)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let losses = multibox_loss(
        &model,
        &out,
        &priors,
        &batch.truths,
        &LossConfig::for_config(&cfg),
        &mut rng,
    )?;
    let mut doc = serde_json::Map::new();
    for (k, v) in losses.terms()? {
        doc.insert(k.into(), f64::from(v).into());
    }
    let total = losses.total.to_scalar::<f32>()?;
    doc.insert("total".into(), f64::from(total).into());
    doc.insert("num_pos".into(), losses.num_pos.into());
    std::fs::write(
        &a.json,
        serde_json::to_vec_pretty(&serde_json::Value::Object(doc))?,
    )
    .with_context(|| format!("writing {}", a.json.display()))?;
    if let Some(path) = &a.grads {
        let grads = losses.total.backward()?;
        let mut sd = StateDict::new();
        for (k, v) in store.trainable(true)? {
            if let Some(g) = grads.get(v.as_tensor()) {
                sd.insert(k, g.to_device(&candle_core::Device::Cpu)?);
            }
        }
        save_safetensors(&sd, path)?;
    }
    Ok(ExitCode::SUCCESS)
}
