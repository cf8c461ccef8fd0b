//! The model's two lives in a managed node: host weights (read and validated at configure) and
//! the device engine (built from them at configure/activate, dropped at deactivate so the GPU
//! memory is freed while the node is inactive).

use candle_core::{DType, Device};

use crate::config::YolactConfig;
use crate::cuda::{select_device, DeviceChoice};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::weights::{self, StateDict};

/// Config used for `synthetic` weights when `config` is empty.
pub const SYNTHETIC_DEFAULT_CONFIG: &str = "yolact_resnet50";

/// A checkpoint read into host memory, with its config.
pub struct HostWeights {
    pub state_dict: StateDict,
    pub config: YolactConfig,
    /// Where the weights came from, for logs and diagnostics.
    pub source: String,
}

impl HostWeights {
    /// `weights` is a checkpoint path or `synthetic[:SEED]`; `config` empty = detect.
    pub fn load(weights: &str, config: &str) -> Result<Self> {
        if let Some(rest) = weights.strip_prefix("synthetic") {
            let seed = match rest.strip_prefix(':') {
                Some(s) => s.parse::<u64>().map_err(|_| {
                    Error::Parameter(format!(
                        "`weights`: bad seed `{s}` in synthetic:SEED (expected an unsigned integer)"
                    ))
                })?,
                None if rest.is_empty() => crate::weights::synth::DEFAULT_SEED,
                None => {
                    return Err(Error::Parameter(format!(
                        "`weights`: \"{weights}\" is neither a file nor `synthetic[:SEED]`"
                    )))
                }
            };
            let name = if config.is_empty() {
                SYNTHETIC_DEFAULT_CONFIG
            } else {
                config
            };
            let cfg = YolactConfig::by_name(name)?;
            let sd = crate::weights::synth::synth_state_dict(&cfg, seed)?;
            return Ok(HostWeights {
                state_dict: sd,
                config: cfg,
                source: format!("synthetic:{seed}"),
            });
        }
        let path = std::path::Path::new(weights);
        if !path.exists() {
            return Err(Error::Parameter(format!(
                "`weights`: file {weights} does not exist"
            )));
        }
        let sd = weights::load_checkpoint(path)?;
        let cfg = if config.is_empty() {
            weights::detect_config(&sd, Some(path))?
        } else {
            YolactConfig::by_name(config)?
        };
        Ok(HostWeights {
            state_dict: sd,
            config: cfg,
            source: weights.to_string(),
        })
    }

    /// Builds the engine on `device` in `dtype`. The state dict's tensors are shared, not copied.
    pub fn build(&self, device: &Device, dtype: DType) -> Result<Engine> {
        Engine::from_state_dict_dtype(self.state_dict.clone(), self.config.clone(), device, dtype)
    }
}

/// Resolves the `device` and `fp16` parameters: `auto`, `cpu`, `cuda` or `cuda:N`; f16 needs a
/// CUDA device. `auto` without a usable GPU logs why once and runs on the CPU.
pub fn resolve_device(s: &str, fp16: bool) -> Result<(Device, DType)> {
    let choice: DeviceChoice = s.parse().map_err(|_| {
        Error::Parameter(format!(
            "`device`: \"{s}\" is not one of: auto, cpu, cuda, cuda:N"
        ))
    })?;
    let sel = select_device(choice, fp16).map_err(|e| {
        let which = if fp16 { "`device`/`fp16`" } else { "`device`" };
        Error::Parameter(format!("{which}: {e}"))
    })?;
    if let Some(why) = &sel.fallback_reason {
        log::info!("device auto: using the CPU ({why})");
    }
    Ok((sel.device, sel.dtype))
}

/// `cpu` or `cuda:N`, for diagnostics.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match d.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        Device::Metal(_) => "metal".into(),
    }
}
