//! Operators candle lacks, written as candle custom ops (`cpu_fwd` now; a `cuda_fwd` can be added
//! without touching callers).

pub mod bn_train;
pub mod conv_train;
pub mod dcn;
pub mod dcn_bwd;
mod dcn_sample;
pub mod im2col;
pub mod interp;
pub mod pool;
pub mod relu;

use candle_core::{backend::BackendStorage, bail, CpuStorage, DType, Layout, Result};

/// Arithmetic type in which a CPU kernel evaluates (PyTorch's "opmath" type): f32 for f32/f16/bf16
/// tensors, f64 for f64 tensors.
pub(crate) trait Acc:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const HALF: Self;
    fn from_usize(v: usize) -> Self;
    fn from_isize(v: isize) -> Self;
    /// `floor` converted to an index; only called on values >= 0.
    fn floor_index(self) -> usize;
    /// `floor` as a signed index (saturating; NaN maps to 0).
    fn floor_isize(self) -> isize;
}

macro_rules! impl_acc {
    ($t:ty) => {
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const HALF: Self = 0.5;
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            fn from_isize(v: isize) -> Self {
                v as $t
            }
            fn floor_index(self) -> usize {
                <$t>::floor(self) as usize
            }
            fn floor_isize(self) -> isize {
                <$t>::floor(self) as isize
            }
        }
    };
}
impl_acc!(f32);
impl_acc!(f64);

/// Copies a strided CPU view into a fresh contiguous buffer.
pub(crate) fn copy_contiguous(
    storage: &CpuStorage,
    layout: &Layout,
) -> Result<(CpuStorage, Layout)> {
    let dtype: DType = storage.dtype();
    let mut dst = zeros_of(dtype, layout.shape().elem_count())?;
    storage.copy_strided_src(&mut dst, 0, layout)?;
    Ok((dst, Layout::contiguous(layout.shape().clone())))
}

fn zeros_of(dtype: DType, n: usize) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(vec![0.0; n]),
        DType::F64 => CpuStorage::F64(vec![0.0; n]),
        DType::F16 => CpuStorage::F16(vec![half::f16::ZERO; n]),
        DType::BF16 => CpuStorage::BF16(vec![half::bf16::ZERO; n]),
        other => bail!("unsupported dtype {other:?} (float types only)"),
    })
}
