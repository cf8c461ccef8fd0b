//! The node's two threads: the inference worker (takes every pending frame, decodes, runs one
//! batched forward pass, tracks, publishes) and the diagnostics ticker.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;

use super::diagnostics::{camera_status, CameraContext, PeriodStats};
use super::latest::Pending;
use super::{lock, names, Shared};
use crate::bag::{decode_image, BagError, Header, Time};
use crate::msgs::{DiagnosticArray, InstanceArray};
use crate::tracking::{MetricsConfig, StreamStability, TrackerConfig};

/// A short, stable key for a decode failure, so each kind is logged once per camera; the
/// encoding or type is kept because the fix differs per value.
fn decode_reason(e: &BagError) -> String {
    match e {
        BagError::UnknownEncoding(enc) => format!("encoding:{enc}"),
        BagError::UnsupportedType(t) => format!("type:{t}"),
        _ => e.frame_skip_kind().to_string(),
    }
}

struct Frame {
    cam: usize,
    pending: Pending,
    header: Header,
}

pub(super) fn run(s: &Shared) {
    let n = s.params.cameras.len();
    let input_types: Vec<String> = s.input_topics().map(|t| t.type_name.clone()).collect();
    let mut streams: Vec<Option<StreamStability>> = (0..n).map(|_| None).collect();
    let mut last_stamp: Vec<Option<f64>> = vec![None; n];
    let opts = s.params.infer_options();
    let has_depth: Vec<bool> = s
        .params
        .cameras
        .iter()
        .map(|c| !c.depth_topic.is_empty())
        .collect();
    loop {
        let Some(taken) = s.latest.take_ready(Duration::from_millis(200)) else {
            return;
        };
        if taken.is_empty() {
            // A depth frame may have arrived for a colour frame already processed.
            if s.active.load(Ordering::SeqCst) {
                for cam in 0..n {
                    depth_poll(s, cam);
                }
            }
            continue;
        }
        let epoch = s.epoch.load(Ordering::SeqCst);
        let engine = if s.active.load(Ordering::SeqCst) {
            s.engine()
        } else {
            None
        };
        let Some(engine) = engine else {
            for (cam, _) in &taken {
                s.latest.count_dropped(*cam, 1);
            }
            continue;
        };
        // By the model's own class names (the shipped model's are not COCO's indices).
        let allow = s
            .params
            .class_filter(engine.config().class_names.as_deref());
        {
            let mut cams = lock(&s.cams);
            for (cam, _) in &taken {
                if let Some(c) = cams.get_mut(*cam) {
                    c.stats.in_flight = true;
                }
            }
        }

        let mut frames = Vec::with_capacity(taken.len());
        let mut images: Vec<RgbImage> = Vec::with_capacity(taken.len());
        for (cam, pending) in taken {
            let ty = input_types.get(cam).map_or("", String::as_str);
            match decode_image(ty, &pending.data) {
                Ok(d) => {
                    frames.push(Frame {
                        cam,
                        pending,
                        header: d.header,
                    });
                    images.push(d.image);
                }
                Err(e) => {
                    let reason = decode_reason(&e);
                    let mut cams = lock(&s.cams);
                    if let Some(c) = cams.get_mut(cam) {
                        c.stats.decode_errors += 1;
                        *c.stats.decode_reasons.entry(reason.clone()).or_default() += 1;
                        c.stats.in_flight = false;
                        if !c.decode_first.contains_key(&reason) {
                            log::warn!(
                                "camera {}: cannot decode a frame on {} ({reason}): {e}; further ones are only counted",
                                c.stats.name,
                                c.stats.topic
                            );
                            c.decode_first.insert(reason, e.to_string());
                        }
                    }
                }
            }
        }
        if images.is_empty() {
            continue;
        }

        let batch = images.len();
        let result = engine.infer_batch(&images, &opts);
        {
            let mut f = lock(&s.forward);
            f.0 += 1;
            *f.1.entry(batch).or_default() += 1;
        }
        let outs = match result {
            Ok(o) => o,
            Err(e) => {
                log::error!("inference failed for a batch of {batch}: {e}");
                let mut cams = lock(&s.cams);
                for fr in &frames {
                    if let Some(c) = cams.get_mut(fr.cam) {
                        c.stats.inference_errors += 1;
                        c.stats.in_flight = false;
                    }
                }
                continue;
            }
        };

        for ((fr, image), (mut dets, _times)) in frames.into_iter().zip(images).zip(outs) {
            if let Some(allow) = &allow {
                dets.items.retain(|d| allow.contains(&d.class_id));
            }
            let stamp = fr.header.stamp.as_nanos() as f64 * 1e-9;
            let stream = match &mut streams[fr.cam] {
                Some(st) => Some(st),
                slot @ None => {
                    match StreamStability::new(TrackerConfig::default(), MetricsConfig::default()) {
                        Ok(st) => Some(slot.insert(st)),
                        Err(e) => {
                            log::error!("tracking disabled: {e}");
                            None
                        }
                    }
                }
            };
            let mut snapshot = None;
            let track_ids = match stream {
                Some(st) => {
                    // A bag restarting or a camera clock jumping back starts a new stream.
                    if last_stamp[fr.cam].is_some_and(|l| stamp < l) {
                        st.reset();
                    }
                    let ids = st
                        .update_detections(stamp, &dets.items)
                        .unwrap_or_else(|e| {
                            log::warn!("tracking failed: {e}");
                            vec![u32::MAX; dets.items.len()]
                        });
                    snapshot = Some(st.snapshot());
                    ids
                }
                None => vec![u32::MAX; dets.items.len()],
            };
            last_stamp[fr.cam] = Some(stamp);
            let inst = InstanceArray::from_detections(fr.header.clone(), &dets, &track_ids);

            // A deactivate while this frame ran: its outputs would appear after the node stopped.
            let publish =
                s.epoch.load(Ordering::SeqCst) == epoch && s.active.load(Ordering::SeqCst);
            let (published, overlay) = if publish {
                let outs = lock(&s.outputs);
                match outs.get(fr.cam) {
                    Some(o) => match o.publish(&inst, &dets, &image) {
                        Ok(overlay) => (true, overlay),
                        Err(e) => {
                            log::warn!("publishing failed: {e}");
                            (false, false)
                        }
                    },
                    None => (false, false),
                }
            } else {
                (false, false)
            };
            if publish && has_depth[fr.cam] {
                let frame = super::depth3d::ColourFrame { dets, track_ids };
                if let Some(d) = s.depth.get(fr.cam) {
                    lock(d)
                        .pairer
                        .push_colour(fr.header.stamp.as_nanos(), frame);
                }
                depth_poll(s, fr.cam);
            }
            let latency = fr.pending.received_at.elapsed();
            let mut cams = lock(&s.cams);
            if let Some(c) = cams.get_mut(fr.cam) {
                c.stats.processed += 1;
                c.stats.batches += 1;
                c.stats.last_batch_size = batch;
                c.stats.in_flight = false;
                if overlay {
                    c.stats.overlays_published += 1;
                }
                if published {
                    c.stats.published += 1;
                    c.stats.last_latency = Some(latency);
                    c.stats.last_published_stamp_ns = Some(fr.header.stamp.as_nanos());
                    c.period_latencies.push(latency.as_secs_f64() * 1e3);
                }
                if snapshot.is_some() {
                    c.stability = snapshot;
                }
            }
        }
    }
}

