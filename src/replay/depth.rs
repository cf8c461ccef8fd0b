//! The replay's 3D outputs: which depth and camera-info topics go with which colour topic (given
//! with `--depth`, or found under the usual driver names), pairing by stamp
//! ([`crate::depth::pairing`], as the node), the 3D messages of each pair
//! ([`crate::depth::frame`], as the node) and the 3D statistics of the report.
//!
//! Bag order decides nothing: a colour frame waits (bounded) for a depth frame that may come
//! later in the bag, exactly as in the node, and at the end of the bag every colour frame still
//! waiting takes the nearest depth within the slop ([`StampPairer::finish`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bag::{CdrReader, TopicInfo};
use crate::depth::{camera_info_next_to, locate_frame, Instance3dResult, PairerStats, StampPairer};
use crate::error::{Error, Result};
use crate::msgs::camera_info::CameraInfo;
use crate::msgs::{point_cloud, schema};
use crate::node::params::DepthParams;
use crate::output::detection::Detections;

/// One colour topic's depth inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepthTopics {
    pub colour: String,
    pub depth: String,
    pub info: String,
    /// Whether the depth is registered to the colour camera (an aligned stream). A driver's
    /// unregistered depth (`depth/image_rect_raw`) is paired only when nothing better exists, and
    /// its positions are off by the colour-depth baseline.
    pub registered: bool,
}

/// How depth topics are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepthSelection {
    /// No 3D outputs.
    Off,
    /// The usual driver names ([`DRIVER_NAMES`]), where the bag holds them.
    Auto,
    /// `--depth COLOUR=DEPTH[=INFO]`.
    Given(Vec<DepthTopics>),
}

/// The replay's depth settings.
#[derive(Debug, Clone)]
pub struct DepthOptions {
    pub selection: DepthSelection,
    /// The node's `depth.*` parameters (same meaning, same defaults).
    pub params: DepthParams,
    /// Write the `PointCloud2` of labelled points (the largest output).
    pub points: bool,
}

/// Colour topic suffix -> depth topic suffixes to try, best first, and whether each is
/// registered to colour: realsense2_camera, Azure Kinect (`depth_to_rgb`) and openni2 / Astra
/// (`depth_registered`), ZED (`depth/depth_registered`). The camera info is always the
/// `camera_info` next to the depth topic.
pub const DRIVER_NAMES: &[(&str, &[(&str, bool)])] = &[
    (
        "color/image_raw",
        &[
            ("aligned_depth_to_color/image_raw", true),
            ("depth/image_rect_raw", false),
        ],
    ),
    (
        "rgb/image_raw",
        &[
            ("depth_to_rgb/image_raw", true),
            ("depth_registered/image_raw", true),
        ],
    ),
    ("rgb/image_rect_color", &[("depth/depth_registered", true)]),
];

fn is_plain_image(t: &str) -> bool {
    matches!(t, "sensor_msgs/msg/Image" | "sensor_msgs/Image")
}

fn is_camera_info(t: &str) -> bool {
    matches!(t, "sensor_msgs/msg/CameraInfo" | "sensor_msgs/CameraInfo")
}

/// The driver-named depth topics for `colour`, best first (a `/compressed` colour transport is
/// matched by its base topic).
pub fn driver_candidates(colour: &str) -> Vec<(String, bool)> {
    let base = colour.strip_suffix("/compressed").unwrap_or(colour);
    let mut out = Vec::new();
    for (suffix, depths) in DRIVER_NAMES {
        let Some(prefix) = base.strip_suffix(suffix) else {
            continue;
        };
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            continue;
        }
        out.extend(depths.iter().map(|(d, reg)| (format!("{prefix}{d}"), *reg)));
    }
    out
}

