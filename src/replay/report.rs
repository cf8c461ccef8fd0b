//! What a replay measured: report.json (machine-readable) and report.md (for people).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tracking::metrics::StabilityReport;

/// A frame that was not processed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub topic: String,
    pub log_time_ns: u64,
    /// Short machine-readable kind: `unsupported_type`, `encoding`, `image`, `cdr`, `inference`.
    pub reason: String,
    pub error: String,
}

/// Latency percentiles of one stage, in milliseconds (nearest rank).
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = (p / 100.0 * s.len() as f64).ceil() as usize;
            s[k.clamp(1, s.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            mean: s.iter().sum::<f64>() / s.len() as f64,
            max: s[s.len() - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicReport {
    pub msg_type: String,
    pub frames: u64,
    pub skipped: u64,
    pub detections: u64,
    pub stability: StabilityReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bag: String,
    pub model: String,
    pub output_bag: Option<String>,
    /// Messages read from the selected topics.
    pub messages: u64,
    /// Frames segmented and written.
    pub frames: u64,
    pub skipped_total: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    pub skipped: Vec<Skipped>,
    /// Storage read errors; each ends the file it came from.
    pub read_errors: Vec<String>,
    pub wall_s: f64,
    /// Processed frames per wall-clock second, reading and writing included.
    pub fps: f64,
    /// Per stage (`decode`, the pipeline's stages, `total`), milliseconds.
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub detections_total: u64,
    pub detections_per_class: BTreeMap<String, u64>,
    pub topics: BTreeMap<String, TopicReport>,
}

impl Report {
    /// Writes `report.json` and `report.md` into `dir` (created when missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("report JSON: {e}")))?;
        let p = dir.join("report.json");
        std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
        let p = dir.join("report.md");
        std::fs::write(&p, self.markdown()).map_err(|e| Error::io(&p, e))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# yolact replay report\n");
        let _ = writeln!(s, "- bag: `{}`", self.bag);
        let _ = writeln!(s, "- model: `{}`", self.model);
        if let Some(o) = &self.output_bag {
            let _ = writeln!(s, "- output bag: `{o}`");
        }
        let _ = writeln!(
            s,
            "- messages: {}, frames processed: {}, skipped: {}",
            self.messages, self.frames, self.skipped_total
        );
        let _ = writeln!(
            s,
            "- wall time: {:.2} s, throughput: {:.3} frames/s\n",
            self.wall_s, self.fps
        );
        if !self.skipped_by_reason.is_empty() {
            let _ = writeln!(s, "## Skipped frames\n\n| reason | count |\n|---|---:|");
            for (r, n) in &self.skipped_by_reason {
                let _ = writeln!(s, "| {r} | {n} |");
            }
            let _ = writeln!(s);
            for k in &self.skipped {
                let _ = writeln!(
                    s,
                    "- `{}` @ {} ns: {} ({})",
                    k.topic, k.log_time_ns, k.reason, k.error
                );
            }
            let _ = writeln!(s);
        }
        if !self.read_errors.is_empty() {
            let _ = writeln!(s, "## Read errors\n");
            for e in &self.read_errors {
                let _ = writeln!(s, "- {e}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "## Latency (ms)\n\n| stage | p50 | p90 | p99 | mean | max |\n|---|---:|---:|---:|---:|---:|"
        );
        for (k, p) in &self.latency_ms {
            let _ = writeln!(
                s,
                "| {k} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.p50, p.p90, p.p99, p.mean, p.max
            );
        }
        let _ = writeln!(
            s,
            "\n## Detections per class ({} in all)\n\n| class | count |\n|---|---:|",
            self.detections_total
        );
        for (c, n) in &self.detections_per_class {
            let _ = writeln!(s, "| {c} | {n} |");
        }
        let _ = writeln!(s, "\n## Topics\n");
        for (t, r) in &self.topics {
            let _ = writeln!(
                s,
                "### `{t}` ({})\n\nframes {}, skipped {}, detections {}\n",
                r.msg_type, r.frames, r.skipped, r.detections
            );
            let stab = serde_json::to_string_pretty(&r.stability).unwrap_or_default();
            let _ = writeln!(
                s,
                "Stability (window and whole run):\n\n```json\n{stab}\n```\n"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert!((p.mean - 50.5).abs() < 1e-12);
        let p = Percentiles::of(&[3.0]).unwrap();
        assert_eq!((p.p50, p.p99), (3.0, 3.0));
        assert!(Percentiles::of(&[]).is_none());
    }
}
