use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use yolact_ros2::weights;

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Input checkpoint: legacy or zip `.pth`, or safetensors.
    pub input: PathBuf,
    /// Output `.safetensors` file.
    pub output: PathBuf,
}

pub fn run(a: ConvertArgs) -> Result<ExitCode> {
    let sd = weights::load_checkpoint(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    match weights::detect_config(&sd, Some(&a.input)) {
        Ok(cfg) => {
            // Validate before writing, so a converted file is known to load.
            weights::prepare(sd.clone(), &cfg)
                .with_context(|| format!("checking {}", a.input.display()))?;
            eprintln!(
                "{}: {} tensors, config {}",
                a.input.display(),
                sd.len(),
                cfg.name
            );
        }
        Err(e) => log::warn!(
            "{}: not a YOLACT checkpoint I recognise ({e}); converting as is",
            a.input.display()
        ),
    }
    weights::save_safetensors(&sd, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {}", a.output.display());
    Ok(ExitCode::SUCCESS)
}
