//! Offline evaluation: segment every image of a rosbag2 recording, in bag order, without ROS.
//!
//! Each image message becomes an `InstanceArray` and a `Detection2DArray` on
//! `<topic>/yolact/instances` and `<topic>/yolact/detections` of an output MCAP bag, with the
//! input's header and log time; a colour topic paired with an aligned depth topic ([`depth`])
//! also gets a `Detection3DArray` and a `PointCloud2` per paired frame on
//! `<topic>/yolact/detections_3d` and `<topic>/yolact/points`, at the colour frame's log time;
//! a final `/diagnostics` message carries the run's metrics. A frame
//! that cannot be decoded or segmented is skipped and counted with its reason; a storage read
//! error (a damaged chunk, a cut-off file) is recorded with its kind and reading goes on (as
//! [`crate::bag::BagReader::messages`] does). The output bag is written as `OUT.partial.mcap`,
//! handed to the OS a chunk each second, and renamed to `OUT` when finished; it is
//! finished even when the loop stops early, so processed frames are never lost (and after a
//! SIGKILL, `--resume` or `yolact bag-recover` gets them back from `OUT.partial.mcap`).

pub mod coco;
pub mod depth;
pub mod plot;
pub mod report;
pub mod resume;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::bag::out_path::refuse_overlap;
use crate::bag::{decode_image, image_msg::is_image_type, open_bag, Header, Time};
use crate::engine::{Engine, InferOptions, StageTimes};
use crate::error::{Error, Result};
use crate::msgs::{schema, DiagnosticArray, DiagnosticStatus, InstanceArray};
use crate::tracking::{MetricsConfig, StreamStability, TrackerConfig};

pub use coco::{CocoCollector, CocoMatch, CocoMatcher, CocoSummary};
pub use depth::{DepthOptions, DepthReport, DepthSelection, DepthTopics};
pub use report::{
    Decimated, FrameSample, LatencyHist, Percentiles, Report, Skipped, TopicReport, SERIES_MAX,
};
pub use writer::BagWriter;

pub const DIAGNOSTICS_TOPIC: &str = "/diagnostics";

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Topics to segment; all Image / CompressedImage topics when `None`.
    pub topics: Option<Vec<String>>,
    /// Output MCAP file.
    pub out: Option<PathBuf>,
    /// Also write each input message to the output bag on its own topic.
    pub copy_inputs: bool,
    pub infer: InferOptions,
    /// Checked between frames; when set, the loop stops and the output bag is finished.
    pub stop: Option<Arc<AtomicBool>>,
    /// Advanced once per message read; its length is set to the selected topics' message count.
    pub progress: Option<ProgressBar>,
    /// Collect COCO result records for the frames this matcher finds an image for.
    pub coco: Option<CocoMatcher>,
    /// Continue the frames already in `out` (or `OUT.partial.mcap`) instead of starting over.
    pub resume: bool,
    /// Depth pairing and the 3D outputs; `None`: none.
    pub depth: Option<DepthOptions>,
}

impl ReplayOptions {
    pub fn new(infer: InferOptions) -> Self {
        ReplayOptions {
            topics: None,
            out: None,
            copy_inputs: false,
            infer,
            stop: None,
            progress: None,
            coco: None,
            resume: false,
            depth: None,
        }
    }
}

/// The bag's paths that no output may be or be inside: the bag itself and its storage files.
pub fn input_paths(bag: &Path) -> Vec<PathBuf> {
    let mut v = vec![bag.to_path_buf()];
    if let Ok(r) = open_bag(bag) {
        v.extend(r.files().map(|(p, _)| p.to_path_buf()));
    }
    v
}

pub fn instances_topic(topic: &str) -> String {
    format!("{}/yolact/instances", topic.trim_end_matches('/'))
}

pub fn detections_topic(topic: &str) -> String {
    format!("{}/yolact/detections", topic.trim_end_matches('/'))
}

fn secs(t: Time) -> f64 {
    t.as_nanos() as f64 * 1e-9
}

struct TopicState {
    /// Shared by the frame samples of the plots.
    topic: std::sync::Arc<str>,
    msg_type: String,
    frames: u64,
    skipped: u64,
    detections: u64,
    stability: StreamStability,
    last_stamp: Option<f64>,
}

