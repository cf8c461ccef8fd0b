//! A CPU emulator for our CUDA kernels, as a [`KernelHost`]: every `kernels/*.cu` module is
//! compiled by g++ (with the shim of `emu.hpp` and the block scheduler of `emu_runtime.cpp`) into
//! a shared library once per test process, and the same launch plans the CUDA runtime uses
//! (`src/cuda/plan.rs`) drive it.
//!
//! What it checks beyond the maths: each launch's argument kinds against the kernel's C signature,
//! `__syncthreads()` reached by every thread of a block, writes past the end of an allocation
//! (guard bytes after each one), and reads of memory nobody wrote (fresh allocations that are not
//! zeroed are filled with 0xff bytes: NaN as f32, the largest key as u32).
//!
//! g++ is on every machine this project builds on; its absence is an error, not a skip.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use yolact_ros2::cuda::plan::{Arg, DevPtr, KernelHost, Launch};
use yolact_ros2::cuda::sources::{KernelSource, ALL, PRELUDE};
use yolact_ros2::error::{Error, Result};

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    c_int,
    *const c_char,
    *mut *mut c_void,
    u64,
    *mut c_char,
    usize,
) -> c_int;

struct Module {
    _lib: libloading::Library,
    launch: LaunchFn,
}

const SHIM: [(&str, &str); 3] = [
    ("emu.hpp", include_str!("emu.hpp")),
    ("emu_launch.hpp", include_str!("emu_launch.hpp")),
    ("emu_runtime.cpp", include_str!("emu_runtime.cpp")),
];

/// The translation unit for one module: shim, prelude, the kernel file, then its registry.
fn module_source(k: &KernelSource) -> String {
    let mut s = String::from("#include \"emu.hpp\"\n#include \"emu_launch.hpp\"\n");
    s += PRELUDE;
    s += "\n#line 1 \"";
    s += k.module;
    s += ".cu\"\n";
    s += k.source;
    s += "\nextern \"C\" const EmuReg emu_registry[] = {\n";
    for e in k.entries {
        s += &format!("  EMU_ENTRY({e})\n");
    }
    s += "  {nullptr, nullptr, nullptr}};\n";
    s
}

fn build_dir() -> PathBuf {
    // target/<profile>/deps/<test binary> -> target/kernel-emu
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    target.join("kernel-emu")
}

