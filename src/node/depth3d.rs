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
    /// Pairs that arrived before any CameraInfo: skipped. Normal for the first frames after start
    /// (best-effort CameraInfo, topics matched one by one), so not an error; a warning on
    /// `/diagnostics` only while no CameraInfo has ever come (a wrong `camera_info` topic).
    pub waiting_for_info: u64,
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
    let Some(info) = info else {
        if !pairs.is_empty() {
            let mut g = lock(st);
            if g.counters.waiting_for_info == 0 {
                log::info!("depth: no camera_info received yet; depth frames wait for one");
            }
            g.counters.waiting_for_info += pairs.len() as u64;
        }
        return;
    };
    for pair in pairs {
        if let Err(e) = one_pair(st, p, pubs, &pair.colour, &pair.depth, &info) {
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
    info: &CameraInfo,
) -> Result<(), String> {
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
        (
            "depth.waiting_for_camera_info".into(),
            c.waiting_for_info.to_string(),
        ),
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

/// Why a camera's depth status is at least WARN, if it is: frames that failed (with the last
/// reason), or depth frames that keep waiting because no CameraInfo has ever arrived.
pub(super) fn warning(c: &DepthCounters) -> Option<String> {
    if c.errors > 0 {
        let why = c.last_error.as_deref().unwrap_or("");
        Some(format!("{} depth frames unusable: {why}", c.errors))
    } else if c.camera_infos == 0 && c.waiting_for_info > 0 {
        Some(format!(
            "{} depth frames waiting: no camera_info received",
            c.waiting_for_info
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::{Header, Time};

    fn params() -> DepthParams {
        DepthParams {
            slop_s: 0.01,
            queue_size: 4,
            scale: None,
            options: Default::default(),
        }
    }

    fn colour() -> ColourFrame {
        ColourFrame {
            dets: Detections {
                width: 8,
                height: 6,
                config: "test".into(),
                class_names: None,
                items: Vec::new(),
            },
            track_ids: Vec::new(),
        }
    }

    fn pair_at(st: &Mutex<DepthState>, stamp: i64, depth: Vec<u8>) {
        let mut g = lock(st);
        g.pairer.push_colour(stamp, colour());
        g.pairer.push_depth(stamp, depth);
    }

    const NO_PUBS: Publishers<'static> = Publishers {
        detections: None,
        points: None,
    };

    #[test]
    fn depth_before_any_camera_info_waits_and_warns_only_while_none_came() {
        let p = params();
        let st = Mutex::new(DepthState::new(&p));
        pair_at(&st, 1_000, Vec::new());
        process(&st, &p, &NO_PUBS);
        let c = lock(&st).counters.clone();
        assert_eq!((c.waiting_for_info, c.errors), (1, 0), "{c:?}");
        let w = warning(&c).expect("a warning while no camera_info came");
        assert!(w.contains("no camera_info received"), "{w}");

        let header = Header {
            stamp: Time { sec: 0, nanosec: 0 },
            frame_id: "cam".into(),
        };
        let info = CameraInfo::pinhole(header, 8, 6, 5.0, 5.0, 3.5, 2.5);
        sink_info(&st, info.to_cdr().unwrap());
        let c = lock(&st).counters.clone();
        assert_eq!(warning(&c), None, "{c:?}");

        // With a CameraInfo, a depth frame that does not decode is an error, with its reason.
        pair_at(&st, 2_000, vec![1, 2, 3]);
        process(&st, &p, &NO_PUBS);
        let c = lock(&st).counters.clone();
        assert_eq!((c.waiting_for_info, c.errors), (1, 1), "{c:?}");
        assert!(warning(&c).is_some_and(|w| w.starts_with("1 depth frames unusable")));
    }
}
