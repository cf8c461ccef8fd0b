//! `--device cpu | cuda[:N] | auto` and `--half`, shared by every subcommand.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// CUDA device 0 when usable, else the CPU.
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--device `{s}`: expected cpu, cuda, cuda:N or auto"
            ))
        };
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>()
                    .map(DeviceChoice::Cuda)
                    .map_err(|_| bad())
            }
        }
    }
}

/// The device picked, the dtype the network runs in, and, for `auto` falling back to the CPU,
/// the reason (to be logged once).
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    pub dtype: DType,
    pub fallback_reason: Option<String>,
}

/// Resolves `choice` to a device. `half` asks for f16, which only the CUDA path supports: on the
/// CPU (asked for, or reached by `auto`) it is an error rather than a silent f32 run.
pub fn select_device(choice: DeviceChoice, half: bool) -> Result<Selected> {
    let (device, fallback_reason) = match choice {
        DeviceChoice::Cpu => (Device::Cpu, None),
        DeviceChoice::Cuda(n) => (
            open_cuda(n).map_err(|why| Error::Config(format!("--device cuda:{n}: {why}")))?,
            None,
        ),
        DeviceChoice::Auto => match open_cuda(0) {
            Ok(d) => (d, None),
            Err(why) => (Device::Cpu, Some(why)),
        },
    };
    if half && !device.is_cuda() {
        let why = fallback_reason
            .as_deref()
            .map(|r| format!(" (--device auto chose the CPU: {r})"))
            .unwrap_or_default();
        return Err(Error::Config(format!(
            "--half runs the network in f16, which needs a CUDA device; the CPU path is f32 only{why}"
        )));
    }
    Ok(Selected {
        device,
        dtype: if half { DType::F16 } else { DType::F32 },
        fallback_reason,
    })
}

/// Parses and resolves a device spec (`cpu`, `cuda`, `cuda:N`, `auto`) with `half`: the one
/// device resolution of every subcommand and the node. Logs once why `auto` chose the CPU.
pub fn resolve_device(spec: &str, half: bool) -> Result<Selected> {
    let sel = select_device(spec.parse()?, half)?;
    if let Some(why) = &sel.fallback_reason {
        log::info!("device auto: using the CPU ({why})");
    }
    Ok(sel)
}

/// Opens CUDA device `n`, or says why not.
fn open_cuda(n: usize) -> std::result::Result<Device, String> {
    if !candle_core::utils::cuda_is_available() {
        return Err("this binary was built without the `cuda` feature (rebuild with `--features cuda`, see README)".into());
    }
    // cudarc panics instead of returning an error for some driver-loading failures.
    match std::panic::catch_unwind(|| Device::new_cuda(n)) {
        Ok(Ok(d)) => {
            single_stream(&d);
            Ok(d)
        }
        Ok(Err(e)) => Err(format!(
            "no usable CUDA device: {}",
            first_line(&e.to_string())
        )),
        Err(p) => Err(format!(
            "the CUDA driver could not be loaded: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        )),
    }
}

/// Turns off cudarc's per-buffer event tracking on a CUDA device that only ever uses candle's one
/// stream. What cudarc 0.19.10 does (src/driver/safe/core.rs): while tracking is on (its
/// default), every `CudaStream::alloc` creates two events (`cuEventCreate`) for the new buffer,
/// destroyed with it; recording them (the `SyncOnDrop` guard of `device_ptr`/`device_ptr_mut`)
/// and waiting on them (`device_ptr`, `CudaSlice::drop`) happen only when
/// `is_managing_stream_synchronization()`, i.e. tracking is on *and* `num_streams > 0`, which only
/// `CudaContext::new_stream`/`new_stream_with_priority` and `CudaStream::fork` raise. candle's
/// `Device::new_cuda` uses the per-thread default stream and calls none of them, and neither do
/// we, so the events are never used: two driver calls per tensor for nothing, and, in a CUDA graph
/// capture, a latent hazard (should anything ever fork a stream, events recorded inside a capture
/// would be waited on outside it). With tracking off, buffers carry no events and the
/// record/wait paths are off for good. Safe by cudarc's own contract for
/// `disable_event_tracking`: one stream, so no cross-stream ordering to manage.
#[cfg(feature = "cuda")]
pub fn single_stream(device: &Device) {
    if let Device::Cuda(d) = device {
        if !d.cuda_stream().context().is_in_multi_stream_mode() {
            // SAFETY: see above; a device already in multi-stream mode keeps its tracking.
            unsafe { d.disable_event_tracking() };
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub fn single_stream(_device: &Device) {}

/// candle appends a backtrace to some errors when RUST_BACKTRACE is set; one line is enough here.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda3", "cuda:-1", "CPU"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn half_on_the_cpu_is_an_error() {
        let e = select_device(DeviceChoice::Cpu, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--half") && e.contains("CUDA"), "{e}");
        let s = select_device(DeviceChoice::Cpu, false).unwrap();
        assert!(s.device.is_cpu() && s.dtype == DType::F32 && s.fallback_reason.is_none());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_auto_falls_back_with_a_reason_and_cuda_fails() {
        let s = select_device(DeviceChoice::Auto, false).unwrap();
        assert!(s.device.is_cpu());
        assert!(s.fallback_reason.unwrap().contains("`cuda` feature"));
        let e = select_device(DeviceChoice::Cuda(0), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cuda` feature"), "{e}");
        let e = select_device(DeviceChoice::Auto, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("auto chose the CPU"), "{e}");
    }
}
