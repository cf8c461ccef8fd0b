//! Stage timing of a frame: the seven stages [`StageTimes`] reports, the clocks that measure them
//! ([`ClockKind`]) and the boundary recorder the engine marks as a frame goes ([`Clock`]).
//!
//! On a CUDA device the clock is CUDA events on candle's stream (one host wait per frame; see
//! [`crate::cuda::timing`] for what the numbers mean), elsewhere a wall clock that synchronises
//! the device at each stage boundary.

use std::time::{Duration, Instant};

use candle_core::Device;

use crate::error::{Error, Result};

/// Time of each stage of one frame (see [`ClockKind`] for how it was measured). With a captured
/// CUDA graph the network is one launch: its time is in `backbone`, and `fpn`, `protonet` and
/// `heads` are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub preprocess: Duration,
    pub backbone: Duration,
    pub fpn: Duration,
    pub protonet: Duration,
    pub heads: Duration,
    pub nms: Duration,
    pub masks: Duration,
}

impl StageTimes {
    pub const NAMES: [&'static str; 7] = [
        "preprocess",
        "backbone",
        "fpn",
        "protonet",
        "heads",
        "nms",
        "masks",
    ];

    pub fn as_array(&self) -> [Duration; 7] {
        [
            self.preprocess,
            self.backbone,
            self.fpn,
            self.protonet,
            self.heads,
            self.nms,
            self.masks,
        ]
    }

    pub fn total(&self) -> Duration {
        self.as_array().iter().sum()
    }

    /// The stage times of the `images` frames of one batch from the times of its stage boundaries
    /// since the batch started: first the shared stages (preprocess, backbone, fpn, protonet,
    /// heads; or preprocess and the whole network for a graph replay, `network_as_one`), then nms
    /// and masks of each image in turn. Each stage is the difference of consecutive boundaries
    /// (clamped at zero); the shared stages are repeated in every frame.
    pub fn from_marks(
        marks: &[Duration],
        images: usize,
        network_as_one: bool,
    ) -> Result<Vec<StageTimes>> {
        let shared = if network_as_one { 2 } else { 5 };
        if marks.len() != shared + 2 * images {
            return Err(Error::Invalid(format!(
                "{} stage boundaries for {images} image(s), expected {}",
                marks.len(),
                shared + 2 * images
            )));
        }
        let laps: Vec<Duration> = marks
            .iter()
            .scan(Duration::ZERO, |prev, &m| {
                let d = m.saturating_sub(*prev);
                *prev = m;
                Some(d)
            })
            .collect();
        let mut t = StageTimes {
            preprocess: laps[0],
            backbone: laps[1],
            ..StageTimes::default()
        };
        if !network_as_one {
            (t.fpn, t.protonet, t.heads) = (laps[2], laps[3], laps[4]);
        }
        Ok(laps[shared..]
            .chunks_exact(2)
            .map(|nm| StageTimes {
                nms: nm[0],
                masks: nm[1],
                ..t
            })
            .collect())
    }
}

/// How stage times are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// Host wall clock; the device is synchronised at each stage boundary, so a stage's queued
    /// device work is counted in it.
    Wall,
    /// CUDA timing events recorded on candle's stream at each boundary, no host wait between
    /// stages; one wait at the end of the frame (CUDA devices, `cuda` feature).
    CudaEvents,
}

impl ClockKind {
    /// The default for `device`: CUDA events on a CUDA device, else the wall clock.
    pub fn default_for(device: &Device) -> ClockKind {
        if cfg!(feature = "cuda") && device.is_cuda() {
            ClockKind::CudaEvents
        } else {
            ClockKind::Wall
        }
    }

    /// Stable name for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::Wall => "wall",
            ClockKind::CudaEvents => "cuda_events",
        }
    }

    /// Words for tables.
    pub fn describe(self) -> &'static str {
        match self {
            ClockKind::Wall => "wall clock",
            ClockKind::CudaEvents => "cuda events",
        }
    }
}

/// Stage boundaries of one frame; [`Clock::finish`] gives each boundary's time since the start.
pub(crate) enum Clock<'a> {
    /// Waits for queued device work at each boundary, so a stage is its time and not its launch.
    Wall {
        device: &'a Device,
        start: Instant,
        marks: Vec<Duration>,
    },
    #[cfg(feature = "cuda")]
    Events(crate::cuda::timing::EventClock),
}

