//! The node's 3D outputs from an aligned depth image: the depth and camera_info sinks, pairing
//! of processed colour frames with depth frames by stamp ([`crate::depth::pairing`]), and the
//! `Detection3DArray` / `PointCloud2` of each pair (computed by [`crate::depth::frame`], as in the
//! replay).
//!
//! The sinks only parse a header (or a `CameraInfo`) and queue; the worker pushes each processed
//! colour frame and polls after every frame and every idle wake-up (at most 200 ms), so a depth
//! frame arriving after its colour frame's inference is still paired.

use std::sync::Mutex;

use super::lock;
use super::params::DepthParams;
use super::transport::RawPublisher;
use crate::bag::CdrReader;
use crate::depth::{locate_frame, PairerStats, StampPairer};
use crate::msgs::camera_info::CameraInfo;
use crate::msgs::point_cloud;
use crate::output::detection::Detections;

/// A processed colour frame waiting for its depth frame.
pub(super) struct ColourFrame {
    pub dets: Detections,
    pub track_ids: Vec<u32>,
}

/// Totals since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DepthCounters {
    pub camera_infos: u64,
    /// Instances located in 3D.
    pub located: u64,
    /// Instances with too few valid depth points (no box published).
    pub not_enough_depth: u64,
    /// Pairs that could not be used (bad CameraInfo, undecodable depth, sizes), with the last reason.
    pub errors: u64,
    pub last_error: Option<String>,
    pub published: u64,
    pub clouds_published: u64,
}

/// One camera's depth state, behind one mutex shared by the sinks and the worker.
pub(super) struct DepthState {
    pub pairer: StampPairer<ColourFrame, Vec<u8>>,
    pub info: Option<CameraInfo>,
    pub counters: DepthCounters,
}

impl DepthState {
    pub fn new(p: &DepthParams) -> Self {
        // The worker keeps few colour frames in flight; 2 leaves room for one late depth frame.
        Self {
            pairer: StampPairer::new((p.slop_s * 1e9).round() as i64, 2, p.queue_size),
            info: None,
            counters: DepthCounters::default(),
        }
    }

    pub fn snapshot(&self) -> (PairerStats, DepthCounters) {
        (self.pairer.stats(), self.counters.clone())
    }
}

fn error(st: &Mutex<DepthState>, msg: String) {
    let mut g = lock(st);
    if g.counters.last_error.as_deref() != Some(msg.as_str()) {
        log::warn!("depth: {msg}");
    }
    g.counters.errors += 1;
    g.counters.last_error = Some(msg);
}

/// The depth image sink: only the header is read here.
pub(super) fn sink_depth(st: &Mutex<DepthState>, data: Vec<u8>) {
    let stamp = CdrReader::new(&data).and_then(|mut r| r.read_header());
    match stamp {
        Ok(h) => lock(st).pairer.push_depth(h.stamp.as_nanos(), data),
        Err(e) => error(st, format!("depth image: {e}")),
    }
}

pub(super) fn sink_info(st: &Mutex<DepthState>, data: Vec<u8>) {
    match CameraInfo::from_cdr(&data) {
        Ok(info) => {
            let mut g = lock(st);
            g.counters.camera_infos += 1;
            g.info = Some(info);
        }
        Err(e) => error(st, format!("camera_info: {e}")),
    }
}

/// Publishers of one camera's 3D outputs.
pub(super) struct Publishers<'a> {
    pub detections: Option<&'a dyn RawPublisher>,
    pub points: Option<&'a dyn RawPublisher>,
}

/// Decodes, locates and publishes every pair that is ready.
pub(super) fn process(st: &Mutex<DepthState>, p: &DepthParams, pubs: &Publishers<'_>) {
    let (pairs, info) = {
        let mut g = lock(st);
        (g.pairer.poll(), g.info.clone())
    };
    for pair in pairs {
        if let Err(e) = one_pair(st, p, pubs, &pair.colour, &pair.depth, info.as_ref()) {
            error(st, e);
        }
    }
}

fn one_pair(
    st: &Mutex<DepthState>,
    p: &DepthParams,
    pubs: &Publishers<'_>,
    colour: &ColourFrame,
    depth_cdr: &[u8],
    info: Option<&CameraInfo>,
) -> Result<(), String> {
    let info = info.ok_or("no camera_info received yet for the depth image")?;
    let want_points = pubs
        .points
        .is_some_and(|q| q.subscription_count() != Some(0));
    let frame = locate_frame(
        &colour.dets,
        &colour.track_ids,
        info,
        depth_cdr,
        p.scale,
        &p.options,
        want_points,
    )
    .map_err(|e| e.to_string())?;
    let located = frame.detections.detections.len() as u64;
    let not_enough = frame.results.len() as u64 - located;
    let mut first_err = None;
    let mut sent = (false, false);
    if let Some(q) = pubs.detections {
        match frame
            .detections
            .to_cdr()
            .map_err(|e| e.to_string())
            .and_then(|b| q.publish(&b).map_err(|e| e.to_string()))
        {
            Ok(()) => sent.0 = true,
            Err(e) => first_err = Some(format!("detections_3d: {e}")),
        }
    }
    if let (Some(q), true) = (pubs.points, want_points) {
        match point_cloud::to_cdr(&frame.header, &frame.points)
            .map_err(|e| e.to_string())
            .and_then(|b| q.publish(&b).map_err(|e| e.to_string()))
        {
            Ok(()) => sent.1 = true,
            Err(e) => {
                first_err.get_or_insert(format!("points: {e}"));
            }
        }
    }
    {
        let mut g = lock(st);
        g.counters.located += located;
        g.counters.not_enough_depth += not_enough;
        g.counters.published += u64::from(sent.0);
        g.counters.clouds_published += u64::from(sent.1);
    }
    first_err.map_or(Ok(()), Err)
}

/// `/diagnostics` values of one camera's depth, and a warning when the last pair failed.
pub(super) fn diagnostic_values(stats: &PairerStats, c: &DepthCounters) -> Vec<(String, String)> {
    let rate = if stats.colour_in == 0 {
        0.0
    } else {
        stats.paired as f64 / stats.colour_in as f64
    };
    let mut v = vec![
        ("depth.pairing_rate".to_string(), format!("{rate:.3}")),
        ("depth.paired".into(), stats.paired.to_string()),
        (
            "depth.colour_unpaired".into(),
            stats.colour_unpaired.to_string(),
        ),
        (
            "depth.depth_unpaired".into(),
            stats.depth_unpaired.to_string(),
        ),
        ("depth.instances_located".into(), c.located.to_string()),
        (
            "depth.instances_without_enough_depth".into(),
            c.not_enough_depth.to_string(),
        ),
        ("depth.camera_infos".into(), c.camera_infos.to_string()),
        ("depth.published".into(), c.published.to_string()),
        (
            "depth.clouds_published".into(),
            c.clouds_published.to_string(),
        ),
        ("depth.errors".into(), c.errors.to_string()),
    ];
    if let Some(e) = &c.last_error {
        v.push(("depth.last_error".into(), e.clone()));
    }
    v
}
