//! The pure parts of compiling our kernels with NVRTC: which virtual architecture to ask for, and
//! how compile and module-load failures read. Always compiled, so the CPU tests check them; the
//! NVRTC and driver calls themselves are in [`super::runtime`] (feature `cuda`).

use std::fmt::Write as _;

/// The `compute_XY` to compile for, and whether it is a fallback from the device's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchChoice {
    /// `10 * major + minor` of the device.
    pub device: i32,
    /// `10 * major + minor` handed to `--gpu-architecture=compute_XY`.
    pub arch: i32,
}

impl ArchChoice {
    pub fn is_fallback(&self) -> bool {
        self.arch != self.device
    }

    /// The `--gpu-architecture` value.
    pub fn option(&self) -> String {
        format!("--gpu-architecture=compute_{}", self.arch)
    }

    /// The one log line a fallback deserves (None when there is none).
    pub fn fallback_note(&self) -> Option<String> {
        self.is_fallback().then(|| {
            format!(
                "the linked NVRTC cannot compile for this GPU's compute_{}: our kernels are \
                 compiled for compute_{} instead (the driver JIT-compiles that PTX for the GPU); \
                 a newer CUDA toolkit's libnvrtc would target the GPU directly",
                self.device, self.arch
            )
        })
    }
}

/// The architecture for a device of compute capability `cc` given the values NVRTC reports from
/// `nvrtcGetSupportedArchs` (`10 * major + minor`, any order). The device's own when NVRTC lists
/// it; otherwise the highest listed one below it, since PTX for `compute_XY` runs (JIT-compiled by
/// the driver) on every GPU of capability XY or newer. An empty list (the query failed or is
/// missing from an old NVRTC) means "assume the device's own": NVRTC then says itself if it
/// cannot. A device older than every listed value is an error: nothing NVRTC emits would load.
pub fn choose_arch(cc: (i32, i32), supported: &[i32]) -> Result<ArchChoice, String> {
    let device = cc.0 * 10 + cc.1;
    if supported.is_empty() || supported.contains(&device) {
        return Ok(ArchChoice {
            device,
            arch: device,
        });
    }
    match supported.iter().copied().filter(|&a| a < device).max() {
        Some(arch) => Ok(ArchChoice { device, arch }),
        None => Err(format!(
            "this GPU is compute {}.{}, older than every architecture the linked NVRTC supports \
             ({}): no PTX it emits can load on it",
            cc.0,
            cc.1,
            list(supported)
        )),
    }
}

fn list(archs: &[i32]) -> String {
    let mut v = archs.to_vec();
    v.sort_unstable();
    v.iter()
        .map(|a| format!("compute_{a}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// NVRTC's program log as indented lines: blank lines and trailing NULs dropped, so a multi-line
/// log stays readable inside an error message (cudarc's own error prints it as one escaped string).
pub fn log_lines(log: &str) -> String {
    let mut out = String::new();
    for line in log.trim_end_matches('\0').lines() {
        let line = line.trim_end();
        if !line.is_empty() {
            let _ = write!(out, "\n    {line}");
        }
    }
    out
}

/// The error for a failed NVRTC compile of `module` (needed for kernel `entry`): what, for which
/// architecture, NVRTC's status, then its log line by line.
pub fn compile_error(module: &str, entry: &str, arch: i32, status: &str, log: &str) -> String {
    let lines = log_lines(log);
    let log = if lines.is_empty() {
        " (NVRTC wrote no log)".to_string()
    } else {
        format!("; NVRTC's log:{lines}")
    };
    format!(
        "CUDA kernel {entry}: NVRTC could not compile module {module} ({module}.cu) for \
         compute_{arch}: {status}{log}"
    )
}

/// The error for a PTX module the driver would not load, or a kernel missing from it.
pub fn load_error(module: &str, entry: &str, arch: i32, why: &str) -> String {
    format!(
        "CUDA kernel {entry}: the driver could not load it from module {module} (PTX for \
         compute_{arch}): {}",
        why.lines().next().unwrap_or(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What CUDA 13.0's NVRTC (13.0.88) reports from nvrtcGetSupportedArchs, as printed by
    /// tests/cuda_kernels.rs: Turing and newer.
    const CUDA13: [i32; 12] = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];

    #[test]
    fn the_devices_own_architecture_when_nvrtc_has_it() {
        for (cc, want) in [((9, 0), 90), ((8, 7), 87), ((7, 5), 75), ((12, 1), 121)] {
            let c = choose_arch(cc, &CUDA13).unwrap();
            assert_eq!((c.device, c.arch), (want, want));
            assert!(!c.is_fallback() && c.fallback_note().is_none());
            assert_eq!(c.option(), format!("--gpu-architecture=compute_{want}"));
        }
    }

    #[test]
    fn a_gpu_newer_than_nvrtc_gets_the_highest_supported_architecture() {
        let c = choose_arch((13, 0), &CUDA13).unwrap();
        assert_eq!((c.device, c.arch), (130, 121));
        let note = c.fallback_note().unwrap();
        assert!(
            note.contains("compute_130") && note.contains("compute_121"),
            "{note}"
        );
        // Unordered lists and gaps: the highest value below the device, never one above it.
        assert_eq!(choose_arch((9, 5), &[100, 80, 90]).unwrap().arch, 90);
        assert_eq!(choose_arch((8, 1), &[75, 86, 80]).unwrap().arch, 80);
    }

    #[test]
    fn an_unknown_list_keeps_the_device_and_a_too_old_gpu_is_an_error() {
        assert_eq!(choose_arch((8, 7), &[]).unwrap().arch, 87);
        let e = choose_arch((6, 1), &CUDA13).unwrap_err();
        assert!(
            e.contains("6.1") && e.contains("compute_75, compute_80") && e.contains("compute_121"),
            "{e}"
        );
    }

    #[test]
    fn compile_errors_name_the_module_and_kernel_and_keep_the_log_as_lines() {
        let log = "yolact_masks.cu(12): error: identifier \"q\" is undefined\n\n\
                   yolact_masks.cu(13): warning: x\n1 error detected in the compilation of \
                   \"yolact_masks.cu\".\n\0";
        let e = compile_error(
            "yolact_masks",
            "mask_sigmoid_crop",
            90,
            "NVRTC_ERROR_COMPILATION",
            log,
        );
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(lines[0].contains("kernel mask_sigmoid_crop"), "{e}");
        assert!(lines[0].contains("module yolact_masks"), "{e}");
        assert!(lines[0].contains("compute_90") && lines[0].contains("NVRTC_ERROR_COMPILATION"));
        assert_eq!(
            lines[1],
            "    yolact_masks.cu(12): error: identifier \"q\" is undefined"
        );
        assert!(!e.contains("\\n") && !e.contains('\0'), "{e:?}");
        let empty = compile_error("m", "k", 87, "NVRTC_ERROR_X", "\0");
        assert!(empty.ends_with("(NVRTC wrote no log)"), "{empty}");
        let l = load_error(
            "yolact_dcn",
            "deform_im2col_f16",
            87,
            "DriverError(X)\nbacktrace",
        );
        assert!(
            l.contains("deform_im2col_f16") && l.contains("yolact_dcn") && !l.contains("backtrace"),
            "{l}"
        );
    }
}
