//! Synthetic sequences with known answers for the tracker and the stability metrics.

use yolact_ros2::output::detection::{Detection, Mask};
use yolact_ros2::tracking::{
    BoxMask, MetricsConfig, MetricsWindow, MotEvaluator, StabilityMetrics, TrackInput, Tracker,
    TrackerConfig,
};

const W: u32 = 320;
const H: u32 = 240;

/// A full-frame raster as the independent reference for IoU.
fn raster(f: impl Fn(u32, u32) -> bool) -> Vec<bool> {
    let mut v = vec![false; (W * H) as usize];
    for y in 0..H {
        for x in 0..W {
            v[(y * W + x) as usize] = f(x, y);
        }
    }
    v
}

fn raster_iou(a: &[bool], b: &[bool]) -> f64 {
    let (mut i, mut u) = (0u64, 0u64);
    for (&p, &q) in a.iter().zip(b) {
        i += (p && q) as u64;
        u += (p || q) as u64;
    }
    i as f64 / u as f64
}

fn input_from_fn(class_id: usize, score: f32, f: impl Fn(u32, u32) -> bool) -> TrackInput {
    let mask = BoxMask::from_fn(0, 0, W, H, f).unwrap();
    let [x0, y0, x1, y1] = mask.bounds();
    TrackInput {
        class_id,
        score,
        bbox: [x0 as f32, y0 as f32, x1 as f32, y1 as f32],
        mask,
    }
}

fn square(class_id: usize, score: f32, x: u32, y: u32, s: u32) -> TrackInput {
    input_from_fn(class_id, score, move |px, py| {
        px >= x && px < x + s && py >= y && py < y + s
    })
}

fn run(
    tracker_cfg: TrackerConfig,
    metrics_cfg: MetricsConfig,
    frames: &[Vec<TrackInput>],
    fps: f64,
) -> (Vec<Vec<u32>>, StabilityMetrics) {
    let mut t = Tracker::new(tracker_cfg).unwrap();
    let mut m = StabilityMetrics::new(metrics_cfg).unwrap();
    let mut ids = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let assoc = t.update_detailed(k as f64 / fps, f).unwrap();
        ids.push(assoc.observations.iter().map(|o| o.track_id).collect());
        m.observe(assoc);
    }
    (ids, m)
}

#[test]
fn static_scene_is_perfectly_stable() {
    let frame: Vec<TrackInput> = (0..5)
        .map(|k| {
            square(
                k % 2,
                0.5 + 0.1 * k as f32,
                10 + 60 * k as u32,
                20 + 7 * k as u32,
                30,
            )
        })
        .collect();
    let frames = vec![frame; 20];
    let (ids, m) = run(
        TrackerConfig::default(),
        MetricsConfig {
            window: MetricsWindow::Frames(8),
            flicker_max_gap: 3,
        },
        &frames,
        30.0,
    );
    assert!(ids.iter().all(|f| f == &ids[0]), "IDs changed: {ids:?}");
    let mut sorted = ids[0].clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 5);
    let r = m.snapshot();
    for (name, s) in [("window", &r.window), ("run", &r.run)] {
        assert_eq!(s.mask_stability_mean, 1.0, "{name}");
        assert_eq!(s.box_centre_jitter_mean, 0.0, "{name}");
        assert_eq!(s.box_size_jitter_mean, 0.0, "{name}");
        assert_eq!(s.score_std_mean, 0.0, "{name}");
        assert_eq!(s.flicker_events, 0, "{name}");
        assert_eq!(s.flicker_per_100_track_frames, 0.0, "{name}");
        assert_eq!(s.instances_per_frame_mean, 5.0, "{name}");
        assert_eq!(s.instances_per_frame_std, 0.0, "{name}");
        assert_eq!(s.deaths, 0, "{name}");
    }
    assert_eq!(r.window.frames, 8);
    assert_eq!(r.window.births, 0);
    assert_eq!(r.window.mask_stability_samples, 8 * 5);
    assert_eq!(r.run.frames, 20);
    assert_eq!(r.run.births, 5);
    assert_eq!(r.run.mask_stability_samples, 19 * 5);
    assert_eq!(r.run.track_frames, 100);
    assert!((r.run.duration_s - 19.0 / 30.0).abs() < 1e-12);
    assert_eq!(r.run.score_std_tracks, 5);
}

