//! Frame-to-frame association of instances into tracks by mask IoU.
//!
//! One [`Tracker`] serves one camera stream; it holds no global state, so several streams simply use
//! several trackers. There is no motion model: a track is matched by the mask it had when it was
//! last seen, which suits the small inter-frame motion of a camera at video rate (and is why camera
//! ego-motion lowers the stability numbers, see `docs/stability.md`).

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use super::mask_region::BoxMask;
use crate::error::{Error, Result};
use crate::output::detection::Detection;

/// IoU is scaled to integers for Kuhn-Munkres; 1e6 keeps six decimals, far below mask noise, and
/// 100 x 1e6 cannot overflow i64.
const IOU_SCALE: f64 = 1e6;

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Minimum mask IoU between an instance and a track's last mask for them to be matched.
    /// Must lie in (0, 1].
    pub iou_gate: f64,
    /// A track survives this many consecutive frames without a match; on the next miss it dies.
    /// With 3, an object that vanishes for 3 frames keeps its ID; for 4, it gets a new one.
    pub max_misses: u32,
    /// Only match instances to tracks of the same class.
    pub match_class: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou_gate: 0.3,
            max_misses: 3,
            match_class: true,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.iou_gate > 0.0 && self.iou_gate <= 1.0) {
            return Err(Error::Config(format!(
                "tracker iou_gate must be in (0, 1], got {}",
                self.iou_gate
            )));
        }
        Ok(())
    }
}

/// The tracker's compact view of one detection. An instance with an empty mask can never be
/// matched (its IoU with anything is 0), so it starts a new track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInput {
    pub class_id: usize,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in image pixels.
    pub bbox: [f32; 4],
    pub mask: BoxMask,
}

impl TryFrom<&Detection> for TrackInput {
    type Error = Error;

    /// Crops the full-frame mask to the detection's box (YOLACT masks are cropped to it), which
    /// costs O(box area) rather than O(frame).
    fn try_from(d: &Detection) -> Result<Self> {
        Ok(TrackInput {
            class_id: d.class_id,
            score: d.score,
            bbox: d.bbox,
            mask: BoxMask::from_mask_in_box(&d.mask, d.bbox)?,
        })
    }
}

/// What happened to one input instance in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackObservation {
    pub track_id: u32,
    /// Index of the instance in the `update` input slice.
    pub input_index: usize,
    pub class_id: usize,
    pub score: f32,
    pub bbox: [f32; 4],
    /// Frames since the track was last matched: 1 when it was seen in the previous frame, more
    /// after misses, 0 for a track born in this frame.
    pub frames_since_seen: u64,
    /// Mask IoU with the track's mask when it was last seen; `None` for a new track.
    pub iou_with_last: Option<f64>,
    /// Box and score when the track was last seen; `None` for a new track.
    pub last_bbox: Option<[f32; 4]>,
    pub last_score: Option<f32>,
}

impl TrackObservation {
    pub fn is_new(&self) -> bool {
        self.frames_since_seen == 0
    }
}

/// Everything one `update` decided; the input of [`super::StabilityMetrics`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameAssociation {
    /// 0-based count of `update` calls on this tracker.
    pub frame_index: u64,
    /// The stamp passed to `update`, seconds.
    pub stamp: f64,
    /// One entry per input instance, in input order.
    pub observations: Vec<TrackObservation>,
    /// Tracks that exceeded `max_misses` in this frame and were dropped.
    pub deaths: Vec<u32>,
    /// Tracks alive after this frame, including ones currently unmatched.
    pub live_tracks: usize,
}