/// Parses `COLOUR=DEPTH` or `COLOUR=DEPTH=INFO` (INFO defaults to the `camera_info` next to
/// DEPTH).
pub fn parse_depth_arg(s: &str) -> std::result::Result<DepthTopics, String> {
    let parts: Vec<&str> = s.split('=').collect();
    let (colour, depth, info) = match parts.as_slice() {
        [c, d] => (*c, *d, camera_info_next_to(d)),
        [c, d, i] => (*c, *d, (*i).to_string()),
        _ => return Err(format!("`{s}`: expected COLOUR=DEPTH or COLOUR=DEPTH=INFO")),
    };
    if colour.is_empty() || depth.is_empty() || info.is_empty() {
        return Err(format!("`{s}`: empty topic name"));
    }
    Ok(DepthTopics {
        colour: colour.into(),
        depth: depth.into(),
        info,
        registered: true,
    })
}

/// The pairings for the colour topics `colour` of a bag with topics `all`. Given pairings are
/// checked (the colour topic is segmented, the depth topic is an Image, the info topic a
/// CameraInfo); automatic ones are those whose two topics the bag holds.
pub fn resolve(
    selection: &DepthSelection,
    colour: &[String],
    all: &[TopicInfo],
) -> Result<Vec<DepthTopics>> {
    let type_of = |t: &str| {
        all.iter()
            .find(|i| i.name == t)
            .map(|i| i.msg_type.as_str())
    };
    match selection {
        DepthSelection::Off => Ok(Vec::new()),
        DepthSelection::Auto => {
            let mut out = Vec::new();
            for c in colour {
                let found = driver_candidates(c).into_iter().find(|(d, _)| {
                    type_of(d).is_some_and(is_plain_image)
                        && type_of(&camera_info_next_to(d)).is_some_and(is_camera_info)
                });
                if let Some((depth, registered)) = found {
                    if !registered {
                        log::warn!(
                            "{c}: pairing with {depth}, which is not registered to the colour \
                             camera; 3D positions are off by the colour-depth baseline (record \
                             the aligned stream, e.g. realsense2_camera align_depth.enable:=true)"
                        );
                    }
                    out.push(DepthTopics {
                        colour: c.clone(),
                        info: camera_info_next_to(&depth),
                        depth,
                        registered,
                    });
                }
            }
            Ok(out)
        }
        DepthSelection::Given(given) => {
            for g in given {
                if !colour.contains(&g.colour) {
                    return Err(Error::Invalid(format!(
                        "--depth: {} is not a segmented colour topic (segmented: {})",
                        g.colour,
                        colour.join(", ")
                    )));
                }
                if given.iter().filter(|h| h.colour == g.colour).count() > 1 {
                    return Err(Error::Invalid(format!(
                        "--depth: {} is given more than one depth topic",
                        g.colour
                    )));
                }
                match type_of(&g.depth) {
                    Some(t) if is_plain_image(t) => {}
                    Some(t) => {
                        return Err(Error::Invalid(format!(
                            "--depth: {} is a {t}, not a sensor_msgs/msg/Image",
                            g.depth
                        )))
                    }
                    None => {
                        return Err(Error::Invalid(format!(
                            "--depth: the bag has no topic {}",
                            g.depth
                        )))
                    }
                }
                if !type_of(&g.info).is_some_and(is_camera_info) {
                    return Err(Error::Invalid(format!(
                        "--depth: {} is not a sensor_msgs/msg/CameraInfo topic of the bag \
                         (give it as COLOUR=DEPTH=INFO)",
                        g.info
                    )));
                }
            }
            Ok(given.clone())
        }
    }
}

/// A message for the output bag.
#[derive(Debug)]
pub struct OutMsg {
    pub topic: String,
    pub msg_type: &'static str,
    pub log_time_ns: u64,
    pub cdr: Vec<u8>,
}

/// A segmented colour frame waiting for its depth frame.
struct Pending {
    dets: Detections,
    track_ids: Vec<u32>,
    log_time_ns: u64,
}

/// One colour topic's pairing state and 3D statistics.
struct Camera {
    topics: DepthTopics,
    pairer: StampPairer<Pending, Vec<u8>>,
    info: Option<CameraInfo>,
    acc: Accum,
}