#[test]
fn known_shift_gives_exact_iou_and_jitter() {
    // A 40x40 square moving 4 px right per frame: IoU (s-d)/(s+d), centre shift d/s, no size change.
    let (s, d) = (40u32, 4u32);
    let frames: Vec<Vec<TrackInput>> = (0..15)
        .map(|k| vec![square(0, 0.9, 10 + d * k, 50, s)])
        .collect();
    let (ids, m) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    assert!(ids.iter().all(|f| f == &ids[0]));
    let ref_a = raster(|x, y| (10..10 + s).contains(&x) && (50..50 + s).contains(&y));
    let ref_b = raster(|x, y| (10 + d..10 + d + s).contains(&x) && (50..50 + s).contains(&y));
    let want = raster_iou(&ref_a, &ref_b);
    assert!((want - f64::from(s - d) / f64::from(s + d)).abs() < 1e-15);
    let r = m.snapshot();
    assert!((r.run.mask_stability_mean - want).abs() < 1e-12);
    assert!((r.run.box_centre_jitter_mean - f64::from(d) / f64::from(s)).abs() < 1e-9);
    assert!(r.run.box_size_jitter_mean.abs() < 1e-12);
    assert_eq!(r.run.mask_stability_samples, 14);

    // A disc moving diagonally: compare against full-frame rasters of the same discs.
    let disc = |cx: f64, cy: f64| {
        move |x: u32, y: u32| (f64::from(x) - cx).powi(2) + (f64::from(y) - cy).powi(2) <= 400.0
    };
    let frames: Vec<Vec<TrackInput>> = (0..6)
        .map(|k| {
            vec![input_from_fn(
                3,
                0.7,
                disc(60.0 + 3.0 * k as f64, 70.0 + 2.0 * k as f64),
            )]
        })
        .collect();
    let (_, m) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    let mut want = 0.0;
    for k in 1..6 {
        let a = raster(disc(
            60.0 + 3.0 * (k - 1) as f64,
            70.0 + 2.0 * (k - 1) as f64,
        ));
        let b = raster(disc(60.0 + 3.0 * k as f64, 70.0 + 2.0 * k as f64));
        want += raster_iou(&a, &b) / 5.0;
    }
    assert!((m.snapshot().run.mask_stability_mean - want).abs() < 1e-12);
}

fn vanishing_sequence() -> Vec<Vec<TrackInput>> {
    // Object A is always there; object B is missing in frames 3 and 4, then returns.
    (0..8)
        .map(|k| {
            let mut f = vec![square(0, 0.8, 20, 20, 30)];
            if !(3..=4).contains(&k) {
                f.push(square(1, 0.6, 150, 100, 40));
            }
            f
        })
        .collect()
}

#[test]
fn vanished_object_keeps_id_within_gate_and_not_beyond() {
    let frames = vanishing_sequence();
    let cfg = |max_misses| TrackerConfig {
        max_misses,
        ..Default::default()
    };
    let (ids3, m3) = run(cfg(3), MetricsConfig::default(), &frames, 10.0);
    assert_eq!(ids3[5][1], ids3[2][1], "3-frame gate keeps B's ID");
    assert!(ids3.iter().all(|f| f[0] == ids3[0][0]));
    let r3 = m3.snapshot().run;
    assert_eq!(r3.flicker_events, 1);
    assert_eq!(r3.track_frames, 8 + 6);
    assert!((r3.flicker_per_100_track_frames - 100.0 / 14.0).abs() < 1e-12);
    assert_eq!(r3.births, 2);
    assert_eq!(r3.deaths, 0);

    let (ids1, m1) = run(cfg(1), MetricsConfig::default(), &frames, 10.0);
    assert_ne!(ids1[5][1], ids1[2][1], "1-frame gate gives B a new ID");
    assert_ne!(ids1[5][1], ids1[5][0]);
    let r1 = m1.snapshot().run;
    assert_eq!(r1.flicker_events, 0);
    assert_eq!(r1.births, 3);
    assert_eq!(r1.deaths, 1);

    // The same story in MOT terms: the new ID is one switch and one fragmentation.
    let mut mot = MotEvaluator::new();
    for (k, f) in ids1.iter().enumerate() {
        let gt: Vec<Option<u64>> = if (3..=4).contains(&k) {
            vec![Some(100)]
        } else {
            vec![Some(100), Some(200)]
        };
        let missed: Vec<u64> = if (3..=4).contains(&k) {
            vec![200]
        } else {
            vec![]
        };
        mot.observe_instances(&gt, f, &missed).unwrap();
    }
    let rep = mot.report();
    assert_eq!(rep.id_switches, 1);
    assert_eq!(rep.fragmentations, 1);
    assert_eq!(rep.missed, 2);
}

