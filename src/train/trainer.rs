//! The training loop (`yolact train`): data -> the model's training pass -> `MultiBoxLoss` ->
//! SGD, with checkpoints, a JSON-lines log, loss plots and an exact resume.
//!
//! A run writes into its output folder:
//! * `latest.safetensors`: the full state (weights, momentum, config, loop position), rewritten
//!   at every save and on interruption; `--resume` continues from it;
//! * `iter_<N>.safetensors` every `save_every` iterations (same content);
//! * `final.safetensors` at the end (weights, config and position, no momentum);
//! * `train.jsonl`: one JSON object per logged iteration (iteration, epoch, lr, each loss term
//!   under the reference's letter, total, images/s);
//! * `loss.png`: the logged loss terms over the iterations;
//! * with a validation set: `val.jsonl` (box and mask COCO AP/AR every `val.every` iterations and
//!   at the end, our COCOeval) and `map.png` (box and mask AP and AP50 over the iterations).
//!
//! Exactness of `--resume`: the data order and augmentation depend only on (seed, epoch, index)
//! (`train::data::loader`), the `masks_to_train` subsample is drawn from a stream keyed by
//! (seed, iteration), the learning rate is a function of the iteration
//! ([`Schedule::lr_at`]), and the checkpoint holds the f32 weights, running statistics and
//! momentum buffers bit for bit. So a run stopped after iteration k and resumed computes the
//! same iterations k+1.. as the uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::data::{Loader, LoaderOptions, TrainSet};
use super::init::{initialise, trainable_params, Freeze, Init};
use super::loss::{multibox_loss, LossConfig};
use super::optim::sgd::check_finite_loss;
use super::optim::{checkpoint, Schedule, Sgd, TrainState};
use crate::config::YolactConfig;
use crate::engine::priors::priors_tensor;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::coco_eval::CocoStats;
use crate::eval::run::{coco_options, evaluate_engine, EvalSet};
use crate::model::{conv_sizes, TrainBn, Yolact};
use crate::weights::WeightStore;

/// The reference freezes batch norm when the per-device batch is below this (train.py sets `freeze_bn` when batch per GPU < 6).
pub const MIN_BATCH_FOR_BN: usize = 6;

/// What `yolact train` asks for.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The config to train (its class count and names are replaced by the data set's).
    pub config: YolactConfig,
    pub train_ann: PathBuf,
    pub train_images: PathBuf,
    pub init: Init,
    pub out: PathBuf,
    /// Iterations to run; None = the config's (scaled) `max_iter`.
    pub iters: Option<u64>,
    pub batch: usize,
    /// A base learning rate used as given (not scaled by the batch size).
    pub lr: Option<f64>,
    pub seed: u64,
    pub augment: bool,
    /// Continue from `out/latest.safetensors`.
    pub resume: bool,
    pub freeze: Freeze,
    pub save_every: u64,
    pub log_every: u64,
    pub workers: usize,
    pub device: Device,
    pub val: Option<Validation>,
}

/// A held-out set scored during training.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub ann: PathBuf,
    pub images: PathBuf,
    /// Score every this many iterations (0: only at the end).
    pub every: u64,
    /// At most this many images (in file-name order).
    pub max_images: Option<usize>,
}

/// One validation (a line of `val.jsonl`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ValLog {
    pub iteration: u64,
    pub bbox: CocoStats,
    pub segm: CocoStats,
    pub images: usize,
}

/// One logged iteration (a line of `train.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct IterLog {
    pub iteration: u64,
    pub epoch: u64,
    pub lr: f64,
    /// The loss terms under the reference's letters (B, M, C, I, S), in its order.
    pub terms: Vec<(String, f32)>,
    pub total: f32,
    pub images_per_s: f64,
    /// Set on the iterations that were validated.
    pub val: Option<ValLog>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every iteration ran; `final.safetensors` is written.
    Finished,
    /// Stopped by the caller's flag (Ctrl-C) after this many iterations; the state is saved.
    Interrupted { iteration: u64 },
}

/// A run's moving parts, before the first iteration.
struct Run {
    cfg: YolactConfig,
    store: WeightStore,
    model: Yolact,
    sgd: Sgd,
    start: TrainState,
}

pub fn latest_path(out: &Path) -> PathBuf {
    out.join("latest.safetensors")
}

