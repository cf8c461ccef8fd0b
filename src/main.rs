//! `yolact`: run YOLACT / YOLACT++ on images, convert checkpoints, benchmark.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
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
