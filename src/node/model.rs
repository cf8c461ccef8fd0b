//! The model's two lives in a managed node: host weights (read and validated at configure) and
//! the device engine (built from them at configure/activate, dropped at deactivate so the GPU
//! memory is freed while the node is inactive).

use candle_core::{DType, Device};

use crate::error::{Error, Result};
pub use crate::weights::source::HostWeights;

/// Loads the `weights` / `config` parameters (`config` "" = detect), naming the parameter in
/// errors.
pub fn load_host_weights(weights: &str, config: &str) -> Result<HostWeights> {
    let config = (!config.is_empty()).then_some(config);
    HostWeights::load(weights, config).map_err(|e| match e {
        Error::Parameter(m) => Error::Parameter(format!("`weights`: {m}")),
        other => other,
    })
}

/// Resolves the `device` and `fp16` parameters: `auto`, `cpu`, `cuda` or `cuda:N`; f16 needs a
/// CUDA device. `auto` without a usable GPU logs why once and runs on the CPU.
pub fn resolve_device(s: &str, fp16: bool) -> Result<(Device, DType)> {
    let sel = crate::cuda::resolve_device(s, fp16).map_err(|e| {
        let which = if fp16 { "`device`/`fp16`" } else { "`device`" };
        Error::Parameter(format!("{which}: {e}"))
    })?;
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
