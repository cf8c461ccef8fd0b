//! What a replay measured: report.json (machine-readable) and report.md (for people).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::coco::{CocoCollector, CocoSummary};
use super::depth::DepthReport;
use crate::bag::out_path::write_atomic;
use crate::engine::StageTimes;
use crate::error::{Error, Result};
use crate::tracking::metrics::StabilityReport;

/// One processed frame, for the plots. Plain numbers only: up to [`SERIES_MAX`] of them live for
/// the whole replay, so a sample owns no heap memory (the topic is shared, the latencies inline).
#[derive(Debug, Clone)]
pub struct FrameSample {
    /// Processed frames before this one (all topics, bag order).
    pub index: u64,
    /// Processed frames of this topic before this one.
    pub topic_index: u64,
    pub topic: Arc<str>,
    pub log_time_ns: u64,
    pub decode_ms: f64,
    /// The pipeline's stages, in [`StageTimes::NAMES`] order.
    pub stage_ms: [f64; StageTimes::NAMES.len()],
    pub total_ms: f64,
    pub instances: u64,
    /// The topic's sliding-window stability after this frame (NaN when there is no sample yet).
    pub mask_stability: f64,
    pub flicker_per_100: f64,
    pub instances_mean: f64,
}

impl FrameSample {
    /// Per stage (`decode`, the pipeline's stages, `total`), milliseconds.
    pub fn latencies(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        std::iter::once(("decode", self.decode_ms))
            .chain(StageTimes::NAMES.iter().copied().zip(self.stage_ms))
            .chain(std::iter::once(("total", self.total_ms)))
    }
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

/// Points kept for the plots at most: beyond it every other point goes and the spacing doubles,
/// so a replay's memory does not grow with the length of its bag.
pub const SERIES_MAX: usize = 4096;

/// Every `stride`-th of the items pushed, at most `cap` of them, evenly spaced from the first.
#[derive(Debug, Clone)]
pub struct Decimated<T> {
    items: Vec<T>,
    cap: usize,
    stride: u64,
    seen: u64,
}

impl<T> Decimated<T> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(2);
        Decimated {
            // All of it now: growing by doubling would leave the freed smaller buffers behind as
            // heap holes while a long replay runs.
            items: Vec::with_capacity(cap),
            cap,
            stride: 1,
            seen: 0,
        }
    }

    /// Whether the next push is kept (so a caller can skip building an item that would not be).
    pub fn wants_next(&self) -> bool {
        self.seen % self.stride == 0
    }

    pub fn push(&mut self, item: T) {
        if self.wants_next() {
            self.items.push(item);
            if self.items.len() >= self.cap {
                let mut k = 0;
                self.items.retain(|_| {
                    k += 1;
                    k % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    /// Counts a push whose item was not built (`wants_next()` was false).
    pub fn skip(&mut self) {
        debug_assert!(!self.wants_next());
        self.seen += 1;
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }
}

/// Latency samples of one stage in constant memory: counts per bucket of 1% width (log scale)
/// with the largest sample of each, the exact sum and maximum.
#[derive(Debug, Clone, Default)]
pub struct LatencyHist {
    /// Bucket `floor(ln(ms) / ln(1.01))` (i32::MIN for ms <= 0) -> (count, largest sample).
    buckets: BTreeMap<i32, (u64, f64)>,
    n: u64,
    sum: f64,
}

impl LatencyHist {
    pub fn push(&mut self, ms: f64) {
        let key = if ms > 0.0 {
            (ms.ln() / 1.01f64.ln()).floor() as i32
        } else {
            i32::MIN
        };
        let b = self.buckets.entry(key).or_insert((0, f64::NEG_INFINITY));
        b.0 += 1;
        b.1 = b.1.max(ms);
        self.n += 1;
        self.sum += ms;
    }

    /// `None` for no samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.n == 0 {
            return None;
        }
        let rank = |p: f64| {
            let k = ((p / 100.0 * self.n as f64).ceil() as u64).clamp(1, self.n);
            let mut cum = 0;
            for (count, max) in self.buckets.values() {
                cum += count;
                if cum >= k {
                    return *max;
                }
            }
            f64::NAN
        };
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            mean: self.sum / self.n as f64,
            max: rank(100.0),
        })
    }
}

