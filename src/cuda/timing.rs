//! Measuring a frame on the GPU: stage boundaries as CUDA events and the peak device memory.
//!
//! The pure parts (unit conversion, the memory report) are compiled always so they are tested
//! on machines without a GPU; [`EventClock`] and the driver queries of [`GpuMemMeter`] need the
//! `cuda` feature.
//!
//! What an event-timed stage means: an event recorded on candle's stream completes when the GPU
//! has finished everything queued before it, but never before the host recorded it. So the time
//! between two boundary events is the stage's share of the frame's critical path, whether the
//! stage ran on the GPU (kernel time plus launch gaps), on the host (e.g. the host side of NMS and
//! mask assembly, after a device-to-host copy), or both. Stage times add up to the frame's time
//! from the first boundary to the last, with no synchronisation between stages; the host waits
//! once, at the end of the frame.

use std::time::Duration;

use candle_core::Device;

use crate::error::Result;

/// A duration from an event difference in milliseconds. Event differences are never negative on
/// one stream, but a driver oddity (or an unrecorded event) must not panic a benchmark: anything
/// negative or not finite is zero.
pub fn duration_from_ms(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::try_from_secs_f64(ms / 1e3).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

/// Bytes in MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Where a peak-memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemSource {
    /// candle allocates every tensor with `cuMemAllocAsync` from the device's current memory pool
    /// (cudarc does when the device supports memory pools): the pool's used-memory high-water mark
    /// since the reset, plus the graph memory pool's when a CUDA graph allocated. Tensors only
    /// (weights and activations): not the CUDA context, module code or cuBLAS's workspace.
    PoolHighWater,
    /// No memory pools (cudarc falls back to `cuMemAlloc`): device memory in use
    /// (`cuMemGetInfo` total - free) sampled after each frame, maximum. Includes the context,
    /// cuBLAS's workspace and any other process on the GPU.
    DeviceUsed,
}

impl MemSource {
    /// Stable name for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MemSource::PoolHighWater => "mempool_used_high",
            MemSource::DeviceUsed => "device_used_max",
        }
    }

    /// One line for the table.
    pub fn describe(self) -> &'static str {
        match self {
            MemSource::PoolHighWater => {
                "tensor memory: CUDA memory-pool used high-water mark (+ graph pool), since warm-up"
            }
            MemSource::DeviceUsed => {
                "device memory in use (cuMemGetInfo), max over the timed frames, whole GPU"
            }
        }
    }
}

/// Peak device memory over the timed frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemReport {
    /// The figure to report, per [`MemReport::source`].
    pub peak_bytes: u64,
    pub source: MemSource,
    /// `cuMemGetInfo` total - free, maximum after each frame: always sampled, for context (it
    /// counts everything on the GPU, other processes included).
    pub device_used_max_bytes: u64,
}

impl MemReport {
    /// Combines the readings: pool-based when the device allocates from memory pools, else the
    /// device-used samples.
    pub fn from_readings(
        pool_high: Option<u64>,
        graph_high: u64,
        device_used_max_bytes: u64,
    ) -> MemReport {
        match pool_high {
            Some(p) => MemReport {
                // The two high-water marks need not be simultaneous: their sum bounds the peak.
                peak_bytes: p.saturating_add(graph_high),
                source: MemSource::PoolHighWater,
                device_used_max_bytes,
            },
            None => MemReport {
                peak_bytes: device_used_max_bytes,
                source: MemSource::DeviceUsed,
                device_used_max_bytes,
            },
        }
    }
}

/// Tracks peak GPU memory across frames: [`GpuMemMeter::for_device`] after warm-up (it resets the
/// high-water marks), [`GpuMemMeter::sample`] after each timed frame, [`GpuMemMeter::report`] at
/// the end. `None` on the CPU.
pub struct GpuMemMeter {
    #[cfg(feature = "cuda")]
    inner: cuda_impl::Meter,
    #[cfg(not(feature = "cuda"))]
    _never: std::convert::Infallible,
}

