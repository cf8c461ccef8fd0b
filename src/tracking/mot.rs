//! MOT-style identity metrics (CLEAR MOT ID switches, MOTChallenge fragmentation) for sequences
//! where ground-truth object identities are known, e.g. synthetic or annotated recordings.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MotReport {
    /// Frames observed.
    pub frames: u64,
    /// Distinct ground-truth objects seen.
    pub gt_objects: u64,
    /// Ground-truth object-frames (objects present, summed over frames).
    pub gt_observations: u64,
    /// Ground-truth object-frames that had a matched track.
    pub matched: u64,
    /// Ground-truth object-frames without a matched track.
    pub missed: u64,
    /// ID switches: matched ground-truth object-frames whose track ID differs from the track ID the
    /// same object was last matched to (however many frames ago).
    pub id_switches: u64,
    /// Fragmentations: times a ground-truth object's tracking resumes after an interruption, i.e.
    /// it is matched now, was matched in some earlier frame, and was present but unmatched in its
    /// latest earlier frame. Frames where the object is absent from the ground truth do not count
    /// as interruptions.
    pub fragmentations: u64,
}

#[derive(Debug, Clone, Copy)]
struct GtState {
    last_track: Option<u32>,
    tracked_last_present: bool,
}

/// Counts identity errors of a tracker against ground truth, frame by frame.
#[derive(Debug, Clone, Default)]
pub struct MotEvaluator {
    gt: HashMap<u64, GtState>,
    report: MotReportCounts,
}

#[derive(Debug, Clone, Default)]
struct MotReportCounts {
    frames: u64,
    gt_observations: u64,
    matched: u64,
    id_switches: u64,
    fragmentations: u64,
}

impl MotEvaluator {
    pub fn new() -> Self {
        Self::default()
    }

    /// One frame: every ground-truth object present, with the track ID of the instance matched to
    /// it, or `None` when no instance was. A ground-truth ID or a track ID appearing twice is an
    /// error (the frame is then not counted).
    pub fn observe(&mut self, frame: &[(u64, Option<u32>)]) -> Result<()> {
        let mut seen_gt = HashSet::with_capacity(frame.len());
        let mut seen_tr = HashSet::with_capacity(frame.len());
        for &(g, t) in frame {
            if !seen_gt.insert(g) {
                return Err(Error::Invalid(format!(
                    "ground-truth id {g} twice in a frame"
                )));
            }
            if let Some(t) = t {
                if !seen_tr.insert(t) {
                    return Err(Error::Invalid(format!(
                        "track id {t} matched twice in a frame"
                    )));
                }
            }
        }
        let c = &mut self.report;
        c.frames += 1;
        for &(g, t) in frame {
            c.gt_observations += 1;
            let st = self.gt.entry(g).or_insert(GtState {
                last_track: None,
                tracked_last_present: false,
            });
            if let Some(t) = t {
                c.matched += 1;
                if let Some(prev) = st.last_track {
                    if prev != t {
                        c.id_switches += 1;
                    }
                    if !st.tracked_last_present {
                        c.fragmentations += 1;
                    }
                }
                st.last_track = Some(t);
                st.tracked_last_present = true;
            } else {
                st.tracked_last_present = false;
            }
        }
        Ok(())
    }

    /// One frame given per instance: `instance_gt[i]` is the ground-truth object instance `i`
    /// depicts (None for a false positive), `track_ids[i]` its track ID; `missed_gt` lists present
    /// ground-truth objects that no instance depicts.
    pub fn observe_instances(
        &mut self,
        instance_gt: &[Option<u64>],
        track_ids: &[u32],
        missed_gt: &[u64],
    ) -> Result<()> {
        if instance_gt.len() != track_ids.len() {
            return Err(Error::Invalid(format!(
                "{} ground-truth ids for {} track ids",
                instance_gt.len(),
                track_ids.len()
            )));
        }
        let mut frame: Vec<(u64, Option<u32>)> = instance_gt
            .iter()
            .zip(track_ids)
            .filter_map(|(g, &t)| g.map(|g| (g, Some(t))))
            .collect();
        frame.extend(missed_gt.iter().map(|&g| (g, None)));
        self.observe(&frame)
    }

    pub fn report(&self) -> MotReport {
        let c = &self.report;
        MotReport {
            frames: c.frames,
            gt_objects: self.gt.len() as u64,
            gt_observations: c.gt_observations,
            matched: c.matched,
            missed: c.gt_observations - c.matched,
            id_switches: c.id_switches,
            fragmentations: c.fragmentations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_and_fragment_counting() {
        let mut m = MotEvaluator::new();
        // Object 7: tracked by 1, missed, tracked by 2 -> one fragmentation and one switch.
        // Object 8: tracked by 3, absent from GT, tracked by 3 again -> nothing.
        m.observe(&[(7, Some(1)), (8, Some(3))]).unwrap();
        m.observe(&[(7, None)]).unwrap();
        m.observe(&[(7, Some(2)), (8, Some(3))]).unwrap();
        // Object 9 starts unmatched: its first match is neither a switch nor a fragment.
        m.observe(&[(9, None)]).unwrap();
        m.observe(&[(9, Some(5))]).unwrap();
        let r = m.report();
        assert_eq!(r.id_switches, 1);
        assert_eq!(r.fragmentations, 1);
        assert_eq!(r.gt_objects, 3);
        assert_eq!(r.gt_observations, 7);
        assert_eq!(r.missed, 2);
        assert!(m.observe(&[(1, Some(1)), (2, Some(1))]).is_err());
        assert!(m.observe(&[(1, None), (1, None)]).is_err());
        assert_eq!(m.report().frames, 5);
    }
}