/// Latency percentiles of one stage, in milliseconds: nearest rank, to within 1% (the largest
/// sample of the 1%-wide bucket that holds the rank; exact when samples are 1% apart).
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
        let mut h = LatencyHist::default();
        samples.iter().for_each(|&v| h.push(v));
        h.percentiles()
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
    /// Read errors by kind (`truncated`, `chunk_crc`, `chunk`, `framing`, `record`, `data_crc`,
    /// `not_mcap` for MCAP; `sqlite`, `io`, `layout`).
    pub read_errors_by_reason: BTreeMap<String, u64>,
    /// Frames carried over from the interrupted output by `--resume` (not counted in `frames`).
    pub resumed_frames: u64,
    pub wall_s: f64,
    /// Processed frames per wall-clock second, reading and writing included.
    pub fps: f64,
    /// Per stage (`decode`, the pipeline's stages, `total`), milliseconds.
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub detections_total: u64,
    pub detections_per_class: BTreeMap<String, u64>,
    pub topics: BTreeMap<String, TopicReport>,
    /// The run was stopped (Ctrl-C, SIGTERM or SIGHUP) before the end of the bag.
    pub interrupted: bool,
    /// Matching and AP when the replay ran with COCO ground truth.
    pub coco: Option<CocoSummary>,
    /// 3D statistics per colour topic paired with a depth topic (empty without depth).
    pub depth: BTreeMap<String, DepthReport>,
    #[serde(skip)]
    pub series: Decimated<FrameSample>,
    #[serde(skip)]
    pub coco_records: Option<CocoCollector>,
}