/// Two same-class squares crossing: A (size `sa`) moves right, B (size `sb`, `dy` lower) moves
/// left. With `occlude`, B's mask is only what A leaves uncovered. Returns the largest IoU between
/// one object's mask and the other's mask in the previous frame, i.e. how much the association was
/// contested.
fn check_crossing(sa: u32, sb: u32, dy: u32, speed: u32, occlude: bool) -> f64 {
    let n = 40u32;
    let mut frames = Vec::new();
    let mut gt = Vec::new();
    for k in 0..n {
        let ax = 20 + speed * k;
        let bx = 20 + speed * (n - 1) - speed * k;
        let in_a = move |x: u32, y: u32| (ax..ax + sa).contains(&x) && (60..60 + sa).contains(&y);
        let in_b = move |x: u32, y: u32| {
            (bx..bx + sb).contains(&x) && (60 + dy..60 + dy + sb).contains(&y)
        };
        let a = input_from_fn(0, 0.9, in_a);
        let b = input_from_fn(0, 0.8, move |x, y| in_b(x, y) && !(occlude && in_a(x, y)));
        let mut f = vec![a];
        let mut g = vec![Some(1u64)];
        if b.mask.area() > 0 {
            f.push(b);
            g.push(Some(2));
        }
        frames.push(f);
        gt.push(g);
    }
    let mut contest: f64 = 0.0;
    for k in 1..frames.len() {
        if let (Some(a1), Some(b0)) = (frames[k].first(), frames[k - 1].get(1)) {
            contest = contest.max(a1.mask.iou(&b0.mask));
        }
        if let (Some(b1), Some(a0)) = (frames[k].get(1), frames[k - 1].first()) {
            contest = contest.max(b1.mask.iou(&a0.mask));
        }
    }
    let (ids, m) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        30.0,
    );
    let (id_a, id_b) = (ids[0][0], ids[0][1]);
    let mut mot = MotEvaluator::new();
    for (k, (f, g)) in ids.iter().zip(&gt).enumerate() {
        assert_eq!(f[0], id_a, "A switched at frame {k}");
        if f.len() > 1 {
            assert_eq!(f[1], id_b, "B switched at frame {k}");
        }
        let missed: Vec<u64> = if g.len() == 1 { vec![2] } else { vec![] };
        mot.observe_instances(g, f, &missed).unwrap();
    }
    assert_eq!(mot.report().id_switches, 0);
    assert_eq!(m.snapshot().run.births, 2);
    contest
}

#[test]
fn crossing_objects_of_one_class_keep_their_ids() {
    // B passes behind A.
    check_crossing(40, 40, 15, 5, true);
    // Overlapping masks (YOLACT can output them) where each object's mask also overlaps the
    // other's previous mask above the gate: the association is genuinely contested.
    let contest = check_crossing(40, 30, 5, 6, false);
    assert!(contest >= TrackerConfig::default().iou_gate, "{contest}");
}

#[test]
fn class_gate_separates_overlapping_objects() {
    // Identical masks, different classes: with class matching, the classes never swap IDs.
    let frames: Vec<Vec<TrackInput>> = (0..4)
        .map(|k| {
            let (c0, c1) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
            vec![square(c0, 0.9, 50, 50, 30), square(c1, 0.9, 50, 50, 30)]
        })
        .collect();
    let (ids, _) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    for (k, f) in ids.iter().enumerate() {
        let (id_class0, id_class1) = if k % 2 == 0 {
            (f[0], f[1])
        } else {
            (f[1], f[0])
        };
        assert_eq!((id_class0, id_class1), (ids[0][0], ids[0][1]));
    }
}

#[test]
fn window_forgets_old_frames_by_count_and_by_time() {
    // Ten jittery frames, then ten static ones.
    let frames: Vec<Vec<TrackInput>> = (0..20u32)
        .map(|k| {
            let x = if k < 10 { 30 + 3 * (k % 2) } else { 30 };
            vec![square(0, 0.5, x, 30, 30)]
        })
        .collect();
    for window in [MetricsWindow::Frames(5), MetricsWindow::Seconds(0.5)] {
        let (_, m) = run(
            TrackerConfig::default(),
            MetricsConfig {
                window,
                flicker_max_gap: 3,
            },
            &frames,
            10.0,
        );
        let r = m.snapshot();
        assert_eq!(r.window.frames, 5, "{window:?}");
        assert_eq!(r.window.mask_stability_mean, 1.0, "{window:?}");
        assert!(r.run.mask_stability_mean < 1.0);
        assert!(r.run.box_centre_jitter_mean > 0.0);
    }
}