fn compile(k: &KernelSource) -> std::result::Result<Module, String> {
    let dir = build_dir().join(format!("{}-{}", k.module, std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in SHIM {
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    let src = dir.join(format!("{}.cpp", k.module));
    std::fs::write(&src, module_source(k)).map_err(|e| e.to_string())?;
    let lib = dir.join(format!("lib{}.so", k.module));
    // -ffp-contract=off: the kernels are compiled with --fmad=false and compared bit for bit.
    let out = Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off"])
        .args([
            "-Wall",
            "-Wno-unknown-pragmas",
            "-Wno-unused-function",
            "-Werror",
        ])
        .arg("-I")
        .arg(&dir)
        .arg(&src)
        .arg(dir.join("emu_runtime.cpp"))
        .arg("-o")
        .arg(&lib)
        .output()
        .map_err(|e| format!("cannot run g++ (needed by the kernel emulator): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "g++ failed on {}:\n{}",
            k.module,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // SAFETY: our own library; its initialisers only set up statics.
    let l = unsafe { libloading::Library::new(&lib) }.map_err(|e| e.to_string())?;
    // SAFETY: the signature of emu_launch in emu_runtime.cpp; the library is kept alive in
    // the Module next to the function pointer.
    let launch: LaunchFn = unsafe {
        *l.get::<LaunchFn>(b"emu_launch\0")
            .map_err(|e| e.to_string())?
    };
    std::fs::remove_dir_all(&dir).ok();
    Ok(Module { _lib: l, launch })
}

type Cache = Mutex<HashMap<&'static str, Result<&'static Module, String>>>;

/// The emulated build of `k`, compiled on first use (once per process and module).
fn module(k: &KernelSource) -> Result<&'static Module> {
    static M: OnceLock<Cache> = OnceLock::new();
    let cache = M.get_or_init(|| Mutex::new(HashMap::new()));
    let mut c = cache
        .lock()
        .map_err(|_| Error::Invalid("emulator cache poisoned".into()))?;
    c.entry(k.module)
        .or_insert_with(|| compile(k).map(|m| &*Box::leak(Box::new(m))))
        .clone()
        .map_err(|e| Error::Invalid(format!("kernel emulator: {e}")))
}

/// Compiles every module of the runtime, so a compile error names itself in one test.
pub fn compile_all() -> Result<()> {
    for k in ALL {
        module(&k)?;
    }
    Ok(())
}

const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0x5a;

struct Alloc {
    // u64 storage keeps every buffer 8-byte aligned, as device allocations are (more) aligned.
    mem: Vec<u64>,
    len: usize,
}

impl Alloc {
    fn bytes(&self) -> &[u8] {
        // SAFETY: u64 storage viewed as its bytes.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().cast::<u8>(), self.mem.len() * 8) }
    }
    fn addr(&self) -> u64 {
        self.mem.as_ptr() as u64
    }
}

/// Host memory + emulated launches. Buffers live until the host is dropped.
#[derive(Default)]
pub struct EmuHost {
    allocs: Vec<Alloc>,
    /// 0: blocks and threads run in index order; otherwise a seed for shuffling both, as a GPU
    /// may schedule them (atomics then hand out slots in a different order).
    pub schedule_seed: u64,
    /// Runs launches of the named grid-stride kernels with at most this many blocks, whatever
    /// the plan asked for: a grid that covers fewer items than the launch has, as the plans'
    /// 2^20-block cap gives on a GPU for inputs beyond 2^28 items, without the memory such inputs
    /// take. (Kernels with one block per class or a single block are not grid-stride.)
    pub max_grid: Option<(u32, &'static [&'static str])>,
    /// Kernels launched so far, in order.
    pub launched: Vec<String>,
}

/// The schedule every test host uses unless it asks otherwise: shuffled, so that a kernel whose
/// result depends on the order of threads between two barriers (a data race on a GPU) or of blocks
/// fails its comparison with the CPU.
const DEFAULT_SEED: u64 = 0x5eed_2026;

impl EmuHost {
    /// A host with a shuffled schedule (see [`EmuHost::shuffled`]).
    pub fn new() -> Self {
        Self::shuffled(DEFAULT_SEED)
    }

    /// A host that runs blocks and threads in index order, as a naive sequential loop would.
    pub fn ordered() -> Self {
        Self::default()
    }

    /// A host whose launches run blocks and threads in an order shuffled by `seed`.
    pub fn shuffled(seed: u64) -> Self {
        EmuHost {
            schedule_seed: seed | 1,
            ..Self::default()
        }
    }

    /// Copies `data` into a new allocation.
    pub fn upload<T: Copy>(&mut self, data: &[T]) -> DevPtr {
        let bytes = std::mem::size_of_val(data);
        let p = self.alloc(bytes, true).expect("host allocation");
        let a = self.allocs.last_mut().expect("just allocated");
        // SAFETY: the allocation holds at least `bytes` bytes; T is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr().cast::<u8>(),
                a.mem.as_mut_ptr().cast::<u8>(),
                bytes,
            )
        };
        p
    }

    pub fn read_vec<T: Copy + Default>(&mut self, p: DevPtr, n: usize) -> Vec<T> {
        let b = self
            .read(p, n * std::mem::size_of::<T>())
            .expect("read back");
        let mut out = vec![T::default(); n];
        // SAFETY: b holds exactly n * size_of::<T>() bytes; T is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().cast::<u8>(), b.len())
        };
        out
    }

    fn check_guards(&self) -> Result<()> {
        for a in &self.allocs {
            if let Some(i) = a.bytes()[a.len..a.len + GUARD]
                .iter()
                .position(|&b| b != GUARD_BYTE)
            {
                return Err(Error::Invalid(format!(
                    "write {i} bytes past the end of a {}-byte allocation",
                    a.len
                )));
            }
        }
        Ok(())
    }
}