impl GpuMemMeter {
    pub fn for_device(device: &Device) -> Result<Option<GpuMemMeter>> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = device {
            return Ok(Some(GpuMemMeter {
                inner: cuda_impl::Meter::new(dev)?,
            }));
        }
        let _ = device;
        Ok(None)
    }

    /// Takes one `cuMemGetInfo` reading (call after each frame, outside the timed region).
    pub fn sample(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        return self.inner.sample();
        #[cfg(not(feature = "cuda"))]
        match self._never {}
    }

    pub fn report(&self) -> Result<MemReport> {
        #[cfg(feature = "cuda")]
        return self.inner.report();
        #[cfg(not(feature = "cuda"))]
        match self._never {}
    }
}

#[cfg(feature = "cuda")]
pub use cuda_impl::EventClock;

#[cfg(feature = "cuda")]
mod cuda_impl {
    use std::sync::Arc;
    use std::time::Duration;

    use candle_core::cuda_backend::cudarc::driver::{
        result, sys, CudaContext, CudaEvent, CudaStream, DriverError,
    };
    use candle_core::cuda_backend::WrapErr;
    use candle_core::CudaDevice;

    use super::{duration_from_ms, MemReport};
    use crate::error::Result;

    /// Stage boundaries of one frame as timing events on candle's stream. Recording is
    /// asynchronous; [`EventClock::finish`] waits once for the last event.
    pub struct EventClock {
        stream: Arc<CudaStream>,
        events: Vec<CudaEvent>,
    }

    impl EventClock {
        /// Records the frame's start.
        pub fn start(dev: &CudaDevice) -> Result<Self> {
            let stream = dev.cuda_stream();
            let first = record(&stream)?;
            let mut events = Vec::with_capacity(12);
            events.push(first);
            Ok(EventClock { stream, events })
        }

        /// Records a stage boundary.
        pub fn mark(&mut self) -> Result<()> {
            let e = record(&self.stream)?;
            self.events.push(e);
            Ok(())
        }

        /// The time of each boundary since the start, in order; waits for the last one.
        pub fn finish(self) -> Result<Vec<Duration>> {
            let Some((first, rest)) = self.events.split_first() else {
                return Ok(Vec::new());
            };
            if let Some(last) = rest.last() {
                last.synchronize().w()?;
            }
            rest.iter()
                .map(|e| Ok(duration_from_ms(f64::from(first.elapsed_ms(e).w()?))))
                .collect()
        }
    }

    /// A timing-enabled event recorded on `stream` (cudarc's default disables timing).
    fn record(stream: &Arc<CudaStream>) -> Result<CudaEvent> {
        Ok(stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .w()?)
    }

    pub(super) struct Meter {
        ctx: Arc<CudaContext>,
        /// The pool `cuMemAllocAsync` draws from, when the device has memory pools and its
        /// statistics could be reset.
        pool: Option<sys::CUmemoryPool>,
        /// Whether the graph memory pool's high-water mark could be reset (and so is read).
        graph_stats: bool,
        device_used_max: u64,
    }

