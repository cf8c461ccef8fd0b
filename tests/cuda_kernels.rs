//! CI check for the CUDA kernels without a GPU: every `kernels/*.cu` module compiles with NVRTC
//! for compute_90 (H200) and compute_87 (Jetson Orin), with the exact source and options the
//! runtime uses, and the PTX defines every entry point the runtime loads. When `ptxas` is
//! available the PTX is also assembled (sm_90a / sm_87), which catches resource errors such as
//! too much shared memory.
//!
//! Not behind the `cuda` feature: libnvrtc is loaded with dlopen. Without it the tests print why
//! and pass, unless YOLACT_REQUIRE_NVRTC=1 (CI), where they fail.
//! Lookup: $YOLACT_NVRTC_LIB, $CUDA_HOME/lib{,64}, the pip wheel's nvidia/cu13/lib, then the
//! loader's default search path.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;

use yolact_ros2::cuda::sources::{KernelSource, ALL};

type Prog = *mut c_void;

struct Nvrtc {
    _lib: libloading::Library,
    _builtins: Option<libloading::Library>,
    create: unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int,
    ptx_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    ptx: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    log_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    log: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut Prog) -> c_int,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
}

fn cuda_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        return Some(PathBuf::from(h));
    }
    // The pip wheels' layout: <site-packages>/nvidia/cu13.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, os\n\
             s = u.find_spec('nvidia')\n\
             for p in (s.submodule_search_locations if s else []) or []:\n\
             \x20   d = os.path.join(p, 'cu13')\n\
             \x20   if os.path.isdir(d): print(d); break",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("YOLACT_NVRTC_LIB") {
        c.push(PathBuf::from(p));
    }
    if let Some(h) = cuda_home() {
        for d in ["lib", "lib64"] {
            for n in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
                c.push(h.join(d).join(n));
            }
        }
    }
    for n in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
        c.push(PathBuf::from(n));
    }
    c
}

/// libnvrtc, or the reason it is unavailable.
fn load() -> Result<Nvrtc, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        // SAFETY: loading libnvrtc runs no initialisers with preconditions.
        let lib = match unsafe { libloading::Library::new(&path) } {
            Ok(l) => l,
            Err(e) => {
                tried.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        // libnvrtc dlopens libnvrtc-builtins by soname, which fails when its directory is not on
        // LD_LIBRARY_PATH (some wheels set no RUNPATH); a copy loaded first is found by soname.
        let builtins = path.parent().and_then(|dir| {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
                })
                .collect();
            found.sort();
            // SAFETY: as above.
            found
                .iter()
                .rev()
                .find_map(|p| unsafe { libloading::Library::new(p) }.ok())
        });
        // SAFETY: the signatures are NVRTC's C API (nvrtc.h), stable since CUDA 7.
        let n = unsafe {
            Nvrtc {
                create: *lib
                    .get(b"nvrtcCreateProgram\0")
                    .map_err(|e| e.to_string())?,
                compile: *lib
                    .get(b"nvrtcCompileProgram\0")
                    .map_err(|e| e.to_string())?,
                ptx_size: *lib.get(b"nvrtcGetPTXSize\0").map_err(|e| e.to_string())?,
                ptx: *lib.get(b"nvrtcGetPTX\0").map_err(|e| e.to_string())?,
                log_size: *lib
                    .get(b"nvrtcGetProgramLogSize\0")
                    .map_err(|e| e.to_string())?,
                log: *lib
                    .get(b"nvrtcGetProgramLog\0")
                    .map_err(|e| e.to_string())?,
                destroy: *lib
                    .get(b"nvrtcDestroyProgram\0")
                    .map_err(|e| e.to_string())?,
                version: *lib.get(b"nvrtcVersion\0").map_err(|e| e.to_string())?,
                _lib: lib,
                _builtins: builtins,
            }
        };
        eprintln!("cuda_kernels: using {}", path.display());
        return Ok(n);
    }
    Err(format!("libnvrtc not found (tried: {})", tried.join("; ")))
}

