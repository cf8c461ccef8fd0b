//! NVRTC compilation of [`super::sources`] for the device's architecture (once per process and
//! architecture) and per-device module loading through candle's custom-module cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, Layout, Result};

use super::sources::KernelSource;

type PtxCache = Mutex<HashMap<(&'static str, i32, i32), Arc<String>>>;

fn ptx_cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// (major, minor) compute capability of `dev`, queried once per device (every launch asks).
pub fn compute_capability(dev: &CudaDevice) -> Result<(i32, i32)> {
    type CcCache = Mutex<HashMap<candle_core::cuda_backend::DeviceId, (i32, i32)>>;
    static CC: OnceLock<CcCache> = OnceLock::new();
    let cache = CC.get_or_init(|| Mutex::new(HashMap::new()));
    let poisoned = || candle_core::Error::Msg("compute capability cache poisoned".into());
    if let Some(cc) = cache.lock().map_err(|_| poisoned())?.get(&dev.id()) {
        return Ok(*cc);
    }
    let cc = dev.cuda_stream().context().compute_capability().w()?;
    cache.lock().map_err(|_| poisoned())?.insert(dev.id(), cc);
    Ok(cc)
}

/// PTX of `src` for `compute_{major}{minor}`. NVRTC needs no GPU, so this also runs in tests.
pub fn compile(src: &KernelSource, cc: (i32, i32)) -> Result<String> {
    let mut options: Vec<String> = KernelSource::nvrtc_options()
        .iter()
        .map(|s| s.to_string())
        .collect();
    options.push(format!("--gpu-architecture=compute_{}{}", cc.0, cc.1));
    let opts = CompileOptions {
        options,
        name: Some(format!("{}.cu", src.module)),
        ..Default::default()
    };
    match compile_ptx_with_opts(src.full_source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => bail!(
            "NVRTC failed on {} for compute_{}{}: {e:?}",
            src.module,
            cc.0,
            cc.1
        ),
    }
}

/// Kernel `entry` of `src`, compiled for `dev` on first use.
pub fn func(dev: &CudaDevice, src: &KernelSource, entry: &str) -> Result<CudaFunction> {
    let cc = compute_capability(dev)?;
    let key = (src.module, cc.0, cc.1);
    let cached = ptx_cache()
        .lock()
        .map_err(|_| candle_core::Error::Msg("PTX cache poisoned".into()))?
        .get(&key)
        .cloned();
    let ptx = match cached {
        Some(p) => p,
        None => {
            let p = Arc::new(compile(src, cc)?);
            ptx_cache()
                .lock()
                .map_err(|_| candle_core::Error::Msg("PTX cache poisoned".into()))?
                .insert(key, p.clone());
            p
        }
    };
    let module = format!("{}_sm{}{}", src.module, cc.0, cc.1);
    Ok(dev
        .get_or_load_custom_func(entry, &module, &ptx)?
        .into_cuda_function())
}

/// The contiguous range of `slice` that `layout` describes.
pub fn contiguous_view<'a, T>(
    slice: &'a CudaSlice<T>,
    layout: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{what}: the CUDA kernel needs a contiguous input"),
    }
}
