//! What a replay measured: report.json (machine-readable) and report.md (for people).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::coco::{CocoCollector, CocoSummary};
use crate::error::{Error, Result};
use crate::tracking::metrics::StabilityReport;

/// One processed frame, for the plots.
#[derive(Debug, Clone)]
pub struct FrameSample {
    pub topic: String,
    pub log_time_ns: u64,
    /// Per stage (`decode`, the pipeline's stages, `total`), milliseconds.
    pub latency_ms: Vec<(&'static str, f64)>,
    pub instances: u64,
    /// The topic's sliding-window stability after this frame (NaN when there is no sample yet).
    pub mask_stability: f64,
    pub flicker_per_100: f64,
    pub instances_mean: f64,
}

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
    /// Storage read errors: a damaged file ends with one; a single unreadable record is one and
    /// reading goes on.
    pub read_errors: Vec<String>,
    pub wall_s: f64,
    /// Processed frames per wall-clock second, reading and writing included.
    pub fps: f64,
    /// Per stage (`decode`, the pipeline's stages, `total`), milliseconds.
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub detections_total: u64,
    pub detections_per_class: BTreeMap<String, u64>,
    pub topics: BTreeMap<String, TopicReport>,
    /// The run was stopped (Ctrl-C) before the end of the bag.
    pub interrupted: bool,
    /// Matching and AP when the replay ran with COCO ground truth.
    pub coco: Option<CocoSummary>,
    #[serde(skip)]
    pub series: Vec<FrameSample>,
    #[serde(skip)]
    pub coco_records: Option<CocoCollector>,
}

impl Report {
    /// Writes `report.json`, `report.md`, `latency.png` and `stability.png` into `dir` (created
    /// when missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("report JSON: {e}")))?;
        let p = dir.join("report.json");
        std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
        let p = dir.join("report.md");
        std::fs::write(&p, self.markdown()).map_err(|e| Error::io(&p, e))?;
        super::plot::write_plots(&self.series, dir)
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
            "- wall time: {:.2} s, throughput: {:.3} frames/s",
            self.wall_s, self.fps
        );
        if self.interrupted {
            let _ = writeln!(s, "- **interrupted** (Ctrl-C) after {} frames", self.frames);
        }
        let _ = writeln!(s, "\nPlots: `latency.png`, `stability.png`.\n");
        if let Some(c) = &self.coco {
            let _ = writeln!(
                s,
                "## COCO\n\nframes matched by {}: {}, unmatched (not evaluated): {}\n",
                c.matched_by, c.matched, c.unmatched
            );
            if let Some(st) = &c.stats {
                let _ = writeln!(
                    s,
                    "| | AP | AP50 | AP75 | APs | APm | APl |\n|---|---:|---:|---:|---:|---:|---:|"
                );
                for kind in ["bbox", "segm"] {
                    let Some(k) = st.get(kind) else { continue };
                    let f = |n: &str| {
                        k.get(n)
                            .and_then(serde_json::Value::as_f64)
                            .unwrap_or(f64::NAN)
                    };
                    let _ = writeln!(
                        s,
                        "| {kind} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                        f("AP"),
                        f("AP50"),
                        f("AP75"),
                        f("APs"),
                        f("APm"),
                        f("APl")
                    );
                }
                let _ = writeln!(s);
            }
        }
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