/// Replays `bag` through `engine`. Errors only when the bag cannot be opened or the output cannot
/// be created or finished; everything per frame goes into the report.
pub fn replay(engine: &Engine, bag: &Path, opts: &ReplayOptions) -> Result<Report> {
    let start = Instant::now();
    let reader = open_bag(bag)?;
    let all_topics = reader.topics()?;
    let image_topics: Vec<String> = all_topics
        .iter()
        .filter(|t| is_image_type(&t.msg_type))
        .map(|t| t.name.clone())
        .collect();
    let listing = || {
        if image_topics.is_empty() {
            let all: Vec<String> = all_topics
                .iter()
                .map(|t| format!("{} ({})", t.name, t.msg_type))
                .collect();
            format!(
                "the bag has no Image or CompressedImage topic; its topics: {}",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.join(", ")
                }
            )
        } else {
            format!("the bag's image topics: {}", image_topics.join(", "))
        }
    };
    let mut selected: Vec<String> = match &opts.topics {
        Some(t) => t.clone(),
        None => image_topics.clone(),
    };
    let missing: Vec<&str> = selected
        .iter()
        .filter(|t| !all_topics.iter().any(|i| &i.name == *t))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "--topics: {} not in {}; {}",
            missing.join(", "),
            bag.display(),
            listing()
        )));
    }
    let mut depth3d = match &opts.depth {
        Some(d) => {
            // A topic given as depth is not also a colour topic (it would be segmented as one).
            let given: Vec<&str> = match &d.selection {
                DepthSelection::Given(g) => g.iter().map(|t| t.depth.as_str()).collect(),
                _ => Vec::new(),
            };
            if opts.topics.is_some() {
                if let Some(t) = given.iter().find(|t| selected.iter().any(|s| s == *t)) {
                    return Err(Error::Invalid(format!(
                        "{t} is both in --topics and a --depth topic"
                    )));
                }
            } else {
                selected.retain(|t| !given.contains(&t.as_str()));
            }
            let colour: Vec<String> = selected
                .iter()
                .filter(|t| {
                    all_topics
                        .iter()
                        .any(|i| &i.name == *t && is_image_type(&i.msg_type))
                })
                .cloned()
                .collect();
            let pairings = depth::resolve(&d.selection, &colour, &all_topics)?;
            if opts.topics.is_none() {
                // The paired depth streams are inputs of the 3D outputs, not images to segment.
                selected.retain(|t| !pairings.iter().any(|p| &p.depth == t));
            }
            for p in &pairings {
                log::info!(
                    "3D outputs: {} paired with {} and {}",
                    p.colour,
                    p.depth,
                    p.info
                );
            }
            (!pairings.is_empty()).then(|| depth::DepthReplay::new(pairings, d))
        }
        None => None,
    };
    if selected.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: nothing to segment: {}",
            bag.display(),
            listing()
        )));
    }
    let mut to_read = selected.clone();
    for t in depth3d.iter().flat_map(depth::DepthReplay::input_topics) {
        if !to_read.contains(&t) {
            to_read.push(t);
        }
    }
    if let Some(pb) = &opts.progress {
        let total: u64 = all_topics
            .iter()
            .filter(|t| to_read.contains(&t.name))
            .map(|t| t.count)
            .sum();
        pb.set_length(total);
    }
    let mut coco = opts
        .coco
        .clone()
        .map(|m| CocoCollector::new(m, engine.config()))
        .transpose()?;
    // Position of the next image message among the selected topics (COCO index matching).
    let mut image_index = 0u64;
    if let Some(p) = &opts.out {
        refuse_overlap(&input_paths(bag), &[("--out".into(), p.clone())])
            .map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let mut resumed = match (&opts.out, opts.resume) {
        (Some(p), true) => resume::prepare(p, opts.copy_inputs)?,
        _ => None,
    };
    let mut out = match &opts.out {
        Some(p) => Some(BagWriter::create(p)?),
        None => None,
    };
    if let (Some(src), Some(w)) = (&resumed, out.as_mut()) {
        log::info!("--resume: carrying {} complete frames over", src.frames);
        src.carry(w, opts.copy_inputs)?;
    }

    let mut report = Report {
        bag: bag.display().to_string(),
        model: engine.config().name.to_string(),
        output_bag: opts.out.as_ref().map(|p| p.display().to_string()),
        messages: 0,
        frames: 0,
        skipped_total: 0,
        skipped_by_reason: BTreeMap::new(),
        skipped: Vec::new(),
        read_errors: Vec::new(),
        read_errors_by_reason: BTreeMap::new(),
        resumed_frames: resumed.as_ref().map_or(0, |r| r.frames),
        wall_s: 0.0,
        fps: 0.0,
        latency_ms: BTreeMap::new(),
        detections_total: 0,
        detections_per_class: BTreeMap::new(),
        topics: BTreeMap::new(),
        interrupted: false,
        coco: None,
        series: Decimated::new(SERIES_MAX),
        coco_records: None,
        depth: BTreeMap::new(),
    };
    let mut states: BTreeMap<String, TopicState> = BTreeMap::new();
    let mut lat: BTreeMap<&'static str, LatencyHist> = BTreeMap::new();
    let mut last_log_ns = 0u64;
    // A write error stops the loop (the disk is full or gone) but the bag is still finished.
    let mut write_error = None;

    let skip = |report: &mut Report, topic: &str, t: u64, reason: &str, error: String| {
        log::warn!("{topic} @ {t}: skipped ({reason}): {error}");
        report.skipped_total += 1;
        *report.skipped_by_reason.entry(reason.into()).or_default() += 1;
        report.skipped.push(Skipped {
            topic: topic.into(),
            log_time_ns: t,
            reason: reason.into(),
            error,
        });
    };

    for item in reader.messages(Some(&to_read)) {
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            report.interrupted = true;
            break;
        }
        if let Some(pb) = &opts.progress {
            pb.inc(1);
        }
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                log::warn!("bag read error: {e}");
                *report
                    .read_errors_by_reason
                    .entry(e.read_error_kind().to_string())
                    .or_default() += 1;
                report.read_errors.push(e.to_string());
                continue;
            }
        };
        if let Some(r) = resumed.as_mut() {
            if r.take_done(&msg.topic, msg.log_time_ns) {
                if is_image_type(&msg.msg_type) {
                    image_index += 1;
                }
                continue;
            }
        }
        if !selected.contains(&msg.topic) {
            // A depth or camera-info message: it only feeds the pairing.
            last_log_ns = last_log_ns.max(msg.log_time_ns);
            let outs = depth3d
                .as_mut()
                .and_then(|d| d.input(&msg.topic, &msg.data))
                .unwrap_or_default();
            if let Err(e) = write_3d(out.as_mut(), &outs) {
                write_error = Some(e);
                break;
            }
            continue;
        }
        report.messages += 1;
        last_log_ns = last_log_ns.max(msg.log_time_ns);
        let state = match states.get_mut(&msg.topic) {
            Some(s) => s,
            None => {
                let stability =
                    StreamStability::new(TrackerConfig::default(), MetricsConfig::default())?;
                states.entry(msg.topic.clone()).or_insert(TopicState {
                    topic: msg.topic.as_str().into(),
                    msg_type: msg.msg_type.clone(),
                    frames: 0,
                    skipped: 0,
                    detections: 0,
                    stability,
                    last_stamp: None,
                })
            }
        };

        let frame_index = image_index;
        if is_image_type(&msg.msg_type) {
            image_index += 1;
        }

        let t0 = Instant::now();
        let decoded = match decode_image(&msg.msg_type, &msg.data) {
            Ok(d) => d,
            Err(e) => {
                state.skipped += 1;
                skip(
                    &mut report,
                    &msg.topic,
                    msg.log_time_ns,
                    e.frame_skip_kind(),
                    e.to_string(),
                );
                continue;
            }
        };
        let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (dets, times) = match engine.infer_timed(&decoded.image, &opts.infer) {
            Ok(r) => r,
            Err(e) => {
                state.skipped += 1;
                skip(
                    &mut report,
                    &msg.topic,
                    msg.log_time_ns,
                    "inference",
                    e.to_string(),
                );
                continue;
            }
        };

        let stamp = secs(decoded.header.stamp);
        if state.last_stamp.is_some_and(|l| stamp < l) {
            state.stability.reset();
        }
        state.last_stamp = Some(stamp);
        let track_ids = match state.stability.update_detections(stamp, &dets.items) {
            Ok(ids) => ids,
            Err(e) => {
                log::warn!("{} @ {}: tracking failed: {e}", msg.topic, msg.log_time_ns);
                vec![u32::MAX; dets.items.len()]
            }
        };
        let inst = InstanceArray::from_detections(decoded.header.clone(), &dets, &track_ids);
        let stamp_ns = decoded.header.stamp.as_nanos();
        if let Some(c) = coco.as_mut() {
            if let Err(e) = c.add(frame_index, stamp_ns, &dets) {
                log::warn!("{} @ {}: no COCO records: {e}", msg.topic, msg.log_time_ns);
            }
        }
        let outs_3d = match depth3d.as_mut() {
            Some(d) if d.pairs_colour(&msg.topic) => {
                d.colour(&msg.topic, stamp_ns, msg.log_time_ns, dets, track_ids)
            }
            _ => Vec::new(),
        };

        state.frames += 1;
        log::debug!(
            "{} @ {}: frame done, {} instances",
            msg.topic,
            msg.log_time_ns,
            inst.instances.len()
        );
        state.detections += inst.instances.len() as u64;
        report.frames += 1;
        report.detections_total += inst.instances.len() as u64;
        for i in &inst.instances {
            *report
                .detections_per_class
                .entry(i.class_name.clone())
                .or_default() += 1;
        }
        lat.entry("decode").or_default().push(decode_ms);
        for (name, d) in StageTimes::NAMES.iter().zip(times.as_array()) {
            lat.entry(name).or_default().push(d.as_secs_f64() * 1e3);
        }
        let total_ms = t0.elapsed().as_secs_f64() * 1e3;
        lat.entry("total").or_default().push(total_ms);
        if report.series.wants_next() {
            let window = state.stability.snapshot().window;
            report.series.push(FrameSample {
                index: report.frames - 1,
                topic_index: state.frames - 1,
                topic: state.topic.clone(),
                log_time_ns: msg.log_time_ns,
                decode_ms,
                stage_ms: times.as_array().map(|d| d.as_secs_f64() * 1e3),
                total_ms,
                instances: inst.instances.len() as u64,
                mask_stability: window.mask_stability_mean,
                flicker_per_100: window.flicker_per_100_track_frames,
                instances_mean: window.instances_per_frame_mean,
            });
        } else {
            report.series.skip();
        }

        if let Some(w) = out.as_mut() {
            let r = (|| -> Result<()> {
                if opts.copy_inputs {
                    w.write(
                        &msg.topic,
                        &input_type(&msg.msg_type),
                        msg.log_time_ns,
                        &msg.data,
                    )?;
                }
                w.write(
                    &instances_topic(&msg.topic),
                    schema::INSTANCE_ARRAY,
                    msg.log_time_ns,
                    &inst.to_cdr()?,
                )?;
                w.write(
                    &detections_topic(&msg.topic),
                    schema::DETECTION2D_ARRAY,
                    msg.log_time_ns,
                    &inst.to_detection2d_cdr()?,
                )?;
                for m in &outs_3d {
                    w.write(&m.topic, m.msg_type, m.log_time_ns, &m.cdr)?;
                }
                w.end_frame()
            })();
            if let Err(e) = r {
                write_error = Some(e);
                break;
            }
        }
    }

    if let Some(d) = depth3d.as_mut() {
        if write_error.is_none() {
            // The end of the bag (or of the run): no depth frame will come any more.
            let outs = d.finish();
            if let Err(e) = write_3d(out.as_mut(), &outs) {
                write_error = Some(e);
            }
        }
        report.depth = d.report();
    }
    if let Some(c) = coco {
        report.coco = Some(c.summary.clone());
        report.coco_records = Some(c);
    }
    report.wall_s = start.elapsed().as_secs_f64();
    report.fps = if report.wall_s > 0.0 {
        report.frames as f64 / report.wall_s
    } else {
        0.0
    };
    for (k, v) in lat {
        if let Some(p) = v.percentiles() {
            report.latency_ms.insert(k.to_string(), p);
        }
    }
    for (t, s) in states {
        report.topics.insert(
            t,
            TopicReport {
                msg_type: s.msg_type,
                frames: s.frames,
                skipped: s.skipped,
                detections: s.detections,
                stability: s.stability.snapshot(),
            },
        );
    }

    if let Some(mut w) = out {
        if write_error.is_none() {
            let diag = diagnostics(&report, last_log_ns);
            let r = diag.to_cdr().map_err(Into::into).and_then(|b| {
                w.write(
                    DIAGNOSTICS_TOPIC,
                    schema::DIAGNOSTIC_ARRAY,
                    last_log_ns + 1,
                    &b,
                )
            });
            if let Err(e) = r {
                write_error = Some(e);
            }
        }
        w.finish()?;
        if write_error.is_none() {
            if let Some(r) = resumed.take() {
                r.finish();
            }
        }
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    Ok(report)
}