    impl Meter {
        /// Resets the high-water marks. A driver that refuses a statistics call costs that figure
        /// (with a warning), not the benchmark.
        pub(super) fn new(dev: &CudaDevice) -> Result<Self> {
            let ctx = dev.cuda_stream().context().clone();
            ctx.bind_to_thread().w()?;
            let pool = if ctx.has_async_alloc() {
                match reset_pool(&ctx) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        log::warn!("memory-pool statistics unavailable ({e}); peak GPU memory falls back to cuMemGetInfo");
                        None
                    }
                }
            } else {
                None
            };
            // Graph allocations (`--cuda-graph`) live in a separate per-device pool.
            let mut zero: u64 = 0;
            // SAFETY: a valid device of the bound context; the attribute takes a u64 by pointer.
            let graph_stats = unsafe {
                sys::cuDeviceSetGraphMemAttribute(
                    ctx.cu_device(),
                    sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                    (&mut zero as *mut u64).cast(),
                )
            }
            .result();
            if let Err(e) = &graph_stats {
                log::warn!(
                    "graph-memory statistics unavailable ({e}); not counted in peak GPU memory"
                );
            }
            Ok(Meter {
                ctx,
                pool,
                graph_stats: graph_stats.is_ok(),
                device_used_max: 0,
            })
        }

        pub(super) fn sample(&mut self) -> Result<()> {
            let (free, total) = self.ctx.mem_get_info().w()?;
            self.device_used_max = self.device_used_max.max(total.saturating_sub(free) as u64);
            Ok(())
        }

        pub(super) fn report(&self) -> Result<MemReport> {
            self.ctx.bind_to_thread().w()?;
            let pool_high = match self.pool {
                Some(p) => {
                    let mut v: u64 = 0;
                    // SAFETY: `p` is the device's pool from reset_pool; the attribute is a u64.
                    unsafe {
                        result::mem_pool::get_attribute(
                            p,
                            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                            (&mut v as *mut u64).cast(),
                        )
                    }
                    .w()?;
                    Some(v)
                }
                None => None,
            };
            let mut graph_high: u64 = 0;
            if self.graph_stats {
                // SAFETY: a valid device of the bound context; the attribute is a u64.
                unsafe {
                    sys::cuDeviceGetGraphMemAttribute(
                        self.ctx.cu_device(),
                        sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                        (&mut graph_high as *mut u64).cast(),
                    )
                }
                .result()
                .w()?;
            }
            Ok(MemReport::from_readings(
                pool_high,
                graph_high,
                self.device_used_max,
            ))
        }
    }

    /// The pool `cuMemAllocAsync` draws from, its high-water marks reset. That is the device's
    /// *current* pool (the default one unless someone called cuDeviceSetMemPool).
    fn reset_pool(ctx: &CudaContext) -> std::result::Result<sys::CUmemoryPool, DriverError> {
        // SAFETY: a valid device of this context.
        let p = unsafe { result::device::get_mem_pool(ctx.cu_device()) }?;
        let mut zero: u64 = 0;
        for attr in [
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        ] {
            // A high-water mark can only be reset, by writing 0.
            // SAFETY: `p` is a live pool; the attribute takes a u64 by pointer.
            unsafe { result::mem_pool::set_attribute(p, attr, (&mut zero as *mut u64).cast()) }?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_milliseconds_become_durations_and_oddities_become_zero() {
        assert_eq!(duration_from_ms(1.5), Duration::from_micros(1500));
        assert_eq!(duration_from_ms(0.0005), Duration::from_nanos(500));
        for bad in [-0.25, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(duration_from_ms(bad), Duration::ZERO, "{bad}");
        }
        assert_eq!(duration_from_ms(f64::INFINITY), Duration::ZERO);
        assert_eq!(duration_from_ms(1e300), Duration::MAX);
    }

    #[test]
    fn the_pool_figure_adds_the_graph_pool_and_falls_back_to_device_used() {
        let r = MemReport::from_readings(Some(300 << 20), 100 << 20, 2 << 30);
        assert_eq!(r.source, MemSource::PoolHighWater);
        assert_eq!(r.peak_bytes, 400 << 20);
        assert_eq!(mib(r.peak_bytes), 400.0);
        assert_eq!(r.device_used_max_bytes, 2 << 30);
        let r = MemReport::from_readings(None, 0, 5 << 30);
        assert_eq!(r.source, MemSource::DeviceUsed);
        assert_eq!(r.peak_bytes, 5 << 30);
        let r = MemReport::from_readings(Some(u64::MAX), 1, 0);
        assert_eq!(r.peak_bytes, u64::MAX);
        assert_ne!(
            MemSource::PoolHighWater.as_str(),
            MemSource::DeviceUsed.as_str()
        );
    }

    #[test]
    fn there_is_no_meter_on_the_cpu() {
        assert!(GpuMemMeter::for_device(&Device::Cpu).unwrap().is_none());
    }
}