/// Runs training; `stop` is polled between iterations; `on_log` sees every logged iteration
/// (the CLI's progress bar), `max_iter` is told first through `on_start`.
pub fn train(
    opts: &TrainOptions,
    stop: &AtomicBool,
    on_start: &mut dyn FnMut(u64, u64),
    on_log: &mut dyn FnMut(&IterLog),
) -> Result<Outcome> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let set = TrainSet::open(&opts.train_ann, &opts.train_images, &opts.config)?;
    let names = set.class_names().to_vec();
    let run = if opts.resume {
        resume(opts, &names)?
    } else {
        let name = opts.config.name.clone();
        let cfg = opts.config.clone().with_classes(&name, names);
        fresh(opts, cfg)?
    };
    let Run {
        cfg,
        store,
        mut model,
        mut sgd,
        start,
    } = run;
    let frozen_bn = frozen_bn(opts);
    model.set_train_bn(if frozen_bn {
        TrainBn::Frozen
    } else {
        TrainBn::Batch
    });
    let schedule = Schedule::new(&cfg.solver, opts.batch, opts.lr, opts.iters, true)?;
    let loss_cfg = LossConfig::for_config(&cfg);
    let priors = priors_tensor(
        &cfg,
        &conv_sizes(&cfg, cfg.max_size, cfg.max_size),
        &opts.device,
    )?;
    let loader_opts = LoaderOptions {
        batch: opts.batch,
        workers: opts.workers.max(1),
        seed: opts.seed,
        augment: opts.augment,
        start: (start.epoch, start.batch_in_epoch as usize),
    };
    let mut loader = Loader::new(Arc::new(set), loader_opts, opts.device.clone())?;
    // Read before the first iteration, so a bad path fails now and not hours in.
    let val_set = opts
        .val
        .as_ref()
        .map(|v| EvalSet::open(&v.ann, &v.images, v.max_images))
        .transpose()?;
    let val_path = opts.out.join("val.jsonl");
    let mut val_history = if opts.resume {
        read_val_history(&val_path)
    } else {
        let _ = std::fs::remove_file(&val_path);
        Vec::new()
    };
    on_start(start.iteration, schedule.max_iter);

    let log_path = opts.out.join("train.jsonl");
    if opts.resume {
        // A run killed after its last save logged iterations the resume will run again.
        truncate_log_after(&log_path, start.iteration)?;
        truncate_log_after(&val_path, start.iteration)?;
        val_history.retain(|v| v.iteration <= start.iteration);
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(opts.resume)
        .write(true)
        .truncate(!opts.resume)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let mut history = read_history(&log_path);

    let state_at = |it: u64, loader: &Loader| {
        let (epoch, pos) = loader.position();
        TrainState {
            iteration: it,
            epoch,
            batch_in_epoch: pos as u64,
            batch_size: opts.batch,
            seed: opts.seed,
        }
    };
    let mut timer = Instant::now();
    let mut timed = 0u64;
    let mut it = start.iteration;
    while it < schedule.max_iter {
        if stop.load(Ordering::Relaxed) {
            let state = state_at(it, &loader);
            checkpoint::save(
                &latest_path(&opts.out),
                &cfg,
                &store,
                Some(&sgd),
                Some(&state),
            )?;
            write_plot(&opts.out, &history)?;
            return Ok(Outcome::Interrupted { iteration: it });
        }
        let epoch = loader.position().0;
        let batch = loader
            .next()
            .ok_or_else(|| Error::Invalid("the loader ended".into()))?
            .map_err(|e| Error::Invalid(format!("iteration {it}: loading the batch: {e}")))?;
        let lr = schedule.lr_at(it);
        let out = model.forward_t(&batch.images, true)?;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ it.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let losses = multibox_loss(&model, &out, &priors, &batch.truths, &loss_cfg, &mut rng)
            .map_err(|e| Error::Invalid(format!("iteration {it}: loss: {e}")))?;
        let total = scalar(&losses.total)?;
        check_finite_loss(f64::from(total), it)?;
        let grads = losses.total.backward()?;
        sgd.step(&grads, lr, it)?;
        timed += 1;
        it += 1;

        let val = match (&val_set, &opts.val) {
            (Some(set), Some(v))
                if it == schedule.max_iter || (v.every > 0 && it % v.every == 0) =>
            {
                let t = Instant::now();
                let entry = validate(&store, &cfg, &opts.device, set, it)?;
                warn_dead_outputs(&store, &cfg, it)?;
                append_line(&val_path, &entry)?;
                val_history.push(entry.clone());
                write_map_plot(&opts.out, &val_history)?;
                // Validation time is not training time.
                timer += t.elapsed();
                Some(entry)
            }
            _ => None,
        };
        if val.is_some() || it % opts.log_every.max(1) == 0 || it == schedule.max_iter {
            let secs = timer.elapsed().as_secs_f64().max(1e-9);
            let entry = IterLog {
                iteration: it,
                epoch,
                lr,
                terms: losses
                    .terms()?
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                total,
                images_per_s: (timed * opts.batch as u64) as f64 / secs,
                val,
            };
            let line = serde_json::to_string(&entry_json(&entry))
                .map_err(|e| Error::Invalid(format!("log line: {e}")))?;
            writeln!(log, "{line}").map_err(|e| Error::io(&log_path, e))?;
            on_log(&entry);
            history.push(entry);
            timer = Instant::now();
            timed = 0;
        }
        if opts.save_every > 0 && it % opts.save_every == 0 && it < schedule.max_iter {
            let state = state_at(it, &loader);
            let p = opts.out.join(format!("iter_{it}.safetensors"));
            checkpoint::save(&p, &cfg, &store, Some(&sgd), Some(&state))?;
            checkpoint::save(
                &latest_path(&opts.out),
                &cfg,
                &store,
                Some(&sgd),
                Some(&state),
            )?;
            write_plot(&opts.out, &history)?;
        }
    }
    warn_dead_outputs(&store, &cfg, it)?;
    let state = state_at(it, &loader);
    checkpoint::save(
        &latest_path(&opts.out),
        &cfg,
        &store,
        Some(&sgd),
        Some(&state),
    )?;
    checkpoint::save(
        &opts.out.join("final.safetensors"),
        &cfg,
        &store,
        None,
        Some(&state),
    )?;
    write_plot(&opts.out, &history)?;
    Ok(Outcome::Finished)
}