impl KernelHost for EmuHost {
    fn alloc(&mut self, bytes: usize, zeroed: bool) -> Result<DevPtr> {
        if bytes == 0 {
            // What cuMemAlloc / cuMemAllocAsync answer on a GPU.
            return Err(Error::Invalid(
                "a 0-byte device allocation (CUDA_ERROR_INVALID_VALUE on a GPU)".into(),
            ));
        }
        let words = (bytes + GUARD).div_ceil(8);
        let mut a = Alloc {
            mem: vec![0u64; words],
            len: bytes,
        };
        let fill = if zeroed { 0 } else { 0xff };
        // SAFETY: u64 storage written as bytes.
        let b =
            unsafe { std::slice::from_raw_parts_mut(a.mem.as_mut_ptr().cast::<u8>(), words * 8) };
        b[..bytes].fill(fill);
        b[bytes..].fill(GUARD_BYTE);
        let p = DevPtr(a.addr());
        self.allocs.push(a);
        Ok(p)
    }

    fn launch(
        &mut self,
        src: &KernelSource,
        entry: &str,
        launch: Launch,
        args: &[Arg],
    ) -> Result<()> {
        let m = module(src)?;
        let grid = match self.max_grid {
            Some((g, entries)) if entries.contains(&entry) => launch.grid.min(g),
            _ => launch.grid,
        };
        self.launched.push(entry.to_string());
        // Every argument by value in 8 bytes of storage; the kernel reads its own width.
        let mut vals: Vec<[u8; 8]> = Vec::with_capacity(args.len());
        let mut kinds = Vec::with_capacity(args.len());
        for a in args {
            let mut v = [0u8; 8];
            let k = match *a {
                Arg::Ptr(p) => {
                    v = p.0.to_ne_bytes();
                    b'p'
                }
                Arg::I32(x) => {
                    v[..4].copy_from_slice(&x.to_ne_bytes());
                    b'i'
                }
                Arg::I64(x) => {
                    v = x.to_ne_bytes();
                    b'l'
                }
                Arg::F32(x) => {
                    v[..4].copy_from_slice(&x.to_ne_bytes());
                    b'f'
                }
            };
            vals.push(v);
            kinds.push(k);
        }
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v.as_mut_ptr().cast::<c_void>())
            .collect();
        let entry_c = CString::new(entry).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut err = vec![0u8; 512];
        // SAFETY: emu_launch's contract; the pointers in `args` are allocations of this host
        // (or offsets into them) and stay alive for the call.
        let rc = unsafe {
            (m.launch)(
                entry_c.as_ptr(),
                grid,
                launch.block,
                args.len() as c_int,
                kinds.as_ptr().cast::<c_char>(),
                ptrs.as_mut_ptr(),
                self.schedule_seed,
                err.as_mut_ptr().cast::<c_char>(),
                err.len(),
            )
        };
        if rc != 0 {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(Error::Invalid(format!(
                "emulated {entry}: {}",
                String::from_utf8_lossy(&err[..end])
            )));
        }
        self.check_guards()
            .map_err(|e| Error::Invalid(format!("after {entry}: {e}")))
    }

    fn read(&mut self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>> {
        for a in &self.allocs {
            let start = a.addr();
            if ptr.0 >= start && ptr.0 + bytes as u64 <= start + a.len as u64 {
                let off = (ptr.0 - start) as usize;
                return Ok(a.bytes()[off..off + bytes].to_vec());
            }
        }
        Err(Error::Invalid(format!(
            "read of {bytes} bytes at {:#x}: not inside one allocation",
            ptr.0
        )))
    }
}