#[derive(Default)]
struct Accum {
    depth_frames: u64,
    camera_infos: u64,
    errors: u64,
    errors_by_reason: BTreeMap<String, u64>,
    last_error: Option<String>,
    instances: u64,
    located: u64,
    not_enough_depth: u64,
    fraction_sum: f64,
    fraction_n: u64,
    valid: u64,
    sampled: u64,
    points: u64,
    /// Centroids per track id, in frame order.
    tracks: BTreeMap<u32, TrackAcc>,
}

impl Accum {
    fn error(&mut self, topic: &str, reason: &str, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            log::warn!("{topic}: depth: {msg}");
        }
        self.errors += 1;
        *self.errors_by_reason.entry(reason.into()).or_default() += 1;
        self.last_error = Some(msg);
    }
}

/// The depth side of a replay: every paired colour topic.
pub struct DepthReplay {
    cameras: Vec<Camera>,
    params: DepthParams,
    points: bool,
}

pub fn detections_3d_topic(colour: &str) -> String {
    format!("{}/yolact/detections_3d", colour.trim_end_matches('/'))
}

pub fn points_topic(colour: &str) -> String {
    format!("{}/yolact/points", colour.trim_end_matches('/'))
}

impl DepthReplay {
    pub fn new(pairings: Vec<DepthTopics>, opts: &DepthOptions) -> Self {
        let q = opts.params.queue_size;
        let slop = (opts.params.slop_s * 1e9).round() as i64;
        DepthReplay {
            cameras: pairings
                .into_iter()
                .map(|topics| Camera {
                    topics,
                    // A bag holds both streams in full: colour frames may wait as long as depth
                    // frames do.
                    pairer: StampPairer::new(slop, q, q),
                    info: None,
                    acc: Accum::default(),
                })
                .collect(),
            params: opts.params,
            points: opts.points,
        }
    }

    pub fn pairings(&self) -> impl Iterator<Item = &DepthTopics> {
        self.cameras.iter().map(|c| &c.topics)
    }

    /// The depth and camera-info topics to read besides the colour ones.
    pub fn input_topics(&self) -> Vec<String> {
        self.cameras
            .iter()
            .flat_map(|c| [c.topics.depth.clone(), c.topics.info.clone()])
            .collect()
    }

    pub fn pairs_colour(&self, topic: &str) -> bool {
        self.cameras.iter().any(|c| c.topics.colour == topic)
    }

    /// Consumes a message of a depth or camera-info topic; `None` when `topic` is neither, else
    /// the 3D messages of the pairs it decided.
    pub fn input(&mut self, topic: &str, data: &[u8]) -> Option<Vec<OutMsg>> {
        let mut out = Vec::new();
        let mut used = false;
        for i in 0..self.cameras.len() {
            let cam = &mut self.cameras[i];
            if cam.topics.info == topic {
                used = true;
                match CameraInfo::from_cdr(data) {
                    Ok(info) => {
                        cam.acc.camera_infos += 1;
                        cam.info = Some(info);
                    }
                    Err(e) => cam
                        .acc
                        .error(topic, "camera_info", format!("camera_info: {e}")),
                }
            }
            if cam.topics.depth == topic {
                used = true;
                cam.acc.depth_frames += 1;
                match CdrReader::new(data).and_then(|mut r| r.read_header()) {
                    Ok(h) => {
                        cam.pairer.push_depth(h.stamp.as_nanos(), data.to_vec());
                        let pairs = cam.pairer.poll();
                        self.process(i, pairs, &mut out);
                    }
                    Err(e) => cam
                        .acc
                        .error(topic, "depth_image", format!("depth image: {e}")),
                }
            }
        }
        used.then_some(out)
    }