/// Batch norm is frozen when the batch is small, as the reference does, except from scratch
/// (untrained statistics would stay untrained).
fn frozen_bn(opts: &TrainOptions) -> bool {
    opts.batch < MIN_BATCH_FOR_BN && opts.init != Init::Scratch
}

fn fresh(opts: &TrainOptions, cfg: YolactConfig) -> Result<Run> {
    let (store, model, report) = initialise(&cfg, &opts.init, opts.seed, &opts.device)?;
    log::info!(
        "initialised {}: {} tensors from the file, {} redrawn for the classes, {} file keys unused",
        cfg.name,
        report.loaded,
        report.reinitialised.len(),
        report.ignored.len()
    );
    let params = trainable_params(&store, &cfg, frozen_bn(opts), opts.freeze)?;
    let sgd = Sgd::from_solver(params, &cfg.solver);
    Ok(Run {
        cfg,
        store,
        model,
        sgd,
        start: TrainState {
            iteration: 0,
            epoch: 0,
            batch_in_epoch: 0,
            batch_size: opts.batch,
            seed: opts.seed,
        },
    })
}

fn resume(opts: &TrainOptions, names: &[String]) -> Result<Run> {
    let path = latest_path(&opts.out);
    let ck = checkpoint::load(&path)?;
    let state = ck
        .state
        .ok_or_else(|| Error::checkpoint(&path, "no training state to resume from"))?;
    if state.batch_size != opts.batch || state.seed != opts.seed {
        return Err(Error::Config(format!(
            "{} was made with --batch {} --seed {}; resume with the same (got {} and {})",
            path.display(),
            state.batch_size,
            state.seed,
            opts.batch,
            opts.seed
        )));
    }
    if ck.config.class_names.as_deref() != Some(names) {
        return Err(Error::Config(format!(
            "{}: its classes differ from the training set's",
            path.display()
        )));
    }
    let cfg = ck.config;
    let store = WeightStore::from_partial(ck.weights, &opts.device)?;
    let model = Yolact::load_train(store.vb(), &cfg)?;
    let params = trainable_params(&store, &cfg, frozen_bn(opts), opts.freeze)?;
    let mut sgd = Sgd::from_solver(params, &cfg.solver);
    sgd.load_state(ck.momentum)?;
    Ok(Run {
        cfg,
        store,
        model,
        sgd,
        start: state,
    })
}

/// Logs [`super::health::dead_maskiou_warning`] at validations and at the end (a class may not
/// have been in any batch yet in the first iterations).
fn warn_dead_outputs(store: &WeightStore, cfg: &YolactConfig, iteration: u64) -> Result<()> {
    let dead = super::health::dead_maskiou_classes(store, cfg)?;
    if let Some(w) = super::health::dead_maskiou_warning(&dead, iteration) {
        log::warn!("{w}");
    }
    Ok(())
}

