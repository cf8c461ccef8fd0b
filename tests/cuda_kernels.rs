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
    num_archs: unsafe extern "C" fn(*mut c_int) -> c_int,
    archs: unsafe extern "C" fn(*mut c_int) -> c_int,
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
                num_archs: *lib
                    .get(b"nvrtcGetNumSupportedArchs\0")
                    .map_err(|e| e.to_string())?,
                archs: *lib
                    .get(b"nvrtcGetSupportedArchs\0")
                    .map_err(|e| e.to_string())?,
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
    /// `nvrtcGetSupportedArchs`, as the runtime queries it (src/cuda/runtime.rs).
    fn supported_archs(&self) -> Vec<i32> {
        let mut n: c_int = 0;
        // SAFETY: NVRTC writes `n`, then `n` ints into a buffer of that size.
        unsafe {
            assert_eq!((self.num_archs)(&mut n), 0);
            let mut v = vec![0 as c_int; n.max(0) as usize];
            assert_eq!((self.archs)(v.as_mut_ptr()), 0);
            v
        }
    }

    /// The log of a failed compile (None when it compiles).
    fn compile_log(&self, name: &str, src: &str, options: &[String]) -> Option<String> {
        self.compile(name, src, options).err().map(|e| {
            e.split_once('\n')
                .map(|(_, log)| log.to_string())
                .unwrap_or(e)
        })
    }

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

/// The architecture the runtime picks (src/cuda/nvrtc.rs) from what this NVRTC reports: the
/// device's own for Hopper and Orin, and for a GPU newer than this NVRTC knows the highest
/// architecture it lists, which then compiles every module.
#[test]
fn the_architecture_choice_follows_what_nvrtc_supports_and_its_fallback_compiles() {
    use yolact_ros2::cuda::nvrtc::choose_arch;
    let Some(nvrtc) = nvrtc_or_skip("the_architecture_choice_follows_what_nvrtc_supports") else {
        return;
    };
    let archs = nvrtc.supported_archs();
    eprintln!("nvrtcGetSupportedArchs: {archs:?}");
    assert!(archs.contains(&90) && archs.contains(&87), "{archs:?}");
    for cc in [(9, 0), (8, 7)] {
        let c = choose_arch(cc, &archs).unwrap();
        assert!(!c.is_fallback(), "{cc:?}: {c:?}");
    }
    let newest = *archs.iter().max().unwrap();
    let future = (newest / 10 + 1, 0);
    let c = choose_arch(future, &archs).unwrap();
    assert_eq!(c.arch, newest);
    assert!(c
        .fallback_note()
        .unwrap()
        .contains(&format!("compute_{newest}")));
    // What the runtime would then hand NVRTC must compile.
    let mut opts = options("compute_90");
    opts.pop();
    opts.push(c.option());
    for k in ALL {
        let ptx = nvrtc
            .compile(&format!("{}.cu", k.module), &k.full_source(), &opts)
            .unwrap_or_else(|e| panic!("{} for the fallback {}: {e}", k.module, c.option()));
        assert!(
            ptx.contains(&format!(".target sm_{newest}")),
            "{}",
            k.module
        );
    }
    // A device older than anything listed is refused up front.
    let oldest = *archs.iter().min().unwrap();
    assert!(choose_arch((oldest / 10 - 1, 0), &archs).is_err());
}

/// NVRTC's real log, through the runtime's error formatting: one line per log line, the module
/// and kernel named, nothing escaped.
#[test]
fn compile_errors_carry_nvrtcs_log_as_readable_lines() {
    use yolact_ros2::cuda::nvrtc::compile_error;
    let Some(nvrtc) = nvrtc_or_skip("compile_errors_carry_nvrtcs_log_as_readable_lines") else {
        return;
    };
    let bad = "extern \"C\" __global__ void k(float* x) {\n  x[0] = undefined_a;\n  x[1] = \
               undefined_b;\n}\n";
    let log = nvrtc
        .compile_log("yolact_bad.cu", bad, &options("compute_90"))
        .expect("the broken kernel compiled");
    let e = compile_error("yolact_bad", "k", 90, "NVRTC_ERROR_COMPILATION", &log);
    eprintln!("{e}");
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines[0].contains("kernel k") && lines[0].contains("module yolact_bad"),
        "{e}"
    );
    let a = lines.iter().position(|l| l.contains("undefined_a"));
    let b = lines.iter().position(|l| l.contains("undefined_b"));
    assert!(
        matches!((a, b), (Some(a), Some(b)) if a > 0 && b > a),
        "{e}"
    );
    assert!(lines[1..].iter().all(|l| l.starts_with("    ")), "{e}");
    assert!(!e.contains("\\n") && !e.contains('\0'), "{e:?}");
}