impl<'a> Clock<'a> {
    pub(crate) fn start(device: &'a Device, kind: ClockKind) -> Result<Self> {
        match kind {
            #[cfg(feature = "cuda")]
            ClockKind::CudaEvents => match device {
                Device::Cuda(d) => Ok(Clock::Events(crate::cuda::timing::EventClock::start(d)?)),
                _ => Err(Error::Config(
                    "CUDA event timing needs a CUDA device".into(),
                )),
            },
            #[cfg(not(feature = "cuda"))]
            ClockKind::CudaEvents => Err(Error::Config(
                "CUDA event timing needs a build with the `cuda` feature".into(),
            )),
            ClockKind::Wall => {
                // Work queued before the frame is not the first stage's.
                device.synchronize()?;
                Ok(Clock::Wall {
                    device,
                    start: Instant::now(),
                    marks: Vec::with_capacity(12),
                })
            }
        }
    }

    pub(crate) fn mark(&mut self) -> Result<()> {
        match self {
            Clock::Wall {
                device,
                start,
                marks,
            } => {
                device.synchronize()?;
                marks.push(start.elapsed());
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Clock::Events(e) => e.mark(),
        }
    }

    pub(crate) fn finish(self) -> Result<Vec<Duration>> {
        match self {
            Clock::Wall { marks, .. } => Ok(marks),
            #[cfg(feature = "cuda")]
            Clock::Events(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn stage_times_are_differences_of_consecutive_boundaries() {
        // preprocess 2, backbone 10, fpn 3, protonet 4, heads 1, then (nms, masks) per image.
        let marks = ms(&[2, 12, 15, 19, 20, 25, 32, 33, 40]);
        let t = StageTimes::from_marks(&marks, 2, false).unwrap();
        assert_eq!(t.len(), 2);
        let shared = ms(&[2, 10, 3, 4, 1]);
        for f in &t {
            assert_eq!(f.as_array()[..5], shared[..]);
        }
        assert_eq!((t[0].nms, t[0].masks), (ms(&[5])[0], ms(&[7])[0]));
        assert_eq!((t[1].nms, t[1].masks), (ms(&[1])[0], ms(&[7])[0]));
        // One frame's stages add up to its last boundary.
        let one = StageTimes::from_marks(&marks[..7], 1, false).unwrap();
        assert_eq!(one[0].total(), marks[6]);
    }

    #[test]
    fn a_graph_frame_puts_the_network_in_backbone_and_zeroes_the_split() {
        let t = StageTimes::from_marks(&ms(&[1, 6, 8, 11]), 1, true).unwrap();
        assert_eq!(t[0].as_array(), ms(&[1, 5, 0, 0, 0, 2, 3])[..]);
        assert_eq!(t[0].total(), Duration::from_millis(11));
    }

    #[test]
    fn wrong_boundary_counts_are_errors_and_backwards_marks_clamp_to_zero() {
        for (n, graph, len) in [(1, false, 6), (1, false, 8), (2, false, 7), (1, true, 5)] {
            let e = StageTimes::from_marks(&ms(&vec![1; len]), n, graph).unwrap_err();
            assert!(e.to_string().contains("stage boundaries"), "{e}");
        }
        assert!(StageTimes::from_marks(&ms(&[3, 4, 5, 6, 7]), 0, false)
            .unwrap()
            .is_empty());
        let t = StageTimes::from_marks(&ms(&[5, 3, 9, 9]), 1, true).unwrap();
        assert_eq!(t[0].as_array(), ms(&[5, 0, 0, 0, 0, 6, 0])[..]);
    }

    #[test]
    fn the_cpu_uses_the_wall_clock_and_refuses_events() {
        assert_eq!(ClockKind::default_for(&Device::Cpu), ClockKind::Wall);
        assert!(Clock::start(&Device::Cpu, ClockKind::CudaEvents).is_err());
        let mut c = Clock::start(&Device::Cpu, ClockKind::Wall).unwrap();
        c.mark().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        c.mark().unwrap();
        let m = c.finish().unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[1] >= m[0] + Duration::from_millis(3), "{m:?}");
        assert_ne!(ClockKind::Wall.as_str(), ClockKind::CudaEvents.as_str());
    }
}
