//! `yolact config`: print a config as JSON, the starting point of a custom one for
//! `yolact train --config FILE.json`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use yolact_ros2::config::YolactConfig;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// A built-in config name (or a config JSON file, printed back checked).
    #[arg(value_name = "NAME|FILE.json")]
    pub config: String,
}

pub fn run(a: ConfigArgs) -> Result<ExitCode> {
    let cfg = YolactConfig::resolve(&a.config).with_context(|| format!("config {}", a.config))?;
    let value: serde_json::Value = serde_json::from_str(&cfg.to_json()?)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}