/// Writes the 3D messages of the pairs just decided, as a frame of their own.
fn write_3d(out: Option<&mut BagWriter>, msgs: &[depth::OutMsg]) -> Result<()> {
    let Some(w) = out else { return Ok(()) };
    if msgs.is_empty() {
        return Ok(());
    }
    for m in msgs {
        w.write(&m.topic, m.msg_type, m.log_time_ns, &m.cdr)?;
    }
    w.end_frame()
}

/// ROS 1 style names (from old bags) map to the ROS 2 type whose schema we embed.
fn input_type(msg_type: &str) -> String {
    match msg_type {
        "sensor_msgs/Image" => schema::IMAGE.into(),
        "sensor_msgs/CompressedImage" => schema::COMPRESSED_IMAGE.into(),
        t => t.into(),
    }
}

/// The 3D statistics of one colour topic as `/diagnostics` values (the node's `depth.*` names
/// where the node has the same value).
fn depth_values(d: &DepthReport) -> Vec<(String, String)> {
    let opt = |v: Option<f64>| v.map_or_else(|| "nan".to_string(), |x| format!("{x:.4}"));
    let mut v = vec![
        (
            "depth.pairing_rate".to_string(),
            format!("{:.3}", d.pairing_rate),
        ),
        ("depth.paired".into(), d.paired.to_string()),
        (
            "depth.colour_unpaired".into(),
            d.colour_unpaired.to_string(),
        ),
        ("depth.depth_unpaired".into(), d.depth_unpaired.to_string()),
        (
            "depth.instances_located".into(),
            d.instances_located.to_string(),
        ),
        (
            "depth.instances_without_enough_depth".into(),
            d.instances_without_enough_depth.to_string(),
        ),
        ("depth.errors".into(), d.errors.to_string()),
        (
            "depth.valid_depth_fraction_mean".into(),
            opt(d.valid_depth_fraction_mean),
        ),
        (
            "depth.jitter_rms_m_median".into(),
            opt(d.jitter_rms_m_median),
        ),
    ];
    if let Some(e) = &d.last_error {
        v.push(("depth.last_error".into(), e.clone()));
    }
    v
}

