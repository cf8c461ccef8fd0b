//! `yolact replay --resume`: continue an interrupted output instead of starting over.
//!
//! The frames already in the old output (`OUT.partial.mcap` left by a killed run, or a finished
//! `OUT`) are carried into the new output first; then the replay skips the input messages whose
//! frames were carried, so every frame ends up in the output exactly once. A frame counts as
//! written only when all its messages are there (instances and detections, and the input copy
//! with `--copy-inputs`); the last frame of a cut file may be half there and is redone. The 3D
//! outputs of a carried frame (written at its log time, possibly later in the file) are carried
//! with it; they do not decide whether a frame is complete, since a frame may have none (no
//! depth within the slop), so a frame whose 3D outputs were not yet written when the run was
//! killed keeps none.
//!
//! While resuming, the old file is kept as `OUT.resume.mcap` until the new output is complete;
//! if the resume itself is killed, the next one takes whichever of `OUT.resume.mcap` and
//! `OUT.partial.mcap` holds more complete frames (names for `--out OUT.mcap`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::writer::BagWriter;
use crate::bag::mcap_reader::McapMessages;
use crate::bag::out_path::{partial_path, tagged};
use crate::error::{Error, Result};
use crate::msgs::schema;

const INSTANCES_SUFFIX: &str = "/yolact/instances";
const DETECTIONS_SUFFIX: &str = "/yolact/detections";
const DETECTIONS_3D_SUFFIX: &str = "/yolact/detections_3d";
const POINTS_SUFFIX: &str = "/yolact/points";

/// Kinds of output message: the first [`FRAME_KINDS`] make a frame complete.
const KINDS: usize = 5;
const FRAME_KINDS: usize = 3;

/// (input topic, log time) -> how many frames with that key are complete in the old output.
type Done = HashMap<(String, u64), u64>;

pub struct ResumeSource {
    path: PathBuf,
    done: Done,
    /// Frames complete in the old output.
    pub frames: u64,
    /// Read errors met in the old output (its cut-off end, usually).
    pub damage: Vec<String>,
}

fn resume_path(out: &Path) -> PathBuf {
    tagged(out, "resume")
}

/// What kind of output message this is, and the frame key it belongs to.
fn classify(
    topic: &str,
    msg_type: &str,
    t: u64,
    copy_inputs: bool,
) -> Option<(usize, (String, u64))> {
    if msg_type == schema::INSTANCE_ARRAY {
        let base = topic.strip_suffix(INSTANCES_SUFFIX)?;
        return Some((0, (base.to_string(), t)));
    }
    if msg_type == schema::DETECTION2D_ARRAY {
        let base = topic.strip_suffix(DETECTIONS_SUFFIX)?;
        return Some((1, (base.to_string(), t)));
    }
    if msg_type == schema::DETECTION3D_ARRAY {
        let base = topic.strip_suffix(DETECTIONS_3D_SUFFIX)?;
        return Some((3, (base.to_string(), t)));
    }
    if msg_type == schema::POINT_CLOUD2 {
        let base = topic.strip_suffix(POINTS_SUFFIX)?;
        return Some((4, (base.to_string(), t)));
    }
    if copy_inputs && msg_type != schema::DIAGNOSTIC_ARRAY {
        return Some((2, (topic.to_string(), t)));
    }
    None
}

/// Counts the complete frames of an old output.
fn scan(path: &Path, copy_inputs: bool) -> Result<(Done, Vec<String>)> {
    let mut counts: HashMap<(String, u64), [u64; KINDS]> = HashMap::new();
    let mut damage = Vec::new();
    for item in McapMessages::open(path, None)? {
        let m = match item {
            Ok(m) => m,
            Err(e) => {
                damage.push(e.to_string());
                continue;
            }
        };
        if let Some((kind, key)) = classify(&m.topic, &m.msg_type, m.log_time_ns, copy_inputs) {
            counts.entry(key).or_default()[kind] += 1;
        }
    }
    let kinds = if copy_inputs { FRAME_KINDS } else { 2 };
    let done = counts
        .into_iter()
        .map(|(k, c)| (k, c[..kinds].iter().copied().min().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok((done, damage))
}

fn frames(done: &Done) -> u64 {
    done.values().sum()
}

/// Finds the old output to resume from, keeping it as `OUT.resume.mcap`; `None` when there is
/// nothing to resume (the replay then starts from the beginning).
pub fn prepare(out: &Path, copy_inputs: bool) -> Result<Option<ResumeSource>> {
    let partial = partial_path(out);
    let kept = resume_path(out);
    let mut best: Option<(PathBuf, Done, Vec<String>)> = None;
    for cand in [&kept, &partial, &out.to_path_buf()] {
        if !cand.is_file() {
            continue;
        }
        let (done, damage) = match scan(cand, copy_inputs) {
            Ok(x) => x,
            Err(e) => {
                log::warn!("--resume: {} is not usable: {e}", cand.display());
                continue;
            }
        };
        if best
            .as_ref()
            .is_none_or(|(_, d, _)| frames(&done) > frames(d))
        {
            best = Some((cand.clone(), done, damage));
        }
    }
    let Some((path, done, damage)) = best else {
        return Ok(None);
    };
    if path != kept {
        std::fs::rename(&path, &kept).map_err(|e| Error::io(&path, e))?;
    }
    // The other candidate (if any) holds no frame the kept one lacks.
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    Ok(Some(ResumeSource {
        path: kept,
        frames: frames(&done),
        done,
        damage,
    }))
}

impl ResumeSource {
    /// Writes the complete frames of the old output into `w`, in the old order.
    pub fn carry(&self, w: &mut BagWriter, copy_inputs: bool) -> Result<()> {
        let mut written: HashMap<(String, u64), [u64; KINDS]> = HashMap::new();
        for m in McapMessages::open(&self.path, None)?.flatten() {
            let Some((kind, key)) = classify(&m.topic, &m.msg_type, m.log_time_ns, copy_inputs)
            else {
                continue;
            };
            let limit = self.done.get(&key).copied().unwrap_or(0);
            let n = &mut written.entry(key).or_default()[kind];
            if *n < limit {
                *n += 1;
                w.write(&m.topic, &m.msg_type, m.log_time_ns, &m.data)?;
            }
        }
        w.end_frame()
    }

    /// True (once per carried frame) when the input message `(topic, t)` was already done.
    pub fn take_done(&mut self, topic: &str, t: u64) -> bool {
        match self.done.get_mut(&(topic.to_string(), t)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// Removes the old output once the new one is complete.
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