    /// Queues a segmented colour frame of `topic` (a paired topic) and returns the 3D messages
    /// of the pairs now decided.
    pub fn colour(
        &mut self,
        topic: &str,
        stamp_ns: i64,
        log_time_ns: u64,
        dets: Detections,
        track_ids: Vec<u32>,
    ) -> Vec<OutMsg> {
        let mut out = Vec::new();
        if let Some(i) = self.cameras.iter().position(|c| c.topics.colour == topic) {
            let cam = &mut self.cameras[i];
            cam.pairer.push_colour(
                stamp_ns,
                Pending {
                    dets,
                    track_ids,
                    log_time_ns,
                },
            );
            let pairs = cam.pairer.poll();
            self.process(i, pairs, &mut out);
        }
        out
    }

    /// The end of the bag: decides every waiting colour frame.
    pub fn finish(&mut self) -> Vec<OutMsg> {
        let mut out = Vec::new();
        for i in 0..self.cameras.len() {
            let pairs = self.cameras[i].pairer.finish();
            self.process(i, pairs, &mut out);
        }
        out
    }

    fn process(
        &mut self,
        i: usize,
        pairs: Vec<crate::depth::Pair<Pending, Vec<u8>>>,
        out: &mut Vec<OutMsg>,
    ) {
        let p = &self.params;
        let want_points = self.points;
        let cam = &mut self.cameras[i];
        let colour = cam.topics.colour.clone();
        for pair in pairs {
            let c = &pair.colour;
            let Some(info) = cam.info.as_ref() else {
                cam.acc.error(
                    &colour,
                    "no_camera_info",
                    format!(
                        "no camera_info on {} before the depth frame",
                        cam.topics.info
                    ),
                );
                continue;
            };
            let frame = match locate_frame(
                &c.dets,
                &c.track_ids,
                info,
                &pair.depth,
                p.scale,
                &p.options,
                want_points,
            ) {
                Ok(f) => f,
                Err(e) => {
                    cam.acc.error(&colour, depth_error_kind(&e), e.to_string());
                    continue;
                }
            };
            let acc = &mut cam.acc;
            for (k, r) in frame.results.iter().enumerate() {
                acc.instances += 1;
                let (sampled, valid) = match r {
                    Instance3dResult::Located(x) => {
                        acc.located += 1;
                        acc.points += x.points.len() as u64;
                        let id = c.track_ids.get(k).copied().unwrap_or(u32::MAX);
                        if id != u32::MAX {
                            acc.tracks.entry(id).or_default().push(x.stats.centroid);
                        }
                        (x.sampled, x.valid)
                    }
                    Instance3dResult::NotEnoughDepth { sampled, valid, .. } => {
                        acc.not_enough_depth += 1;
                        (*sampled, *valid)
                    }
                };
                if sampled > 0 {
                    acc.fraction_sum += valid as f64 / sampled as f64;
                    acc.fraction_n += 1;
                }
                acc.sampled += sampled as u64;
                acc.valid += valid as u64;
            }
            match frame.detections.to_cdr() {
                Ok(cdr) => out.push(OutMsg {
                    topic: detections_3d_topic(&colour),
                    msg_type: schema::DETECTION3D_ARRAY,
                    log_time_ns: c.log_time_ns,
                    cdr,
                }),
                Err(e) => acc.error(&colour, "serialize", format!("detections_3d: {e}")),
            }
            if want_points {
                match point_cloud::to_cdr(&frame.header, &frame.points) {
                    Ok(cdr) => out.push(OutMsg {
                        topic: points_topic(&colour),
                        msg_type: schema::POINT_CLOUD2,
                        log_time_ns: c.log_time_ns,
                        cdr,
                    }),
                    Err(e) => acc.error(&colour, "serialize", format!("points: {e}")),
                }
            }
        }
    }

    /// The 3D statistics per colour topic.
    pub fn report(&self) -> BTreeMap<String, DepthReport> {
        self.cameras
            .iter()
            .map(|c| (c.topics.colour.clone(), DepthReport::new(c)))
            .collect()
    }
}

