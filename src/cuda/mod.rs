//! The CUDA path: device selection (always compiled) and, with the `cuda` feature, our own
//! kernels (`kernels/*.cu`, NVRTC-compiled on first use and cached per device) behind the seams
//! the CPU code already has: `cuda_fwd` of the custom ops in [`crate::ops`], the Fast NMS stages
//! of [`crate::post::fast_nms`], and the fused pre/post-processing stages ([`fused`]).
//!
//! Every launch goes through a plan in [`plan`] (always compiled), which tests/it/cuda_emu.rs runs
//! against a CPU emulator of the kernels; [`host`] runs the same plans on the GPU.

pub mod device;
pub mod graph;
pub mod nvrtc;
pub mod plan;
pub mod sources;
pub mod timing;

#[cfg(feature = "cuda")]
pub mod fused;
#[cfg(feature = "cuda")]
pub mod host;
#[cfg(feature = "cuda")]
pub mod nms;
#[cfg(feature = "cuda")]
pub(crate) mod ops;
#[cfg(feature = "cuda")]
pub mod runtime;

pub use device::{resolve_device, select_device, DeviceChoice, Selected};
