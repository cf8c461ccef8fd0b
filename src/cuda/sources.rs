//! The CUDA C sources of our kernels (`kernels/*.cu`), embedded at build time.
//!
//! Always compiled, with or without the `cuda` feature, so that `tests/cuda_kernels.rs` can
//! NVRTC-compile exactly what the runtime compiles and check every entry point the runtime loads.

/// One NVRTC module: a source file, the functions the runtime loads from it, and its options.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Module name (also the key of the per-device module cache).
    pub module: &'static str,
    /// The `.cu` file's text, without [`PRELUDE`].
    pub source: &'static str,
    /// `extern "C"` kernels the runtime launches from this module.
    pub entries: &'static [&'static str],
}

/// Helpers every source uses (f16/bf16 conversions, opmath types); prepended by
/// [`KernelSource::full_source`].
pub const PRELUDE: &str = include_str!("../../kernels/prelude.cuh");

pub const RESIZE: KernelSource = KernelSource {
    module: "yolact_resize",
    source: include_str!("../../kernels/resize.cu"),
    entries: &[
        "resize_bilinear_f32",
        "resize_bilinear_f64",
        "resize_bilinear_f16",
        "resize_bilinear_bf16",
        "resize_threshold_u8",
    ],
};

pub const PREPROCESS: KernelSource = KernelSource {
    module: "yolact_preprocess",
    source: include_str!("../../kernels/preprocess.cu"),
    entries: &[
        "preprocess_rgb_f32",
        "preprocess_rgb_f16",
        "preprocess_rgb_bf16",
    ],
};

pub const MASKS: KernelSource = KernelSource {
    module: "yolact_masks",
    source: include_str!("../../kernels/masks.cu"),
    entries: &["mask_sigmoid_crop"],
};

pub const DCN: KernelSource = KernelSource {
    module: "yolact_dcn",
    source: include_str!("../../kernels/dcn.cu"),
    entries: &[
        "deform_im2col_f32",
        "deform_im2col_f64",
        "deform_im2col_f16",
        "deform_im2col_bf16",
        "deform_col2im_f32",
        "deform_col2im_f64",
        "deform_col2im_coord_f32",
        "deform_col2im_coord_f64",
    ],
};

pub const FAST_NMS: KernelSource = KernelSource {
    module: "yolact_fast_nms",
    source: include_str!("../../kernels/fast_nms.cu"),
    entries: &[
        "fast_nms_prepare",
        "fast_nms_keys",
        "fast_nms_classwise",
        "fast_nms_merge",
        "fast_nms_cross_class",
    ],
};

pub const DECODE: KernelSource = KernelSource {
    module: "yolact_decode",
    source: include_str!("../../kernels/decode.cu"),
    entries: &["decode_boxes"],
};

pub const LOSS: KernelSource = KernelSource {
    module: "yolact_loss",
    source: include_str!("../../kernels/loss.cu"),
    entries: &["bce_f32"],
};

pub const ALL: [KernelSource; 7] = [RESIZE, DCN, FAST_NMS, PREPROCESS, MASKS, DECODE, LOSS];

/// Channels per thread in `deform_im2col_*` (`DCN_CB` in kernels/dcn.cu).
pub const DCN_CHANNEL_BLOCK: usize = 16;
/// Threads per block the NMS kernels are written for (`NT` in kernels/fast_nms.cu).
pub const NMS_THREADS: u32 = 256;
/// Largest top-k / max-detections the NMS kernels hold in shared memory (`KMAX`).
pub const NMS_KMAX: usize = 1024;

impl KernelSource {
    /// The text handed to NVRTC: prelude, then the file.
    pub fn full_source(&self) -> String {
        format!("{PRELUDE}\n{}", self.source)
    }

    /// NVRTC options besides the architecture. `--fmad=false` keeps multiply-adds unfused so the
    /// kernels round like the CPU ops they mirror (the keep sets of Fast NMS depend on exact IoUs).
    pub fn nvrtc_options() -> &'static [&'static str] {
        &["--std=c++17", "--fmad=false"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants mirrored from the .cu files must match them.
    #[test]
    fn constants_match_the_sources() {
        assert!(DCN
            .source
            .contains(&format!("#define DCN_CB {DCN_CHANNEL_BLOCK}")));
        assert!(FAST_NMS
            .source
            .contains(&format!("#define NT {NMS_THREADS}")));
        assert!(FAST_NMS
            .source
            .contains(&format!("#define KMAX {NMS_KMAX}")));
        for k in ALL {
            for e in k.entries {
                assert!(
                    k.source.contains(&format!("void {e}("))
                        || k.source.contains(&format!("({e},")),
                    "{e} not defined in {}",
                    k.module
                );
            }
        }
    }
}
