//! `yolact train`: train or fine-tune on a COCO-format data set (the loop is
//! `yolact_ros2::train::trainer`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use yolact_ros2::config::YolactConfig;
use yolact_ros2::train::init::{Freeze, Init};
use yolact_ros2::train::trainer::{self, IterLog, Outcome, TrainOptions, Validation};

/// Exit status after Ctrl-C (128 + SIGINT), the state saved.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes into --out: latest.safetensors (full state, what --resume reads), \
iter_N.safetensors every --save-every iterations, final.safetensors at the end (loadable by infer, \
replay, eval, bench and the node with no --config: the config and class names travel inside), \
train.jsonl (one line per logged iteration) and loss.png; with --val also val.jsonl and map.png.\n\nCtrl-C saves latest.safetensors and \
exits with status 130."
)]
pub struct TrainArgs {
    /// The config to train: a built-in name (yolact_base, yolact_resnet50, yolact_darknet53,
    /// yolact_im700, yolact_plus_base, yolact_plus_resnet50, yolact_plus_mini) or a config JSON
    /// file (`yolact config NAME` prints one to edit: backbone depth and width, input size, prior
    /// scales). The class count and names come from the training set.
    #[arg(long, value_name = "NAME|FILE.json")]
    pub config: String,
    /// Training set: a COCO instances JSON and its image folder, as ANN.json:IMAGES_DIR.
    #[arg(long, value_name = "ANN.json:IMAGES_DIR")]
    pub train: String,
    /// Initial weights: an ImageNet backbone file (resnet50-19c8e357.pth, resnet101_reducedfc.pth,
    /// darknet53.pth), a YOLACT checkpoint (fine-tuning; class-dependent layers are redrawn when
    /// the class count differs), or `scratch`. Not needed with --resume.
    #[arg(long, value_name = "W|scratch", required_unless_present = "resume")]
    pub init: Option<String>,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Iterations to run (default: the config's 800k, scaled by 8 / batch).
    #[arg(long, value_name = "N")]
    pub iters: Option<u64>,
    /// Images per iteration. Below 6, batch norm is frozen (as the reference), unless from scratch.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch: usize,
    /// Base learning rate, used as given (default: the config's 1e-3 times batch / 8).
    #[arg(long, value_name = "F")]
    pub lr: Option<f64>,
    /// Seed of the initialisation, the data order and the augmentation.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// cpu, cuda[:N] or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Only the reference's Resize (no SSDAugmentation).
    #[arg(long)]
    pub no_augment: bool,
    /// Continue from DIR/latest.safetensors exactly where it stopped (same --batch and --seed).
    #[arg(long)]
    pub resume: bool,
    /// Leave the backbone (`backbone`) or its stem and first N stages untrained.
    #[arg(long, value_name = "backbone|N")]
    pub freeze: Option<String>,
    /// Save a checkpoint every N iterations (0 = only at the end and on Ctrl-C).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub save_every: u64,
    /// Log (train.jsonl, progress bar) every N iterations.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub log_every: u64,
    /// Data loading threads.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub workers: usize,
    /// Validation set, as ANN.json:IMAGES_DIR: box and mask COCO AP every --val-every
    /// iterations and at the end (val.jsonl, map.png).
    #[arg(long, value_name = "ANN.json:IMAGES_DIR")]
    pub val: Option<String>,
    /// Validate every N iterations (0 = only at the end).
    #[arg(long, default_value_t = 2_000, value_name = "N", requires = "val")]
    pub val_every: u64,
    /// Validate on at most N images of the set.
    #[arg(long, value_name = "N", requires = "val")]
    pub val_images: Option<usize>,
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    let (ann, images) = split_set(&a.train)?;
    let init = match (&a.init, a.resume) {
        (Some(w), _) => Init::from_arg(w).with_context(|| format!("--init {w}"))?,
        (None, true) => Init::Scratch, // unused: the state comes from the checkpoint
        (None, false) => bail!("--init is required (or --resume)"),
    };
    let freeze = match &a.freeze {
        Some(f) => Freeze::parse(f)?,
        None => Freeze::None,
    };
    let sel = super::select(&a.device, false)?;
    let opts = TrainOptions {
        config: YolactConfig::resolve(&a.config)
            .with_context(|| format!("--config {}", a.config))?,
        train_ann: ann,
        train_images: images,
        init,
        out: a.out.clone(),
        iters: a.iters,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        augment: !a.no_augment,
        resume: a.resume,
        freeze,
        save_every: a.save_every,
        log_every: a.log_every,
        workers: a.workers,
        device: sel.device,
        val: a
            .val
            .as_deref()
            .map(split_set)
            .transpose()?
            .map(|(ann, images)| Validation {
                ann,
                images,
                every: a.val_every,
                max_images: a.val_images,
            }),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let flag = stop.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: leaving without saving");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            eprintln!("\ninterrupted: saving after this iteration (interrupt again to abort)");
        })
        .context("installing the signal handler")?;
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {pos}/{len} it  {msg}  ETA {eta}  {elapsed_precise}",
    ) {
        pb.set_style(style);
    }
    let outcome = trainer::train(
        &opts,
        &stop,
        &mut |start, max| {
            pb.set_length(max);
            pb.set_position(start);
        },
        &mut |e: &IterLog| {
            pb.set_position(e.iteration);
            pb.set_message(message(e));
            if let Some(v) = &e.val {
                pb.println(format!(
                    "iteration {}: validation on {} images: box AP {:.3} (AP50 {:.3}), mask AP {:.3} (AP50 {:.3})",
                    v.iteration, v.images, v.bbox.ap, v.bbox.ap50, v.segm.ap, v.segm.ap50
                ));
            }
        },
    );
    pb.finish_and_clear();
    match outcome.context("training")? {
        Outcome::Finished => {
            println!("done: {}", a.out.join("final.safetensors").display());
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted { iteration } => {
            eprintln!(
                "stopped at iteration {iteration}; state saved to {} (--resume continues)",
                trainer::latest_path(&a.out).display()
            );
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    }
}

fn message(e: &IterLog) -> String {
    let terms: Vec<String> = e.terms.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    format!(
        "{}  total {:.3}  lr {:.2e}  {:.1} img/s",
        terms.join(" "),
        e.total,
        e.lr,
        e.images_per_s
    )
}

/// `ANN.json:IMAGES_DIR`, split at the last colon.
pub fn split_set(s: &str) -> Result<(PathBuf, PathBuf)> {
    match s.rsplit_once(':') {
        Some((a, i)) if !a.is_empty() && !i.is_empty() => Ok((a.into(), i.into())),
        _ => bail!("expected ANN.json:IMAGES_DIR, got `{s}`"),
    }
}