impl FrameAssociation {
    pub fn births(&self) -> usize {
        self.observations.iter().filter(|o| o.is_new()).count()
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u32,
    class_id: usize,
    score: f32,
    bbox: [f32; 4],
    mask: BoxMask,
    last_seen: u64,
    misses: u32,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u32,
    frames: u64,
    last_stamp: Option<f64>,
    last: FrameAssociation,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 0,
            frames: 0,
            last_stamp: None,
            last: FrameAssociation::default(),
        })
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Forgets all tracks (e.g. after a time jump); IDs keep counting so old ones are not reused.
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.last_stamp = None;
    }

    /// Tracks alive now, including ones coasting through misses.
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// The association made by the latest `update`.
    pub fn last_association(&self) -> &FrameAssociation {
        &self.last
    }

    /// Associates one frame's instances with the tracks and returns a track ID per input.
    ///
    /// `stamp` is in seconds and must not go backwards; call [`Tracker::reset`] after a time jump.
    pub fn update(&mut self, stamp: f64, inputs: &[TrackInput]) -> Result<Vec<u32>> {
        Ok(self
            .update_detailed(stamp, inputs)?
            .observations
            .iter()
            .map(|o| o.track_id)
            .collect())
    }

    /// As [`Tracker::update`], returning the full association (also kept as
    /// [`Tracker::last_association`]).
    pub fn update_detailed(
        &mut self,
        stamp: f64,
        inputs: &[TrackInput],
    ) -> Result<&FrameAssociation> {
        if !stamp.is_finite() {
            return Err(Error::Invalid(format!("tracker stamp {stamp}")));
        }
        if let Some(prev) = self.last_stamp {
            if stamp < prev {
                return Err(Error::Invalid(format!(
                    "tracker stamp went backwards: {stamp} < {prev}; reset the tracker"
                )));
            }
        }
        for (i, inp) in inputs.iter().enumerate() {
            if !inp.score.is_finite() || inp.bbox.iter().any(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!("tracker input {i} is not finite")));
            }
        }
        let frame = self.frames;

        let pairs = self.gated_pairs(inputs);
        let assignment = assign(inputs.len(), self.tracks.len(), &pairs);

        let mut observations = Vec::with_capacity(inputs.len());
        let mut matched_track = vec![false; self.tracks.len()];
        for (i, inp) in inputs.iter().enumerate() {
            let obs = match assignment[i] {
                Some((t, iou)) => {
                    matched_track[t] = true;
                    let tr = &mut self.tracks[t];
                    let obs = TrackObservation {
                        track_id: tr.id,
                        input_index: i,
                        class_id: inp.class_id,
                        score: inp.score,
                        bbox: inp.bbox,
                        frames_since_seen: frame - tr.last_seen,
                        iou_with_last: Some(iou),
                        last_bbox: Some(tr.bbox),
                        last_score: Some(tr.score),
                    };
                    tr.class_id = inp.class_id;
                    tr.score = inp.score;
                    tr.bbox = inp.bbox;
                    tr.mask.clone_from(&inp.mask);
                    tr.last_seen = frame;
                    tr.misses = 0;
                    obs
                }
                None => TrackObservation {
                    track_id: u32::MAX, // set below, once the dead tracks are gone
                    input_index: i,
                    class_id: inp.class_id,
                    score: inp.score,
                    bbox: inp.bbox,
                    frames_since_seen: 0,
                    iou_with_last: None,
                    last_bbox: None,
                    last_score: None,
                },
            };
            observations.push(obs);
        }

        let mut deaths = Vec::new();
        let max_misses = self.cfg.max_misses;
        let mut idx = 0;
        self.tracks.retain_mut(|tr| {
            let matched = matched_track[idx];
            idx += 1;
            if !matched {
                tr.misses += 1;
                if tr.misses > max_misses {
                    deaths.push(tr.id);
                    return false;
                }
            }
            true
        });

        for (inp, obs) in inputs.iter().zip(observations.iter_mut()) {
            if obs.is_new() {
                let id = self.next_id;
                // Wrapping after 4e9 births could only collide with a track alive all that time.
                self.next_id = self.next_id.wrapping_add(1);
                obs.track_id = id;
                self.tracks.push(Track {
                    id,
                    class_id: inp.class_id,
                    score: inp.score,
                    bbox: inp.bbox,
                    mask: inp.mask.clone(),
                    last_seen: frame,
                    misses: 0,
                });
            }
        }

        self.frames += 1;
        self.last_stamp = Some(stamp);
        self.last = FrameAssociation {
            frame_index: frame,
            stamp,
            observations,
            deaths,
            live_tracks: self.tracks.len(),
        };
        Ok(&self.last)
    }

    /// All (input, track, IoU) pairs that pass class and IoU gates. The box/area bound rejects most
    /// pairs before any mask words are touched.
    fn gated_pairs(&self, inputs: &[TrackInput]) -> Vec<(usize, usize, f64)> {
        let gate = self.cfg.iou_gate;
        let mut pairs = Vec::new();
        for (t, tr) in self.tracks.iter().enumerate() {
            for (i, inp) in inputs.iter().enumerate() {
                if self.cfg.match_class && inp.class_id != tr.class_id {
                    continue;
                }
                if inp.mask.iou_upper_bound(&tr.mask) < gate {
                    continue;
                }
                let iou = inp.mask.iou(&tr.mask);
                if iou >= gate {
                    pairs.push((i, t, iou));
                }
            }
        }
        pairs
    }
}

