//! Tracker cost with 100 instances per frame at 720p (single thread, std::time only).
//!
//! Run: `cargo bench --bench tracker`. Prints median and spread over the timed frames for
//! `Tracker::update`, `StabilityMetrics::observe` + `snapshot`, and the conversion of 100 full-frame
//! detection masks into cropped `TrackInput`s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use yolact_ros2::output::detection::{Detection, Mask};
use yolact_ros2::tracking::{
    BoxMask, MetricsConfig, StabilityMetrics, TrackInput, Tracker, TrackerConfig,
};

const W: u32 = 1280;
const H: u32 = 720;
const INSTANCES: usize = 100;
const WARMUP: usize = 20;
const FRAMES: usize = 300;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An ellipse moving at constant velocity, bouncing off the frame edges, with a noisy score.
struct Object {
    class_id: usize,
    cx: f64,
    cy: f64,
    vx: f64,
    vy: f64,
    rx: f64,
    ry: f64,
}

impl Object {
    fn step(&mut self) {
        self.cx += self.vx;
        self.cy += self.vy;
        if self.cx - self.rx < 0.0 || self.cx + self.rx >= f64::from(W) {
            self.vx = -self.vx;
        }
        if self.cy - self.ry < 0.0 || self.cy + self.ry >= f64::from(H) {
            self.vy = -self.vy;
        }
    }

    fn input(&self, rng: &mut Rng) -> TrackInput {
        let x0 = (self.cx - self.rx).max(0.0) as u32;
        let y0 = (self.cy - self.ry).max(0.0) as u32;
        let x1 = ((self.cx + self.rx).ceil() as u32).min(W);
        let y1 = ((self.cy + self.ry).ceil() as u32).min(H);
        let (cx, cy, rx, ry) = (self.cx, self.cy, self.rx, self.ry);
        let mask = BoxMask::from_fn(x0, y0, x1 - x0, y1 - y0, |x, y| {
            let dx = (f64::from(x) + 0.5 - cx) / rx;
            let dy = (f64::from(y) + 0.5 - cy) / ry;
            dx * dx + dy * dy <= 1.0
        })
        .expect("synthetic mask");
        let [bx0, by0, bx1, by1] = mask.bounds();
        TrackInput {
            class_id: self.class_id,
            score: rng.uniform(0.5, 0.9) as f32,
            bbox: [bx0 as f32, by0 as f32, bx1 as f32, by1 as f32],
            mask,
        }
    }
}

fn summary(name: &str, mut t: Vec<Duration>) {
    t.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = t.len();
    println!(
        "{name:<44} n={n:<4} median {:>8.1} us   min {:>8.1} us   p90 {:>8.1} us   max {:>8.1} us",
        us(t[n / 2]),
        us(t[0]),
        us(t[n * 9 / 10]),
        us(t[n - 1]),
    );
}

/// Tracks `instances` moving objects for `WARMUP + FRAMES` frames, prints the timings and returns
/// the last frame's inputs.
fn run_case(instances: usize) -> Vec<TrackInput> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut objects: Vec<Object> = (0..instances)
        .map(|_| {
            let rx = rng.uniform(15.0, 75.0);
            let ry = rng.uniform(15.0, 75.0);
            Object {
                class_id: (rng.next() % 10) as usize,
                cx: rng.uniform(rx + 1.0, f64::from(W) - rx - 1.0),
                cy: rng.uniform(ry + 1.0, f64::from(H) - ry - 1.0),
                vx: rng.uniform(-4.0, 4.0),
                vy: rng.uniform(-4.0, 4.0),
                rx,
                ry,
            }
        })
        .collect();

    let mut tracker = Tracker::new(TrackerConfig::default()).expect("config");
    let mut metrics = StabilityMetrics::new(MetricsConfig::default()).expect("config");
    let mut t_update = Vec::with_capacity(FRAMES);
    let mut t_metrics = Vec::with_capacity(FRAMES);
    let mut mask_words = 0usize;
    let mut last_frame = Vec::new();
    for k in 0..WARMUP + FRAMES {
        let frame: Vec<TrackInput> = objects.iter().map(|o| o.input(&mut rng)).collect();
        objects.iter_mut().for_each(Object::step);
        let stamp = k as f64 / 30.0;

        let t0 = Instant::now();
        let assoc = tracker.update_detailed(stamp, &frame).expect("update");
        let t1 = Instant::now();
        metrics.observe(assoc);
        let report = black_box(metrics.snapshot());
        let t2 = Instant::now();
        if k >= WARMUP {
            t_update.push(t1 - t0);
            t_metrics.push(t2 - t1);
        }
        if k + 1 == WARMUP + FRAMES {
            println!(
                "run: {} frames, births {}, mask stability {:.4}, flicker/100 {:.3}, live tracks {}",
                report.run.frames,
                report.run.births,
                report.run.mask_stability_mean,
                report.run.flicker_per_100_track_frames,
                tracker.live_tracks()
            );
            mask_words = frame.iter().map(|i| i.mask.area() as usize).sum::<usize>() / instances;
            last_frame = frame;
        }
    }
    println!(
        "{instances} instances per frame at {W}x{H}, mean mask area {mask_words} px, {FRAMES} timed frames"
    );
    summary("Tracker::update", t_update);
    summary("StabilityMetrics::observe + snapshot", t_metrics);
    last_frame
}

fn main() {
    // Scaling first, the headline case (100) last.
    for n in [25, 50, 200] {
        run_case(n);
        println!();
    }
    let last_frame = run_case(INSTANCES);

    // Conversion from the pipeline's full-frame masks, timed over the same count of repetitions.
    let detections: Vec<Detection> = last_frame
        .iter()
        .map(|inp| {
            let mut data = vec![0u8; (W * H) as usize];
            let [x0, y0, x1, y1] = inp.mask.bounds();
            for y in y0..y1 {
                for x in x0..x1 {
                    data[(y * W + x) as usize] = inp.mask.get(x, y) as u8;
                }
            }
            Detection {
                class_id: inp.class_id,
                score: inp.score,
                class_score: inp.score,
                mask_iou: None,
                bbox: inp.bbox,
                mask: Mask::full(H as usize, W as usize, data),
            }
        })
        .collect();
    let mut t_conv = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let t0 = Instant::now();
        let inputs: Vec<TrackInput> = detections
            .iter()
            .map(|d| TrackInput::try_from(d).expect("convert"))
            .collect();
        t_conv.push(t0.elapsed());
        black_box(inputs);
    }
    summary("100 x TrackInput::try_from(&Detection)", t_conv);
}