#[test]
fn score_jitter_is_population_std() {
    let frames: Vec<Vec<TrackInput>> = (0..10)
        .map(|k| vec![square(0, if k % 2 == 0 { 0.75 } else { 0.25 }, 30, 30, 30)])
        .collect();
    let (_, m) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    let r = m.snapshot();
    assert!((r.run.score_std_mean - 0.25).abs() < 1e-9);
    assert!((r.window.score_std_mean - 0.25).abs() < 1e-9);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"mask_stability_mean\":1.0"), "{json}");
}

#[test]
fn deaths_are_counted_and_scores_of_dead_tracks_kept() {
    let mut frames = vec![
        vec![square(0, 0.2, 10, 10, 20), square(0, 0.9, 100, 100, 20)],
        vec![square(0, 0.4, 10, 10, 20), square(0, 0.9, 100, 100, 20)],
    ];
    frames.extend((0..5).map(|_| vec![square(0, 0.9, 100, 100, 20)]));
    let (_, m) = run(
        TrackerConfig {
            max_misses: 2,
            ..Default::default()
        },
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    let r = m.snapshot().run;
    assert_eq!(r.deaths, 1);
    assert!((r.deaths_per_frame - 1.0 / 7.0).abs() < 1e-12);
    assert!((r.births_per_frame - 2.0 / 7.0).abs() < 1e-12);
    // Dead track: std 0.1; live one: 0.
    assert_eq!(r.score_std_tracks, 2);
    assert!((r.score_std_mean - 0.05).abs() < 1e-6);
}

#[test]
fn detection_converts_to_a_cropped_mask() {
    let (w, h) = (64usize, 48usize);
    let mut data = vec![0u8; w * h];
    for y in 10..20 {
        for x in 30..45 {
            data[y * w + x] = 1;
        }
    }
    let det = Detection {
        class_id: 2,
        score: 0.7,
        class_score: 0.7,
        mask_iou: None,
        bbox: [30.0, 10.0, 45.0, 20.0],
        mask: Mask::full(h, w, data),
    };
    let inp = TrackInput::try_from(&det).unwrap();
    assert_eq!(inp.mask.bounds(), [30, 10, 45, 20]);
    assert_eq!(inp.mask.area(), 150);
    assert_eq!(inp.class_id, 2);
}

#[test]
fn many_instances_keep_their_ids() {
    // 100 small squares on a grid, each drifting a pixel per frame.
    let frames: Vec<Vec<TrackInput>> = (0..10u32)
        .map(|k| {
            (0..100u32)
                .map(|i| {
                    square(
                        (i % 3) as usize,
                        0.5,
                        2 + 30 * (i % 10) + k,
                        2 + 22 * (i / 10),
                        18,
                    )
                })
                .collect()
        })
        .collect();
    let (ids, m) = run(
        TrackerConfig::default(),
        MetricsConfig::default(),
        &frames,
        10.0,
    );
    assert!(ids.iter().all(|f| f == &ids[0]));
    assert_eq!(m.snapshot().run.births, 100);
}

#[test]
fn stream_bundle_tracks_reports_and_survives_a_time_jump() {
    use yolact_ros2::tracking::StreamStability;
    let mut s = StreamStability::new(TrackerConfig::default(), MetricsConfig::default()).unwrap();
    let frame = vec![square(0, 0.5, 10, 10, 20), square(1, 0.5, 60, 10, 20)];
    let first = s.update(1.0, &frame).unwrap();
    assert_eq!(s.update(1.1, &frame).unwrap(), first);
    assert!(s.update(0.5, &frame).is_err(), "stamp going backwards");
    s.reset();
    let after = s.update(0.5, &frame).unwrap();
    assert!(
        after.iter().all(|id| !first.contains(id)),
        "IDs are not reused"
    );
    let r = s.snapshot();
    assert_eq!(r.window.frames, 1);
    assert_eq!(r.run.frames, 3);
    assert_eq!(r.run.births, 4);
    assert_eq!(s.tracker().live_tracks(), 2);
}