/// Maximum-total-IoU assignment of inputs to tracks over the gated pairs. Returns, per input, the
/// matched track and IoU.
///
/// The gated bipartite graph is split into connected components and Kuhn-Munkres runs on each one,
/// so cost follows the size of clusters of mutually overlapping objects, not the frame's instance
/// count (the algorithm is cubic).
pub(crate) fn assign(
    n_inputs: usize,
    n_tracks: usize,
    pairs: &[(usize, usize, f64)],
) -> Vec<Option<(usize, f64)>> {
    let mut result = vec![None; n_inputs];
    if pairs.is_empty() {
        return result;
    }
    // Union-find over inputs (0..n_inputs) and tracks (n_inputs..).
    let mut parent: Vec<usize> = (0..n_inputs + n_tracks).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(i, t, _) in pairs {
        let a = find(&mut parent, i);
        let b = find(&mut parent, n_inputs + t);
        if a != b {
            parent[a] = b;
        }
    }
    // Group pair indices by component root.
    let mut comp_of_root: Vec<usize> = vec![usize::MAX; n_inputs + n_tracks];
    let mut comps: Vec<Vec<usize>> = Vec::new();
    for (k, &(i, _, _)) in pairs.iter().enumerate() {
        let r = find(&mut parent, i);
        if comp_of_root[r] == usize::MAX {
            comp_of_root[r] = comps.len();
            comps.push(Vec::new());
        }
        comps[comp_of_root[r]].push(k);
    }
    for comp in comps {
        if comp.len() == 1 {
            let (i, t, iou) = pairs[comp[0]];
            result[i] = Some((t, iou));
            continue;
        }
        let mut ins: Vec<usize> = comp.iter().map(|&k| pairs[k].0).collect();
        let mut trs: Vec<usize> = comp.iter().map(|&k| pairs[k].1).collect();
        ins.sort_unstable();
        ins.dedup();
        trs.sort_unstable();
        trs.dedup();
        // Kuhn-Munkres needs rows <= columns.
        let inputs_are_rows = ins.len() <= trs.len();
        let (rows, cols) = if inputs_are_rows {
            (ins.len(), trs.len())
        } else {
            (trs.len(), ins.len())
        };
        let mut w = Matrix::new(rows, cols, 0i64);
        let mut iou_at = Matrix::new(rows, cols, 0f64);
        for &k in &comp {
            let (i, t, iou) = pairs[k];
            let (Ok(ii), Ok(tt)) = (ins.binary_search(&i), trs.binary_search(&t)) else {
                continue;
            };
            let (r, c) = if inputs_are_rows { (ii, tt) } else { (tt, ii) };
            // Gated pairs have IoU > 0, so a positive weight marks a real edge.
            w[(r, c)] = ((iou * IOU_SCALE).round() as i64).max(1);
            iou_at[(r, c)] = iou;
        }
        let (_, cols_of_rows) = kuhn_munkres(&w);
        for (r, &c) in cols_of_rows.iter().enumerate() {
            if w[(r, c)] <= 0 {
                continue;
            }
            let (i, t) = if inputs_are_rows {
                (ins[r], trs[c])
            } else {
                (ins[c], trs[r])
            };
            result[i] = Some((t, iou_at[(r, c)]));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive maximum over all partial matchings, as an independent reference.
    fn brute_best(n_in: usize, n_tr: usize, pairs: &[(usize, usize, f64)]) -> f64 {
        fn rec(i: usize, n_in: usize, used: &mut Vec<bool>, w: &[Vec<f64>]) -> f64 {
            if i == n_in {
                return 0.0;
            }
            let mut best = rec(i + 1, n_in, used, w);
            for t in 0..used.len() {
                if !used[t] && w[i][t] > 0.0 {
                    used[t] = true;
                    best = best.max(w[i][t] + rec(i + 1, n_in, used, w));
                    used[t] = false;
                }
            }
            best
        }
        let mut w = vec![vec![0.0; n_tr]; n_in];
        for &(i, t, v) in pairs {
            w[i][t] = v;
        }
        rec(0, n_in, &mut vec![false; n_tr], &w)
    }

    #[test]
    fn assignment_is_optimal_against_brute_force() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200 {
            let n_in = 1 + (next() % 6) as usize;
            let n_tr = 1 + (next() % 6) as usize;
            let mut pairs = Vec::new();
            for i in 0..n_in {
                for t in 0..n_tr {
                    if next() % 3 == 0 {
                        pairs.push((i, t, 0.3 + (next() % 700) as f64 / 1000.0));
                    }
                }
            }
            let got = assign(n_in, n_tr, &pairs);
            let mut used = vec![false; n_tr];
            let mut total = 0.0;
            for (i, m) in got.iter().enumerate() {
                if let Some((t, iou)) = *m {
                    assert!(!used[t], "track used twice");
                    used[t] = true;
                    let want = pairs.iter().find(|p| p.0 == i && p.1 == t).map(|p| p.2);
                    assert_eq!(want, Some(iou), "matched a non-gated pair");
                    total += iou;
                }
            }
            let best = brute_best(n_in, n_tr, &pairs);
            assert!((total - best).abs() < 1e-5, "got {total}, best {best}");
        }
    }

    #[test]
    fn rejects_bad_config_and_stamps() {
        assert!(Tracker::new(TrackerConfig {
            iou_gate: 0.0,
            ..Default::default()
        })
        .is_err());
        let mut t = Tracker::new(TrackerConfig::default()).unwrap();
        t.update(1.0, &[]).unwrap();
        assert!(t.update(0.5, &[]).is_err());
        assert!(t.update(f64::NAN, &[]).is_err());
        let bad = TrackInput {
            class_id: 0,
            score: f32::NAN,
            bbox: [0.0; 4],
            mask: BoxMask::rect(0, 0, 2, 2),
        };
        assert!(t.update(2.0, &[bad]).is_err());
    }
}
