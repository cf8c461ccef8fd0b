//! The CUDA path: device selection (always compiled) and, with the `cuda` feature, our own
//! kernels (`kernels/*.cu`, NVRTC-compiled on first use and cached per device) behind the two
//! seams: `cuda_fwd` of the custom ops in [`crate::ops`], and [`backend`] (the CUDA
//! implementation of [`crate::engine::backend::Backend`]: the fused pre/post-processing stages of
//! [`fused`] and the Fast NMS of [`nms`]), which the engine chooses once for a CUDA device.
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
pub mod backend;
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
