//! NVRTC compilation of [`super::sources`] for the device's architecture, or the highest one the
//! linked NVRTC supports below it (once per process and architecture), and per-device module
//! loading through candle's custom-module cache. Errors name the module and kernel and carry
//! NVRTC's log as lines ([`super::nvrtc`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView};
use candle_core::cuda_backend::cudarc::nvrtc::sys as nvrtc_sys;
use candle_core::cuda_backend::cudarc::nvrtc::{
    compile_ptx_with_opts, CompileError, CompileOptions,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, Layout, Result};

use super::nvrtc::{choose_arch, compile_error, load_error, ArchChoice};
use super::sources::KernelSource;

type PtxCache = Mutex<HashMap<(&'static str, i32), Arc<String>>>;

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

/// `10 * major + minor` of every architecture the linked NVRTC compiles for
/// (`nvrtcGetSupportedArchs`); empty when the query fails (cudarc loads NVRTC symbols lazily, and
/// an NVRTC older than 11.2 has no such call).
pub fn supported_archs() -> Vec<i32> {
    static ARCHS: OnceLock<Vec<i32>> = OnceLock::new();
    ARCHS
        .get_or_init(|| {
            let query = std::panic::catch_unwind(|| {
                let mut n: std::ffi::c_int = 0;
                // SAFETY: NVRTC fills `n`, then exactly `n` ints of the buffer.
                unsafe {
                    if nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n)
                        != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
                        || n <= 0
                    {
                        return Vec::new();
                    }
                    let mut v = vec![0 as std::ffi::c_int; n as usize];
                    if nvrtc_sys::nvrtcGetSupportedArchs(v.as_mut_ptr())
                        != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
                    {
                        return Vec::new();
                    }
                    v
                }
            });
            query.unwrap_or_default()
        })
        .clone()
}

/// The architecture our kernels are compiled for on a device of capability `cc` (see
/// [`choose_arch`]); a fallback is logged once per process and device capability.
pub fn arch_for(cc: (i32, i32)) -> Result<ArchChoice> {
    let choice = choose_arch(cc, &supported_archs()).map_err(candle_core::Error::Msg)?;
    if let Some(note) = choice.fallback_note() {
        static SAID: OnceLock<Mutex<Vec<i32>>> = OnceLock::new();
        let said = SAID.get_or_init(|| Mutex::new(Vec::new()));
        if let Ok(mut said) = said.lock() {
            if !said.contains(&choice.device) {
                said.push(choice.device);
                log::warn!("{note}");
            }
        }
    }
    Ok(choice)
}

/// PTX of `src` for `compute_{arch}` (`10 * major + minor`); `entry` is the kernel that needs it,
/// for the error. NVRTC needs no GPU, so this also runs in tests.
pub fn compile_arch(src: &KernelSource, arch: i32, entry: &str) -> Result<String> {
    let mut options: Vec<String> = KernelSource::nvrtc_options()
        .iter()
        .map(|s| s.to_string())
        .collect();
    options.push(format!("--gpu-architecture=compute_{arch}"));
    let opts = CompileOptions {
        options,
        name: Some(format!("{}.cu", src.module)),
        ..Default::default()
    };
    match compile_ptx_with_opts(src.full_source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { nvrtc, log, .. }) => {
            Err(candle_core::Error::Msg(compile_error(
                src.module,
                entry,
                arch,
                &format!("{nvrtc:?}"),
                &log.to_string_lossy(),
            )))
        }
        Err(e) => Err(candle_core::Error::Msg(compile_error(
            src.module,
            entry,
            arch,
            &format!("{e:?}"),
            "",
        ))),
    }
}

/// PTX of `src` for `compute_{major}{minor}` exactly (no fallback).
pub fn compile(src: &KernelSource, cc: (i32, i32)) -> Result<String> {
    let entry = src.entries.first().copied().unwrap_or("?");
    compile_arch(src, cc.0 * 10 + cc.1, entry)
}

/// Kernel `entry` of `src`, compiled for `dev` on first use.
pub fn func(dev: &CudaDevice, src: &KernelSource, entry: &str) -> Result<CudaFunction> {
    let arch = arch_for(compute_capability(dev)?)?.arch;
    let key = (src.module, arch);
    let cached = ptx_cache()
        .lock()
        .map_err(|_| candle_core::Error::Msg("PTX cache poisoned".into()))?
        .get(&key)
        .cloned();
    let ptx = match cached {
        Some(p) => p,
        None => {
            let p = Arc::new(compile_arch(src, arch, entry)?);
            ptx_cache()
                .lock()
                .map_err(|_| candle_core::Error::Msg("PTX cache poisoned".into()))?
                .insert(key, p.clone());
            p
        }
    };
    let module = format!("{}_compute{arch}", src.module);
    match dev.get_or_load_custom_func(entry, &module, &ptx) {
        Ok(f) => Ok(f.into_cuda_function()),
        Err(e) => Err(candle_core::Error::Msg(load_error(
            src.module,
            entry,
            arch,
            &e.to_string(),
        ))),
    }
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
