//! CUDA graph capture of a fixed-shape forward pass, to replay it with one launch per frame
//! (experimental, unverified on a GPU: no GPU was at hand when it was written).
//!
//! Why it can work with candle 0.11 / cudarc 0.19 (read from their sources):
//! * candle allocates through cudarc, which uses `cuMemAllocAsync` / `cuMemFreeAsync` on candle's
//!   stream when the device has memory pools. Both are capturable: tensors made and dropped inside
//!   the capture become the graph's own alloc/free nodes. Without memory pools cudarc falls back
//!   to `cuMemAlloc` and a stream synchronize on free, which capture forbids, so
//!   [`capture`] refuses such a device up front.
//! * candle uploads small host data during ops (the dims/strides of non-contiguous layouts,
//!   small constants). Under `CudaDevice::enable_cuda_graph_htod_cache` it serves them from caches
//!   filled by an eager pass, and errors (rather than silently uploading) on a miss during
//!   capture; so we warm up under the same guard first, on the same thread (the cache is
//!   thread-local). The warm-up also loads every kernel module (candle's and our NVRTC ones) and
//!   lets cuBLAS set up its workspace, none of which may happen during capture.
//! * Any device-to-host read (`to_vec`, `to_scalar`) during capture is an error from candle, and a
//!   host synchronise invalidates the capture: both come back as an `Err` from [`capture`].
//! * cudarc's per-buffer event tracking (read from cudarc 0.19.10, src/driver/safe/core.rs): with
//!   tracking on, every allocation creates two events; they are recorded (the `device_ptr` guards'
//!   drop) and waited on (`device_ptr`, `CudaSlice::drop`) only while
//!   `is_managing_stream_synchronization()`, tracking on and more than zero streams made by
//!   `new_stream`/`fork`. candle's device runs on the per-thread default stream and makes none, so
//!   nothing records or waits today; but an event recorded inside the capture and waited on after
//!   it would break the replay (or the frees after it), so [`capture`] does not rely on that:
//!   it turns tracking off on the device ([`crate::cuda::device::single_stream`], also done when
//!   `--device` opens it) and refuses a device in multi-stream mode, where it cannot.
//! * The tensors the forward returns are allocated by the graph and not freed in it: the graph is
//!   instantiated with `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`, so each launch frees
//!   and re-creates them at the same addresses, which the kept output tensors point at. Their
//!   contents are therefore valid until the next launch.
//!
//! The input is one persistent buffer, captured by address; each frame is copied into it on the
//! same stream before the launch.

use std::str::FromStr;

use crate::error::{Error, Result};

/// `cuStreamBeginCapture` mode; `YOLACT_CUDA_GRAPH_MODE` = global | thread_local | relaxed
/// (default thread_local: any "unsafe" driver call from this thread during capture is an error,
/// calls from other threads are not affected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    Global,
    ThreadLocal,
    Relaxed,
}

impl FromStr for CaptureMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "global" => Ok(CaptureMode::Global),
            "thread_local" | "thread-local" => Ok(CaptureMode::ThreadLocal),
            "relaxed" => Ok(CaptureMode::Relaxed),
            _ => Err(Error::Config(format!(
                "YOLACT_CUDA_GRAPH_MODE=`{s}`: expected global, thread_local or relaxed"
            ))),
        }
    }
}

impl CaptureMode {
    pub const ENV: &'static str = "YOLACT_CUDA_GRAPH_MODE";

    /// From [`CaptureMode::ENV`], thread_local when unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(CaptureMode::ThreadLocal),
            Err(e) => Err(Error::Config(format!("{}: {e}", Self::ENV))),
        }
    }
}

#[cfg(feature = "cuda")]
pub use cuda_impl::{capture, GraphForward};

