//! `yolact bag-recover IN OUT`: every readable message of a damaged MCAP file, rewritten as a
//! complete MCAP file (summary, footer).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use yolact_ros2::bag::recover::recover_file;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the input was intact; 3 damage was skipped (listed on \
stderr) and OUT holds every message that could be read; 1 nothing could be recovered (not an \
MCAP file, OUT refused or not writable).")]
pub struct BagRecoverArgs {
    /// The damaged .mcap (e.g. OUT.partial.mcap left by a killed `yolact replay`).
    pub input: PathBuf,
    /// Where to write the complete copy (written as OUT.partial.mcap, then renamed); may not be IN.
    pub output: PathBuf,
}

pub fn run(a: BagRecoverArgs) -> Result<ExitCode> {
    let rec = match recover_file(&a.input, &a.output) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for d in &rec.damage {
        eprintln!("skipped: {d}");
    }
    println!(
        "recovered {} messages on {} topics into {}; {} damaged regions skipped",
        rec.messages,
        rec.per_topic.len(),
        a.output.display(),
        rec.damage.len()
    );
    for (t, n) in &rec.per_topic {
        println!("  {t}: {n}");
    }
    Ok(ExitCode::from(if rec.damage.is_empty() { 0 } else { 3 }))
}