fn depth_error_kind(e: &crate::depth::DepthError) -> &'static str {
    use crate::depth::DepthError as E;
    match e {
        E::FocalLength { .. } | E::PrincipalPoint { .. } | E::KLength(_) => "camera_info",
        E::EmptySize { .. } | E::SizeMismatch { .. } | E::MaskSize { .. } => "size",
        E::Encoding(_) => "encoding",
        E::Layout(_) | E::Message(_) => "depth_image",
        E::Scale(_) | E::Options(_) => "options",
    }
}

/// How much one track's centroid moved, metres.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackJitter {
    /// Frames with a located centroid.
    pub frames: u64,
    pub centroid_mean: [f64; 3],
    /// Root mean square distance of the centroids from their mean; `None` for one frame.
    pub jitter_rms_m: Option<f64>,
    /// Mean distance between consecutive centroids; `None` for one frame.
    pub step_mean_m: Option<f64>,
}

/// A track's centroids folded as they come (constant memory per track, however long the bag):
/// count, running mean and sum of squared distances from it (Welford), the last centroid and the
/// sum of the steps.
#[derive(Debug, Clone, Default)]
pub struct TrackAcc {
    n: u64,
    mean: [f64; 3],
    m2: f64,
    last: Option<[f64; 3]>,
    steps: f64,
}