#[cfg(feature = "cuda")]
mod cuda_impl {
    use std::sync::Arc;

    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph, CudaStream};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{DType, Device, Shape, Tensor};

    use super::CaptureMode;
    use crate::error::{Error, Result};

    /// A captured forward pass: its graph, its input buffer and its output tensors. Not `Send`:
    /// replay it from the thread that captured it.
    pub struct GraphForward {
        graph: CudaGraph,
        outputs: Vec<Tensor>,
        input: Tensor,
        stream: Arc<CudaStream>,
    }

    fn graph_err(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Candle(candle_core::Error::Msg(format!("CUDA graph: {what}: {e}")))
    }

    /// Captures `forward` on an input of `shape` and `dtype`, after `warmup` (at least one) eager
    /// runs on the same buffer. Every failure (the device, the warm-up, anything the capture
    /// refuses, instantiation, the first replay) is an `Err` saying what failed; the device stays
    /// usable for eager work afterwards.
    pub fn capture<F>(
        device: &Device,
        shape: impl Into<Shape>,
        dtype: DType,
        warmup: usize,
        mode: CaptureMode,
        forward: F,
    ) -> Result<GraphForward>
    where
        F: Fn(&Tensor) -> candle_core::Result<Vec<Tensor>>,
    {
        let Device::Cuda(dev) = device else {
            return Err(Error::Config(
                "CUDA graph capture needs a CUDA device (--device cuda)".into(),
            ));
        };
        let stream = dev.cuda_stream();
        if !stream.context().has_async_alloc() {
            return Err(graph_err(
                "unsupported device",
                "it has no memory pools, so cudarc allocates with cuMemAlloc, which stream capture forbids",
            ));
        }
        crate::cuda::device::single_stream(device);
        if dev.is_event_tracking() && stream.context().is_in_multi_stream_mode() {
            return Err(graph_err(
                "unsupported device",
                "its context has extra streams, so cudarc records and waits on per-buffer events, \
                 which would tie the graph to events recorded during the capture",
            ));
        }
        let input = Tensor::zeros(shape, dtype, device)?;
        let _cache = dev.enable_cuda_graph_htod_cache();
        for _ in 0..warmup.max(1) {
            drop(forward(&input).map_err(|e| graph_err("eager warm-up failed", e))?);
        }
        stream.synchronize().w()?;

        stream
            .begin_capture(mode.sys())
            .map_err(|e| graph_err("cuStreamBeginCapture", e))?;
        let captured = forward(&input);
        let status = stream.capture_status();
        let captured = match (captured, status) {
            (Ok(outs), Ok(sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE)) => Ok(outs),
            (Ok(outs), st) => {
                // Dropped while still capturing, so their frees go to the discarded capture.
                drop(outs);
                Err(graph_err(
                    "the capture was invalidated (something synchronised or used a forbidden call)",
                    format!("{st:?}"),
                ))
            }
            (Err(e), _) => Err(graph_err("the forward failed during capture", e)),
        };
        let ended = stream.end_capture(
            sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
        );
        let result = match (captured, ended) {
            (Ok(outputs), Ok(Some(graph))) => Ok((outputs, graph)),
            (Ok(_), Ok(None)) => Err(graph_err("end capture", "the captured graph is empty")),
            (Ok(_), Err(e)) => Err(graph_err("cuStreamEndCapture / cuGraphInstantiate", e)),
            (Err(e), _) => Err(e),
        };
        let (outputs, graph) = match result {
            Ok(v) => v,
            Err(e) => {
                recover(&stream);
                return Err(e);
            }
        };
        // Surface launch errors here rather than in the first timed frame.
        let checked = graph
            .upload()
            .and_then(|_| graph.launch())
            .and_then(|_| stream.synchronize());
        if let Err(e) = checked {
            drop(graph);
            drop(outputs);
            recover(&stream);
            return Err(graph_err("first replay", e));
        }
        Ok(GraphForward {
            graph,
            outputs,
            input,
            stream,
        })
    }

    /// After a failed capture: wait for the stream and drop the errors that cudarc recorded from
    /// `Drop`s (e.g. frees of addresses from the discarded capture), which it would otherwise
    /// report on the next, unrelated call.
    fn recover(stream: &Arc<CudaStream>) {
        let _ = stream.synchronize();
        if let Err(e) = stream.context().check_err() {
            log::debug!("CUDA graph: cleared an error recorded during the failed capture: {e}");
        }
    }

    impl GraphForward {
        /// Copies `x` into the captured input buffer (on the stream, ahead of the next launch).
        pub fn set_input(&self, x: &Tensor) -> Result<()> {
            if x.dims() != self.input.dims() || x.dtype() != self.input.dtype() {
                return Err(Error::Invalid(format!(
                    "CUDA graph captured for a {:?} {:?} input, got {:?} {:?}",
                    self.input.dims(),
                    self.input.dtype(),
                    x.dims(),
                    x.dtype()
                )));
            }
            self.input.slice_set(&x.contiguous()?, 0, 0)?;
            Ok(())
        }

        /// Replays the graph on the current input. The returned tensors are overwritten by the
        /// next launch: read them (or `copy()` them) before.
        pub fn launch(&self) -> Result<&[Tensor]> {
            self.graph
                .launch()
                .map_err(|e| graph_err("cuGraphLaunch", e))?;
            Ok(&self.outputs)
        }

        /// [`GraphForward::set_input`] then [`GraphForward::launch`].
        pub fn run(&self, x: &Tensor) -> Result<&[Tensor]> {
            self.set_input(x)?;
            self.launch()
        }

        pub fn input_dims(&self) -> &[usize] {
            self.input.dims()
        }

        /// Waits for the last launch.
        pub fn synchronize(&self) -> Result<()> {
            Ok(self.stream.synchronize().w()?)
        }
    }

    impl CaptureMode {
        fn sys(self) -> sys::CUstreamCaptureMode {
            match self {
                CaptureMode::Global => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL,
                CaptureMode::ThreadLocal => {
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
                }
                CaptureMode::Relaxed => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_modes_parse_and_bad_ones_are_named() {
        assert_eq!(
            "global".parse::<CaptureMode>().unwrap(),
            CaptureMode::Global
        );
        assert_eq!(
            "thread_local".parse::<CaptureMode>().unwrap(),
            CaptureMode::ThreadLocal
        );
        assert_eq!(
            " Relaxed ".parse::<CaptureMode>().unwrap(),
            CaptureMode::Relaxed
        );
        let e = "eager".parse::<CaptureMode>().unwrap_err().to_string();
        assert!(e.contains("eager") && e.contains(CaptureMode::ENV), "{e}");
    }
}