/// Scores the current weights on `set` with the inference engine (batch norms folded, running
/// statistics), as `yolact eval` would score a checkpoint saved now.
fn validate(
    store: &WeightStore,
    cfg: &YolactConfig,
    device: &Device,
    set: &EvalSet,
    iteration: u64,
) -> Result<ValLog> {
    let engine = Engine::from_state_dict(store.to_state_dict()?, cfg.clone(), device)?;
    let out = evaluate_engine(&engine, set, &coco_options(), &mut |_, _| {})?;
    if let Some((path, e)) = out.failed.first() {
        return Err(Error::Invalid(format!(
            "validation at iteration {iteration}: {}: {e}",
            path.display()
        )));
    }
    Ok(ValLog {
        iteration,
        bbox: out.bbox,
        segm: out.segm,
        images: set.files.len(),
    })
}

fn append_line(path: &Path, entry: &ValLog) -> Result<()> {
    let line = serde_json::to_string(entry)
        .map_err(|e| Error::Invalid(format!("validation log line: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Drops the lines of a JSON-lines log whose `iteration` is beyond `iteration`.
fn truncate_log_after(path: &Path, iteration: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("iteration")?.as_u64())
                .is_none_or(|i| i <= iteration)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if kept.len() != text.len() {
        crate::bag::out_path::write_atomic(path, kept.as_bytes())
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// The validations of an earlier part of this run (for `map.png` after a resume).
fn read_val_history(path: &Path) -> Vec<ValLog> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?)
}

fn entry_json(e: &IterLog) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("iteration".into(), e.iteration.into());
    m.insert("epoch".into(), e.epoch.into());
    m.insert("lr".into(), e.lr.into());
    for (k, v) in &e.terms {
        m.insert(k.clone(), f64::from(*v).into());
    }
    m.insert("total".into(), f64::from(e.total).into());
    m.insert("images_per_s".into(), e.images_per_s.into());
    serde_json::Value::Object(m)
}

/// The logged iterations of an earlier part of this run (for the plot after a resume).
fn read_history(path: &Path) -> Vec<IterLog> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let o = v.as_object()?;
            let terms = ["B", "M", "C", "I", "S"]
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), o.get(*k)?.as_f64()? as f32)))
                .collect();
            Some(IterLog {
                iteration: o.get("iteration")?.as_u64()?,
                epoch: o.get("epoch")?.as_u64()?,
                lr: o.get("lr")?.as_f64()?,
                terms,
                total: o.get("total")?.as_f64()? as f32,
                images_per_s: o.get("images_per_s")?.as_f64()?,
                val: None,
            })
        })
        .collect()
}

/// `loss.png`: each term and the total over the logged iterations.
fn write_plot(out: &Path, history: &[IterLog]) -> Result<()> {
    use crate::replay::plot::{Panel, Series};
    let mut series = vec![Series {
        name: "total".into(),
        points: history
            .iter()
            .map(|e| (e.iteration as f64, f64::from(e.total)))
            .collect(),
    }];
    for k in ["B", "M", "C", "I", "S"] {
        let points: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|e| {
                let v = e.terms.iter().find(|(n, _)| n == k)?.1;
                Some((e.iteration as f64, f64::from(v)))
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                name: k.into(),
                points,
            });
        }
    }
    let panel = Panel {
        title: "Training loss".into(),
        x_label: "iteration".into(),
        series,
    };
    write_png(&out.join("loss.png"), (1000, 560), &[panel])
}

/// `map.png`: box and mask AP and AP50 of each validation.
fn write_map_plot(out: &Path, history: &[ValLog]) -> Result<()> {
    use crate::replay::plot::{Panel, Series};
    let line = |name: &str, f: &dyn Fn(&ValLog) -> f64| Series {
        name: name.into(),
        points: history.iter().map(|v| (v.iteration as f64, f(v))).collect(),
    };
    let panel = Panel {
        title: "Validation (COCO AP)".into(),
        x_label: "iteration".into(),
        series: vec![
            line("box AP", &|v| v.bbox.ap),
            line("mask AP", &|v| v.segm.ap),
            line("box AP50", &|v| v.bbox.ap50),
            line("mask AP50", &|v| v.segm.ap50),
        ],
    };
    write_png(&out.join("map.png"), (1000, 560), &[panel])
}

fn write_png(path: &Path, size: (u32, u32), panels: &[crate::replay::plot::Panel]) -> Result<()> {
    let img = crate::replay::plot::render(size, panels)?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("{}: encoding PNG: {e}", path.display())))?;
    crate::bag::out_path::write_atomic(path, bytes.get_ref()).map_err(|e| Error::io(path, e))
}