fn dist(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

impl TrackAcc {
    pub fn push(&mut self, c: [f64; 3]) {
        self.n += 1;
        let before = self.mean;
        let k = self.n as f64;
        self.mean = std::array::from_fn(|i| before[i] + (c[i] - before[i]) / k);
        self.m2 += (0..3)
            .map(|i| (c[i] - before[i]) * (c[i] - self.mean[i]))
            .sum::<f64>();
        if let Some(l) = self.last {
            self.steps += dist(&l, &c);
        }
        self.last = Some(c);
    }

    /// `None` before the first centroid.
    pub fn jitter(&self) -> Option<TrackJitter> {
        if self.n == 0 {
            return None;
        }
        let several = self.n > 1;
        Some(TrackJitter {
            frames: self.n,
            centroid_mean: self.mean,
            jitter_rms_m: several.then(|| (self.m2.max(0.0) / self.n as f64).sqrt()),
            step_mean_m: several.then(|| self.steps / (self.n - 1) as f64),
        })
    }
}

impl TrackJitter {
    /// `None` for no centroids.
    pub fn of(centroids: &[[f64; 3]]) -> Option<Self> {
        let mut a = TrackAcc::default();
        centroids.iter().for_each(|&c| a.push(c));
        a.jitter()
    }
}

/// The 3D statistics of one colour topic.
#[derive(Debug, Clone, Serialize)]
pub struct DepthReport {
    pub depth_topic: String,
    pub info_topic: String,
    pub registered: bool,
    pub depth_frames: u64,
    pub camera_infos: u64,
    /// Segmented colour frames that entered the pairing.
    pub colour_frames: u64,
    pub paired: u64,
    /// `paired / colour_frames`.
    pub pairing_rate: f64,
    /// Colour frames with no depth frame within the slop (dropped from the 3D outputs).
    pub colour_unpaired: u64,
    /// Depth frames no colour frame used.
    pub depth_unpaired: u64,
    /// Pairs that could not be used (no or bad CameraInfo, sizes, encoding), by kind.
    pub errors: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    /// Instances of the used pairs.
    pub instances: u64,
    pub instances_located: u64,
    pub instances_without_enough_depth: u64,
    /// Mean over instances (with any depth pixel under the eroded mask) of the fraction of those
    /// pixels whose depth is valid.
    pub valid_depth_fraction_mean: Option<f64>,
    /// Valid depth pixels / sampled depth pixels, over all instances.
    pub valid_depth_fraction_pooled: Option<f64>,
    pub points: u64,
    /// Per track id (located instances with a track id).
    pub tracks: BTreeMap<u32, TrackJitter>,
    /// Median of `jitter_rms_m` over the tracks located in at least two frames.
    pub jitter_rms_m_median: Option<f64>,
}

impl DepthReport {
    fn new(c: &Camera) -> Self {
        let s: PairerStats = c.pairer.stats();
        let a = &c.acc;
        let tracks: BTreeMap<u32, TrackJitter> = a
            .tracks
            .iter()
            .filter_map(|(id, a)| a.jitter().map(|j| (*id, j)))
            .collect();
        let mut j: Vec<f64> = tracks.values().filter_map(|t| t.jitter_rms_m).collect();
        let jitter_rms_m_median = crate::depth::robust::median(&mut j);
        DepthReport {
            depth_topic: c.topics.depth.clone(),
            info_topic: c.topics.info.clone(),
            registered: c.topics.registered,
            depth_frames: a.depth_frames,
            camera_infos: a.camera_infos,
            colour_frames: s.colour_in,
            paired: s.paired,
            pairing_rate: if s.colour_in == 0 {
                0.0
            } else {
                s.paired as f64 / s.colour_in as f64
            },
            colour_unpaired: s.colour_unpaired,
            depth_unpaired: s.depth_unpaired,
            errors: a.errors,
            errors_by_reason: a.errors_by_reason.clone(),
            last_error: a.last_error.clone(),
            instances: a.instances,
            instances_located: a.located,
            instances_without_enough_depth: a.not_enough_depth,
            valid_depth_fraction_mean: (a.fraction_n > 0)
                .then(|| a.fraction_sum / a.fraction_n as f64),
            valid_depth_fraction_pooled: (a.sampled > 0).then(|| a.valid as f64 / a.sampled as f64),
            points: a.points,
            tracks,
            jitter_rms_m_median,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-pass definition the streaming [`TrackAcc`] must equal.
    fn two_pass(centroids: &[[f64; 3]]) -> TrackJitter {
        let n = centroids.len() as f64;
        let mean: [f64; 3] =
            std::array::from_fn(|i| centroids.iter().map(|c| c[i]).sum::<f64>() / n);
        let rms = (centroids
            .iter()
            .map(|c| dist(c, &mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let steps: Vec<f64> = centroids.windows(2).map(|w| dist(&w[0], &w[1])).collect();
        TrackJitter {
            frames: centroids.len() as u64,
            centroid_mean: mean,
            jitter_rms_m: Some(rms),
            step_mean_m: Some(steps.iter().sum::<f64>() / steps.len() as f64),
        }
    }

    #[test]
    fn streamed_track_jitter_equals_the_two_pass_one() {
        // A slow drift at 1.5 m with millimetre noise: the case where a naive sum of squares
        // would lose the jitter to cancellation.
        let c: Vec<[f64; 3]> = (0..5000)
            .map(|i| {
                let t = i as f64;
                [
                    0.1 + 1e-4 * t + 1e-3 * (t * 1.7).sin(),
                    -0.2 + 1e-3 * (t * 0.9).cos(),
                    1.5,
                ]
            })
            .collect();
        let (got, want) = (TrackJitter::of(&c).unwrap(), two_pass(&c));
        assert_eq!(got.frames, want.frames);
        for i in 0..3 {
            assert!((got.centroid_mean[i] - want.centroid_mean[i]).abs() < 1e-12);
        }
        let rel = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() / b.unwrap();
        assert!(rel(got.jitter_rms_m, want.jitter_rms_m) < 1e-9);
        assert!(rel(got.step_mean_m, want.step_mean_m) < 1e-9);
        let one = TrackJitter::of(&c[..1]).unwrap();
        assert_eq!(
            (one.frames, one.jitter_rms_m, one.step_mean_m),
            (1, None, None)
        );
        assert!(TrackJitter::of(&[]).is_none());
    }

    fn topic(name: &str, t: &str) -> TopicInfo {
        TopicInfo {
            name: name.into(),
            msg_type: t.into(),
            count: 1,
        }
    }

    #[test]
    fn driver_names_pair_by_default_best_first() {
        let img = "sensor_msgs/msg/Image";
        let info = "sensor_msgs/msg/CameraInfo";
        let all = vec![
            topic("/camera/color/image_raw", img),
            topic("/camera/aligned_depth_to_color/image_raw", img),
            topic("/camera/aligned_depth_to_color/camera_info", info),
            topic("/camera/depth/image_rect_raw", img),
            topic("/camera/depth/camera_info", info),
            topic(
                "/k/rgb/image_raw/compressed",
                "sensor_msgs/msg/CompressedImage",
            ),
            topic("/k/depth_to_rgb/image_raw", img),
            topic("/k/depth_to_rgb/camera_info", info),
            // A depth topic without its camera info is not paired.
            topic("/z/rgb/image_rect_color", img),
            topic("/z/depth/depth_registered", img),
        ];
        let colour: Vec<String> = [
            "/camera/color/image_raw",
            "/k/rgb/image_raw/compressed",
            "/z/rgb/image_rect_color",
        ]
        .map(String::from)
        .to_vec();
        let got = resolve(&DepthSelection::Auto, &colour, &all).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].depth, "/camera/aligned_depth_to_color/image_raw");
        assert_eq!(got[0].info, "/camera/aligned_depth_to_color/camera_info");
        assert!(got[0].registered);
        assert_eq!(got[1].colour, "/k/rgb/image_raw/compressed");
        assert_eq!(got[1].info, "/k/depth_to_rgb/camera_info");
        // Without the aligned stream, the unregistered one, flagged.
        let fallback: Vec<TopicInfo> = all[..1].iter().chain(&all[3..5]).cloned().collect();
        let got = resolve(&DepthSelection::Auto, &colour[..1], &fallback).unwrap();
        assert_eq!(got[0].depth, "/camera/depth/image_rect_raw");
        assert!(!got[0].registered);
        // A topic that merely ends in the same letters is not a driver's namespace.
        assert!(driver_candidates("/mycolor/image_raw").is_empty());
    }

    #[test]
    fn given_pairings_are_checked() {
        let all = vec![
            topic("/c", "sensor_msgs/msg/Image"),
            topic("/d/image", "sensor_msgs/msg/Image"),
            topic("/d/camera_info", "sensor_msgs/msg/CameraInfo"),
            topic("/chatter", "std_msgs/msg/String"),
        ];
        let colour = vec!["/c".to_string()];
        let ok = parse_depth_arg("/c=/d/image").unwrap();
        assert_eq!(ok.info, "/d/camera_info");
        let sel = |v: Vec<DepthTopics>| DepthSelection::Given(v);
        assert_eq!(
            resolve(&sel(vec![ok.clone()]), &colour, &all).unwrap(),
            vec![ok]
        );
        for (arg, want) in [
            ("/x=/d/image", "not a segmented colour topic"),
            ("/c=/chatter", "not a sensor_msgs/msg/Image"),
            ("/c=/nope", "no topic /nope"),
            ("/c=/d/image=/chatter", "not a sensor_msgs/msg/CameraInfo"),
        ] {
            let e = resolve(&sel(vec![parse_depth_arg(arg).unwrap()]), &colour, &all)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{arg}: {e}");
        }
        assert!(parse_depth_arg("/c").is_err());
        assert!(parse_depth_arg("/c==/i").is_err());
    }

    #[test]
    fn jitter_is_the_rms_distance_from_the_mean() {
        // Two centroids 2 cm apart along x: each is 1 cm from the mean.
        let j = TrackJitter::of(&[[0.0, 0.0, 1.0], [0.02, 0.0, 1.0]]).unwrap();
        assert!((j.jitter_rms_m.unwrap() - 0.01).abs() < 1e-12);
        assert!((j.step_mean_m.unwrap() - 0.02).abs() < 1e-12);
        assert!((j.centroid_mean[0] - 0.01).abs() < 1e-12);
        let one = TrackJitter::of(&[[1.0, 2.0, 3.0]]).unwrap();
        assert_eq!((one.frames, one.jitter_rms_m), (1, None));
        assert!(TrackJitter::of(&[]).is_none());
    }
}
