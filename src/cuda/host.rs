//! The CUDA [`KernelHost`]: the launch plans of [`super::plan`] on candle's device and stream.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, DType, Storage, Tensor};

use super::plan::{Arg, DevPtr, KernelHost, Launch};
use super::runtime::{contiguous_view, func};
use super::sources::KernelSource;
use crate::error::{Error, Result};

/// Launches on `dev`'s stream (the one candle's own kernels use, so no extra synchronisation is
/// needed); scratch allocations are freed when the host is dropped.
pub struct CudaHost<'d> {
    dev: &'d CudaDevice,
    owned: Vec<CudaSlice<u8>>,
}

impl<'d> CudaHost<'d> {
    pub fn new(dev: &'d CudaDevice) -> Self {
        CudaHost {
            dev,
            owned: Vec::new(),
        }
    }

    /// The address of a device buffer, for a plan's [`Arg::Ptr`].
    pub fn ptr_of<T, S: DevicePtr<T>>(&self, s: &S) -> DevPtr {
        let stream = self.dev.cuda_stream();
        let (p, _sync) = s.device_ptr(&stream);
        DevPtr(p)
    }
}

impl KernelHost for CudaHost<'_> {
    fn alloc(&mut self, bytes: usize, zeroed: bool) -> Result<DevPtr> {
        let n = bytes.max(1);
        let s: CudaSlice<u8> = if zeroed {
            self.dev.alloc_zeros(n)?
        } else {
            // SAFETY: plans only read what their kernels wrote unless they asked for zeroes.
            unsafe { self.dev.alloc(n)? }
        };
        let p = self.ptr_of(&s);
        self.owned.push(s);
        Ok(p)
    }

    fn launch(
        &mut self,
        src: &KernelSource,
        entry: &str,
        launch: Launch,
        args: &[Arg],
    ) -> Result<()> {
        let f = func(self.dev, src, entry)?;
        let stream = self.dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(&p.0),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (launch.grid, 1, 1),
            block_dim: (launch.block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the plans build `args` to match the kernel's parameter list; tests/it/cuda_emu.rs
        // checks every plan's list against the C signature.
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }

    fn read(&mut self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>> {
        let stream = self.dev.cuda_stream();
        for s in &self.owned {
            let base = self.ptr_of(s).0;
            if ptr.0 >= base && ptr.0 + bytes as u64 <= base + s.len() as u64 {
                let off = (ptr.0 - base) as usize;
                return Ok(stream.clone_dtoh(&s.slice(off..off + bytes)).w()?);
            }
        }
        Err(Error::Invalid(format!(
            "read of {bytes} bytes at {:#x}: not a scratch buffer of this launch plan",
            ptr.0
        )))
    }
}

/// Runs `f` with a host on the tensors' CUDA device and the addresses of their data as contiguous
/// f32 (converted and packed first when needed; the buffers stay alive until `f` returns).
pub fn with_f32_ptrs<R, const N: usize>(
    inputs: [(&Tensor, &str); N],
    f: impl FnOnce(&mut CudaHost<'_>, [DevPtr; N]) -> Result<R>,
) -> Result<R> {
    let tensors = inputs
        .iter()
        .map(|(t, _)| t.to_dtype(DType::F32)?.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut ptrs = [DevPtr::NULL; N];
    let mut dev = None;
    for (i, ((storage, layout), (_, what))) in guards.iter().zip(&inputs).enumerate() {
        let Storage::Cuda(s) = &**storage else {
            return Err(Error::Invalid(format!("{what}: not a CUDA tensor")));
        };
        let view = contiguous_view(s.as_cuda_slice::<f32>()?, layout, what)?;
        let stream = s.device.cuda_stream();
        ptrs[i] = DevPtr(view.device_ptr(&stream).0);
        dev.get_or_insert(&s.device);
    }
    let dev = dev.ok_or_else(|| Error::Invalid("a launch plan without inputs".into()))?;
    f(&mut CudaHost::new(dev), ptrs)
}

/// A plan error as a candle error, for the custom ops' `cuda_fwd`.
pub(crate) fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