/// NVRTC, or None after printing why the test is skipped; panics instead under
/// YOLACT_REQUIRE_NVRTC=1.
fn nvrtc_or_skip(test: &str) -> Option<Nvrtc> {
    match load() {
        Ok(n) => Some(n),
        Err(why) => {
            if std::env::var("YOLACT_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("{test}: YOLACT_REQUIRE_NVRTC=1 but {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

impl Nvrtc {
    /// PTX of `src`, or the compile log.
    fn compile(&self, name: &str, src: &str, options: &[String]) -> Result<String, String> {
        let src = CString::new(src).map_err(|e| e.to_string())?;
        let name = CString::new(name).map_err(|e| e.to_string())?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: NVRTC C API with valid NUL-terminated strings that outlive the calls.
        unsafe {
            let rc = (self.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if rc != 0 {
                return Err(format!("nvrtcCreateProgram failed ({rc})"));
            }
            let rc = (self.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
            let result = if rc != 0 {
                let mut n = 0usize;
                (self.log_size)(prog, &mut n);
                let mut buf = vec![0u8; n.max(1)];
                (self.log)(prog, buf.as_mut_ptr() as *mut c_char);
                Err(format!(
                    "nvrtcCompileProgram failed ({rc}):\n{}",
                    CStr::from_bytes_until_nul(&buf)
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ))
            } else {
                let mut n = 0usize;
                (self.ptx_size)(prog, &mut n);
                let mut buf = vec![0u8; n.max(1)];
                (self.ptx)(prog, buf.as_mut_ptr() as *mut c_char);
                CStr::from_bytes_until_nul(&buf)
                    .map(|s| s.to_string_lossy().into_owned())
                    .map_err(|e| e.to_string())
            };
            (self.destroy)(&mut prog);
            result
        }
    }
}

/// The options the runtime passes (src/cuda/runtime.rs), for `arch`.
fn options(arch: &str) -> Vec<String> {
    let mut o: Vec<String> = KernelSource::nvrtc_options()
        .iter()
        .map(|s| s.to_string())
        .collect();
    o.push(format!("--gpu-architecture={arch}"));
    o
}

fn ptxas() -> Option<PathBuf> {
    let mut c: Vec<PathBuf> = cuda_home()
        .map(|h| vec![h.join("bin/ptxas")])
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("PATH") {
        c.extend(std::env::split_paths(&path).map(|d| d.join("ptxas")));
    }
    c.into_iter().find(|p| p.is_file())
}

#[test]
fn every_kernel_compiles_for_hopper_and_orin_and_exports_its_entry_points() {
    let Some(nvrtc) = nvrtc_or_skip("every_kernel_compiles_for_hopper_and_orin") else {
        return;
    };
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { (nvrtc.version)(&mut major, &mut minor) };
    eprintln!("NVRTC {major}.{minor}");
    let ptxas = ptxas();
    if ptxas.is_none() {
        eprintln!("(no ptxas found: PTX is not assembled)");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (arch, sm) in [("compute_90", "sm_90a"), ("compute_87", "sm_87")] {
        for k in ALL {
            let t = std::time::Instant::now();
            let ptx = nvrtc
                .compile(
                    &format!("{}.cu", k.module),
                    &k.full_source(),
                    &options(arch),
                )
                .unwrap_or_else(|e| panic!("{} for {arch}: {e}", k.module));
            let target = sm.trim_end_matches('a');
            assert!(
                ptx.lines().any(|l| l.trim() == format!(".target {target}")),
                "{} for {arch}: PTX has no `.target {target}`",
                k.module
            );
            for e in k.entries {
                assert!(
                    ptx.contains(&format!(".entry {e}(")),
                    "{} for {arch}: entry point {e} missing from the PTX",
                    k.module
                );
            }
            let entries = ptx.matches(".entry ").count();
            assert_eq!(
                entries,
                k.entries.len(),
                "{}: the PTX has entry points the runtime does not list",
                k.module
            );
            eprintln!(
                "{arch} {}: {} bytes of PTX, {entries} entries, {:?}",
                k.module,
                ptx.len(),
                t.elapsed()
            );
            if let Some(ptxas) = &ptxas {
                let p = tmp.path().join(format!("{}_{arch}.ptx", k.module));
                std::fs::write(&p, &ptx).unwrap();
                let out = std::process::Command::new(ptxas)
                    .arg(format!("-arch={sm}"))
                    .arg("-o")
                    .arg(p.with_extension("cubin"))
                    .arg(&p)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "ptxas -arch={sm} on {}: {}",
                    k.module,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The harness itself must notice a broken kernel (otherwise the test above proves nothing).
#[test]
fn a_broken_kernel_is_reported() {
    let Some(nvrtc) = nvrtc_or_skip("a_broken_kernel_is_reported") else {
        return;
    };
    let bad = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }";
    let err = nvrtc
        .compile("bad.cu", bad, &options("compute_90"))
        .unwrap_err();
    assert!(err.contains("undefined_name"), "{err}");
    let good = "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }";
    let ptx = nvrtc
        .compile("good.cu", good, &options("compute_90"))
        .unwrap();
    assert!(ptx.contains(".entry k("));
}