/// Publishes the 3D outputs of every colour/depth pair of camera `cam` that is ready.
fn depth_poll(s: &Shared, cam: usize) {
    let Some(st) = s.depth.get(cam) else {
        return;
    };
    let outs = lock(&s.outputs);
    let Some(o) = outs.get(cam) else {
        return;
    };
    let pubs = super::depth3d::Publishers {
        detections: o.detections_3d.as_deref(),
        points: o.points.as_deref(),
    };
    super::depth3d::process(st, &s.params.depth, &pubs);
}

fn now_header() -> Header {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Header {
        stamp: Time {
            sec: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
            nanosec: d.subsec_nanos(),
        },
        frame_id: String::new(),
    }
}

#[derive(Clone, Copy, Default)]
struct Prev {
    received: u64,
    dropped: u64,
    published: u64,
    decode_errors: u64,
}

/// Publishes `/diagnostics` every period while the node is active.
pub(super) fn diagnostics_loop(s: &Shared, stop: &mpsc::Receiver<()>) {
    let p = s.params.diagnostics;
    let period = Duration::from_secs_f64(p.period_s);
    let n = s.params.cameras.len();
    let mut prev = vec![Prev::default(); n];
    let mut last_tick = Instant::now();
    let node = names::node_fqn(&s.identity);
    loop {
        match stop.recv_timeout(period) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        let dt = (now - last_tick).as_secs_f64();
        last_tick = now;
        let counters = s.latest.counters();
        let active = s.active.load(Ordering::SeqCst);
        let activated = *lock(&s.activated_at);
        let (device, model) = {
            let m = lock(&s.model);
            (
                m.device.clone(),
                m.host
                    .as_ref()
                    .map(|h| h.config.name.to_string())
                    .unwrap_or_default(),
            )
        };
        let mut status = Vec::with_capacity(n);
        {
            let mut cams = lock(&s.cams);
            for (i, c) in cams.iter_mut().enumerate() {
                let k = counters.get(i).copied().unwrap_or_default();
                let cur = Prev {
                    received: k.received,
                    dropped: k.dropped,
                    published: c.stats.published,
                    decode_errors: c.stats.decode_errors,
                };
                let before = std::mem::replace(&mut prev[i], cur);
                let lat = std::mem::take(&mut c.period_latencies);
                if !active {
                    continue;
                }
                let period_stats = PeriodStats {
                    period_s: dt,
                    received: cur.received.saturating_sub(before.received),
                    dropped: cur.dropped.saturating_sub(before.dropped),
                    published: cur.published.saturating_sub(before.published),
                    decode_errors: cur.decode_errors.saturating_sub(before.decode_errors),
                    latencies_ms: lat,
                    since_last_frame_s: k.last_received.map(|t| (now - t).as_secs_f64()),
                    active_for_s: activated.map_or(0.0, |t| (now - t).as_secs_f64()),
                };
                let ctx = CameraContext {
                    node: node.clone(),
                    camera: c.stats.name.clone(),
                    topic: c.stats.topic.clone(),
                    device: device.clone(),
                    model: model.clone(),
                    received_total: k.received,
                    processed_total: c.stats.processed,
                    dropped_total: k.dropped,
                    published_total: c.stats.published,
                    decode_errors_total: c.stats.decode_errors,
                    decode_reasons: c
                        .stats
                        .decode_reasons
                        .iter()
                        .map(|(r, n)| {
                            (
                                r.clone(),
                                *n,
                                c.decode_first.get(r).cloned().unwrap_or_default(),
                            )
                        })
                        .collect(),
                    inference_errors_total: c.stats.inference_errors,
                    last_batch_size: c.stats.last_batch_size,
                    stability: c.stability.clone(),
                    depth: if s
                        .params
                        .cameras
                        .get(i)
                        .is_some_and(|c| !c.depth_topic.is_empty())
                    {
                        s.depth.get(i).map(|d| {
                            let (ps, dc) = lock(d).snapshot();
                            super::diagnostics::DepthDiagnostics {
                                values: super::depth3d::diagnostic_values(&ps, &dc),
                                warning: super::depth3d::warning(&dc),
                            }
                        })
                    } else {
                        None
                    },
                };
                status.push(camera_status(&ctx, &period_stats, &p));
            }
        }
        if !active {
            continue;
        }
        let msg = DiagnosticArray {
            header: now_header(),
            status,
        };
        let r = msg.to_cdr().map_err(|e| e.to_string()).and_then(|b| {
            match lock(&s.diag_pub).as_ref() {
                Some(p) => p.publish(&b).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        });
        if let Err(e) = r {
            log::warn!("cannot publish /diagnostics: {e}");
        }
    }
}
