//! `yolact`: run YOLACT / YOLACT++ on images, convert checkpoints, benchmark.

mod cli;

use clap::Parser;

/// One malloc arena for the whole process instead of glibc's one per allocating thread (up to 8
/// per core): a frame's tensors are made on the pool's workers and freed wherever the last
/// reference drops, and with an arena per thread a long replay's resident memory sat about 10 MB
/// higher and crept further (BENCHMARKS.md, "Replay memory over a long bag"). `MALLOC_ARENA_MAX`
/// in the environment still decides when set.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of glibc's allocator; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(yolact_ros2::DEFAULT_LOG_FILTER),
    )
    .format_timestamp(None)
    .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