impl Report {
    /// The files [`Self::write`] puts into `dir`.
    pub const FILES: [&'static str; 4] =
        ["report.json", "report.md", "latency.png", "stability.png"];

    /// Writes `report.json`, `report.md`, `latency.png` and `stability.png` into `dir` (created
    /// when missing), each through a temporary name and a rename.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("report JSON: {e}")))?;
        let p = dir.join("report.json");
        write_atomic(&p, json.as_bytes()).map_err(|e| Error::io(&p, e))?;
        let p = dir.join("report.md");
        write_atomic(&p, self.markdown().as_bytes()).map_err(|e| Error::io(&p, e))?;
        super::plot::write_plots(self.series.items(), dir)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# yolact replay report\n");
        let _ = writeln!(s, "- bag: `{}`", md(&self.bag));
        let _ = writeln!(s, "- model: `{}`", md(&self.model));
        if let Some(o) = &self.output_bag {
            let _ = writeln!(s, "- output bag: `{}`", md(o));
        }
        if self.resumed_frames > 0 {
            let _ = writeln!(
                s,
                "- resumed: {} frames carried over from the interrupted output",
                self.resumed_frames
            );
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
            let _ = writeln!(
                s,
                "- **interrupted** (Ctrl-C, SIGTERM or SIGHUP) after {} frames",
                self.frames
            );
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
        if !self.depth.is_empty() {
            self.depth_markdown(&mut s);
        }
        if !self.skipped_by_reason.is_empty() {
            let _ = writeln!(s, "## Skipped frames\n\n| reason | count |\n|---|---:|");
            for (r, n) in &self.skipped_by_reason {
                let _ = writeln!(s, "| {} | {n} |", md(r));
            }
            let _ = writeln!(s);
            for k in &self.skipped {
                let _ = writeln!(
                    s,
                    "- `{}` @ {} ns: {} ({})",
                    md(&k.topic),
                    k.log_time_ns,
                    md(&k.reason),
                    md(&k.error)
                );
            }
            let _ = writeln!(s);
        }
        if !self.read_errors.is_empty() {
            let _ = writeln!(s, "## Read errors\n\n| kind | count |\n|---|---:|");
            for (r, n) in &self.read_errors_by_reason {
                let _ = writeln!(s, "| {} | {n} |", md(r));
            }
            let _ = writeln!(s);
            for e in &self.read_errors {
                let _ = writeln!(s, "- {}", md(e));
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
            let _ = writeln!(s, "| {} | {n} |", md(c));
        }
        let _ = writeln!(s, "\n## Topics\n");
        for (t, r) in &self.topics {
            let _ = writeln!(
                s,
                "### `{}` ({})\n\nframes {}, skipped {}, detections {}\n",
                md(t),
                md(&r.msg_type),
                r.frames,
                r.skipped,
                r.detections
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

impl Report {
    fn depth_markdown(&self, s: &mut String) {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        let _ = writeln!(
            s,
            "## 3D (aligned depth)\n\n| colour topic | depth topic | paired | pairing rate | colour unpaired | depth unpaired | errors | located | without enough depth | valid depth (mean / pooled) | centroid jitter RMS, median over tracks (m) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (t, d) in &self.depth {
            let _ = writeln!(
                s,
                "| `{}` | `{}`{} | {} | {:.3} | {} | {} | {} | {} | {} | {} / {} | {} |",
                md(t),
                md(&d.depth_topic),
                if d.registered {
                    ""
                } else {
                    " (not registered)"
                },
                d.paired,
                d.pairing_rate,
                d.colour_unpaired,
                d.depth_unpaired,
                d.errors,
                d.instances_located,
                d.instances_without_enough_depth,
                opt(d.valid_depth_fraction_mean),
                opt(d.valid_depth_fraction_pooled),
                opt(d.jitter_rms_m_median)
            );
        }
        let _ = writeln!(s);
        for (t, d) in &self.depth {
            if let Some(e) = &d.last_error {
                let _ = writeln!(s, "- `{}`: last depth error: {}", md(t), md(e));
            }
            let several: Vec<_> = d.tracks.iter().filter(|(_, j)| j.frames > 1).collect();
            if several.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "\n### Centroid jitter per track, `{}`\n\n| track | frames | mean centroid (m) | RMS about the mean (m) | mean step (m) |\n|---:|---:|---|---:|---:|",
                md(t)
            );
            for (id, j) in several {
                let c = j.centroid_mean;
                let _ = writeln!(
                    s,
                    "| {id} | {} | ({:.3}, {:.3}, {:.3}) | {} | {} |",
                    j.frames,
                    c[0],
                    c[1],
                    c[2],
                    opt(j.jitter_rms_m),
                    opt(j.step_mean_m)
                );
            }
        }
        let _ = writeln!(s);
    }
}

/// Text from the data (error messages, topics, paths) made safe for one line of a Markdown
/// table or list: line breaks become spaces, `|` and backticks are escaped.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_text_cannot_break_the_markdown() {
        assert_eq!(md("a\nb|c`d\r\ne"), "a b\\|c'd  e");
    }

    #[test]
    fn a_frame_sample_lists_decode_the_stages_in_order_then_total() {
        let f = FrameSample {
            index: 0,
            topic_index: 0,
            topic: "/cam".into(),
            log_time_ns: 0,
            decode_ms: 1.5,
            stage_ms: std::array::from_fn(|i| 10.0 + i as f64),
            total_ms: 99.0,
            instances: 0,
            mask_stability: f64::NAN,
            flicker_per_100: f64::NAN,
            instances_mean: f64::NAN,
        };
        let got: Vec<(&str, f64)> = f.latencies().collect();
        assert_eq!(got.len(), StageTimes::NAMES.len() + 2);
        assert_eq!(got[0], ("decode", 1.5));
        assert_eq!(got[1], (StageTimes::NAMES[0], 10.0));
        assert_eq!(
            got[got.len() - 2].1,
            10.0 + (StageTimes::NAMES.len() - 1) as f64
        );
        assert_eq!(got[got.len() - 1], ("total", 99.0));
    }

    #[test]
    fn decimated_keeps_evenly_spaced_items_within_its_cap() {
        let mut d = Decimated::new(8);
        for i in 0..100u64 {
            if d.wants_next() {
                d.push(i);
            } else {
                d.skip();
            }
        }
        // 100 items: the spacing doubled from 1 to 16, the first kept.
        assert_eq!(d.items(), &[0, 16, 32, 48, 64, 80, 96]);
        let mut d = Decimated::new(8);
        (0..5u64).for_each(|i| d.push(i));
        assert_eq!(d.items(), &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn latency_percentiles_are_within_a_percent_and_memory_is_bounded() {
        let mut h = LatencyHist::default();
        let mut exact = Vec::new();
        let mut x = 0x1234_5678u64;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = 5.0 + (x >> 11) as f64 / (1u64 << 53) as f64 * 95.0;
            h.push(ms);
            exact.push(ms);
        }
        let want = {
            let mut s = exact.clone();
            s.sort_by(f64::total_cmp);
            let r =
                |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
            (r(50.0), r(90.0), r(99.0), s[s.len() - 1])
        };
        let p = h.percentiles().unwrap();
        for (got, want) in [(p.p50, want.0), (p.p90, want.1), (p.p99, want.2)] {
            assert!(got >= want && got <= want * 1.01, "{got} vs {want}");
        }
        assert_eq!(p.max, want.3);
        // 5..100 ms in 1% buckets: about 300 of them, whatever the sample count.
        assert!(h.buckets.len() < 320, "{}", h.buckets.len());
    }

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
