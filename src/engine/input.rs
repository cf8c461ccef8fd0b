//! The input normalisation constants, apart from the transform that uses them so the device
//! plan of the fused preprocessing kernel ([`crate::cuda::plan`]) imports them without importing
//! [`crate::engine::preprocess`], which depends on the CUDA resize.

/// RGB-ordered means and stds (the reference's BGR constants, reversed).
pub const MEAN_RGB: [f32; 3] = [123.68, 116.78, 103.94];
pub const STD_RGB: [f32; 3] = [58.40, 57.12, 57.38];