/// The run's metrics as one DiagnosticStatus per segmented topic plus one for the whole run.
pub fn diagnostics(report: &Report, last_log_ns: u64) -> DiagnosticArray {
    let ns = last_log_ns.saturating_add(1);
    let header = Header {
        stamp: Time {
            sec: i32::try_from(ns / 1_000_000_000).unwrap_or(i32::MAX),
            nanosec: (ns % 1_000_000_000) as u32,
        },
        frame_id: String::new(),
    };
    let kv = |k: &str, v: String| (k.to_string(), v);
    let mut values = vec![
        kv("messages", report.messages.to_string()),
        kv("frames", report.frames.to_string()),
        kv("interrupted", report.interrupted.to_string()),
        kv("skipped", report.skipped_total.to_string()),
        kv("read_errors", report.read_errors.len().to_string()),
        kv("resumed_frames", report.resumed_frames.to_string()),
        kv("wall_s", format!("{:.3}", report.wall_s)),
        kv("fps", format!("{:.4}", report.fps)),
        kv("detections", report.detections_total.to_string()),
    ];
    for (r, n) in &report.skipped_by_reason {
        values.push(kv(&format!("skipped.{r}"), n.to_string()));
    }
    for (r, n) in &report.read_errors_by_reason {
        values.push(kv(&format!("read_errors.{r}"), n.to_string()));
    }
    for (stage, p) in &report.latency_ms {
        values.push(kv(
            &format!("latency_ms.{stage}.p50"),
            format!("{:.3}", p.p50),
        ));
        values.push(kv(
            &format!("latency_ms.{stage}.p90"),
            format!("{:.3}", p.p90),
        ));
        values.push(kv(
            &format!("latency_ms.{stage}.p99"),
            format!("{:.3}", p.p99),
        ));
    }
    let level = if report.skipped_total > 0 || !report.read_errors.is_empty() || report.interrupted
    {
        1
    } else {
        0
    };
    let mut status = vec![DiagnosticStatus {
        level,
        name: "yolact replay".into(),
        message: format!(
            "{} frames, {} skipped, {} read errors{}",
            report.frames,
            report.skipped_total,
            report.read_errors.len(),
            if report.interrupted {
                ", interrupted"
            } else {
                ""
            }
        ),
        hardware_id: report.model.clone(),
        values,
    }];
    for (t, r) in &report.topics {
        let mut values = vec![
            kv("frames", r.frames.to_string()),
            kv("skipped", r.skipped.to_string()),
            kv("detections", r.detections.to_string()),
        ];
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&r.stability.run) {
            for (k, v) in m {
                values.push(kv(&format!("stability.run.{k}"), v.to_string()));
            }
        }
        if let Some(d) = report.depth.get(t) {
            values.extend(depth_values(d));
        }
        status.push(DiagnosticStatus {
            level: 0,
            name: format!("yolact replay: {t}"),
            message: format!("{} frames", r.frames),
            hardware_id: report.model.clone(),
            values,
        });
    }
    DiagnosticArray { header, status }
}
