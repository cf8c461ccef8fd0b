//! `yolact replay` with depth: RGB-D bags written here (realsense2_camera topic names, so the
//! default pairing is exercised), replayed on synthetic weights, read back with our reader and
//! with rosbags (tools/read_replay_bag.py).
//!
//! The scene: a wall at 2 m filling the depth view and a box-shaped object 0.8 m in front of it,
//! some depth pixels without a reading (0 / NaN); colour 96x72, depth 64x48 with the same field
//! of view (1.5 colour pixels per depth pixel). The detections of synthetic weights are
//! meaningless; the test runs the same engine on the same colour images in process for each
//! detection's full mask (the InstanceArray's RLE holds only its box window, and a mask may
//! reach a pixel or two past its box), checks they are the replay's detections (same boxes),
//! and recomputes the depth under each mask, its valid fraction and its centroid from the scene,
//! to compare with the 3D outputs and the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use image::RgbImage;
use serde_json::Value as Json;
use yolact_ros2::bag::{open_bag, Header, ImageMsg, Time};
use yolact_ros2::msgs::camera_info::CameraInfo;
use yolact_ros2::msgs::schema::{self, Value};
use yolact_ros2::msgs::InstanceArray;
use yolact_ros2::output::detection::Detections;
use yolact_ros2::replay::BagWriter;

use crate::support::{self, yolact_cmd};

const CW: u32 = 96;
const CH: u32 = 72;
const DW: u32 = 64;
const DH: u32 = 48;
const FX: f64 = 60.0;
const CX: f64 = 31.5;
const CY: f64 = 23.5;
const WALL_M: f64 = 2.0;
const OBJECT_M: f64 = 1.2;
const COLOUR: &str = "/camera/color/image_raw";
const DEPTH: &str = "/camera/aligned_depth_to_color/image_raw";
const INFO: &str = "/camera/aligned_depth_to_color/camera_info";
const DEPTH_FRAME: &str = "camera_aligned_depth_optical_frame";
/// Colour stamps: 1000 s + i * 100 ms.
const FRAMES: u32 = 4;
/// The colour frame without a depth frame within the slop.
const LONELY: u32 = 2;
/// Depth stamps are 2 ms after their colour stamp.
const DEPTH_OFFSET_NS: u32 = 2_000_000;

fn stamp(i: u32, extra_ns: u32) -> Time {
    Time {
        sec: 1000,
        nanosec: i * 100_000_000 + extra_ns,
    }
}

/// Depth in metres at depth pixel `(u, v)` of the scene; `None` where the sensor has no reading.
fn scene_depth(u: u32, v: u32) -> Option<f64> {
    if (u * 7 + v * 3) % 13 == 0 {
        return None;
    }
    if (20..44).contains(&u) && (12..34).contains(&v) {
        Some(OBJECT_M)
    } else {
        Some(WALL_M)
    }
}

fn depth_msg(i: u32, float: bool) -> Vec<u8> {
    let header = Header {
        stamp: stamp(i, DEPTH_OFFSET_NS),
        frame_id: DEPTH_FRAME.into(),
    };
    let mut data = Vec::new();
    for v in 0..DH {
        for u in 0..DW {
            let d = scene_depth(u, v);
            if float {
                let m = d.map_or(f32::NAN, |m| m as f32);
                data.extend_from_slice(&m.to_le_bytes());
            } else {
                let mm = d.map_or(0u16, |m| (m * 1000.0).round() as u16);
                data.extend_from_slice(&mm.to_le_bytes());
            }
        }
    }
    let bytes = if float { 4 } else { 2 };
    ImageMsg {
        header,
        height: DH,
        width: DW,
        encoding: if float { "32FC1" } else { "16UC1" }.into(),
        is_bigendian: 0,
        step: DW * bytes,
        data,
    }
    .to_cdr(true)
    .unwrap()
}

fn colour_image(i: u32) -> RgbImage {
    RgbImage::from_fn(CW, CH, |x, y| {
        let (x, y) = (x + i, y + 2 * i);
        image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) * 7 % 256) as u8,
        ])
    })
}

fn colour_msg(i: u32) -> Vec<u8> {
    let img = colour_image(i);
    let header = Header {
        stamp: stamp(i, 0),
        frame_id: "camera_color_optical_frame".into(),
    };
    ImageMsg::from_rgb(header, &img).to_cdr(true).unwrap()
}

/// The bag, in log-time order: camera info; per frame i a colour message, and its depth message
/// before (even i) or after (odd i) it; no depth for [`LONELY`]; one extra depth frame 50 ms
/// after frame 1 that no colour frame can use.
fn write_bag(path: &Path, float: bool) {
    let ms = 1_000_000u64;
    let t0 = 1000 * 1000 * ms;
    let mut w = BagWriter::create(path).unwrap();
    let info = CameraInfo::pinhole(
        Header {
            stamp: stamp(0, 0),
            frame_id: DEPTH_FRAME.into(),
        },
        DW,
        DH,
        FX,
        FX,
        CX,
        CY,
    );
    w.write(INFO, schema::CAMERA_INFO, t0, &info.to_cdr().unwrap())
        .unwrap();
    for i in 0..FRAMES {
        let t = t0 + u64::from(i) * 100 * ms + 10 * ms;
        let depth = i != LONELY;
        if depth && i % 2 == 0 {
            w.write(DEPTH, schema::IMAGE, t - ms, &depth_msg(i, float))
                .unwrap();
        }
        w.write(COLOUR, schema::IMAGE, t, &colour_msg(i)).unwrap();
        if depth && i % 2 == 1 {
            w.write(DEPTH, schema::IMAGE, t + ms, &depth_msg(i, float))
                .unwrap();
        }
        if i == 1 {
            let mut extra = ImageMsg::from_cdr(&depth_msg(1, float)).unwrap();
            extra.header.stamp = stamp(1, 50_000_000);
            let cdr = extra.to_cdr(true).unwrap();
            w.write(DEPTH, schema::IMAGE, t + 50 * ms, &cdr).unwrap();
        }
        w.end_frame().unwrap();
    }
    w.finish().unwrap();
}

fn replay(bag: &Path, dir: &Path, extra: &[&str]) -> (PathBuf, Json) {
    let out = dir.join("out.mcap");
    let rep = dir.join("report");
    let o = yolact_cmd()
        .arg("replay")
        .arg(bag)
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args([
            "--device",
            "cpu",
            "--score-threshold",
            "0.05",
            "--top-k",
            "5",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&rep)
        .args(["--depth-min-points", "3"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", support::text(&o));
    let json = std::fs::read_to_string(rep.join("report.json")).unwrap();
    (out, serde_json::from_str(&json).unwrap())
}

/// One Detection3D as both readers see it.
#[derive(Debug, Clone, PartialEq)]
struct Det3 {
    id: String,
    class: String,
    score: f64,
    centroid: [f64; 3],
    size: [f64; 3],
}

#[derive(Debug, Clone, PartialEq)]
struct Det3Array {
    log_time_ns: u64,
    frame_id: String,
    stamp: (i64, i64),
    dets: Vec<Det3>,
}

#[derive(Debug, Clone, PartialEq)]
struct Cloud {
    log_time_ns: u64,
    frame_id: String,
    stamp: (i64, i64),
    fields: Vec<(String, u64, u64)>,
    /// x, y, z, instance_id, class_id.
    points: Vec<([f32; 3], u32, u32)>,
}

struct Outputs {
    instances: Vec<(u64, InstanceArray)>,
    det3: Vec<Det3Array>,
    clouds: Vec<Cloud>,
    topics: Vec<(String, String)>,
}

fn float(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = v.get(p).unwrap_or_else(|| panic!("no {p} in {v:?}"));
    }
    match v {
        Value::Float(x) => *x,
        other => panic!("{other:?}"),
    }
}

fn int(v: &Value, name: &str) -> i64 {
    match v.get(name) {
        Some(Value::Int(x)) => *x as i64,
        other => panic!("{name}: {other:?}"),
    }
}

fn string(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::Str(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn array<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    match v.get(name) {
        Some(Value::Array(a)) => a,
        other => panic!("{name}: {other:?}"),
    }
}

fn header_of(v: &Value) -> (String, (i64, i64)) {
    let h = v.get("header").unwrap();
    let st = h.get("stamp").unwrap();
    (string(h, "frame_id"), (int(st, "sec"), int(st, "nanosec")))
}

fn point(data: &[u8], at: usize) -> ([f32; 3], u32, u32) {
    let f = |o: usize| f32::from_le_bytes(data[at + o..at + o + 4].try_into().unwrap());
    let u = |o: usize| u32::from_le_bytes(data[at + o..at + o + 4].try_into().unwrap());
    ([f(0), f(4), f(8)], u(12), u(16))
}

fn read_ours(out: &Path) -> Outputs {
    let mut o = Outputs {
        instances: vec![],
        det3: vec![],
        clouds: vec![],
        topics: vec![],
    };
    let reader = open_bag(out).unwrap();
    for t in reader.topics().unwrap() {
        o.topics.push((t.name, t.msg_type));
    }
    for m in reader.messages(None) {
        let m = m.unwrap();
        match m.msg_type.as_str() {
            schema::INSTANCE_ARRAY => o
                .instances
                .push((m.log_time_ns, InstanceArray::from_cdr(&m.data).unwrap())),
            schema::DETECTION3D_ARRAY => {
                assert_eq!(m.topic, format!("{COLOUR}/yolact/detections_3d"));
                let v = schema::decode_dynamic(&m.msg_type, &m.data).unwrap();
                let (frame_id, stamp) = header_of(&v);
                let dets = array(&v, "detections")
                    .iter()
                    .map(|d| {
                        let r = &array(d, "results")[0];
                        let pos = |a: &str| float(r, &["pose", "pose", "position", a]);
                        let size = |a: &str| float(d, &["bbox", "size", a]);
                        Det3 {
                            id: string(d, "id"),
                            class: string(r.get("hypothesis").unwrap(), "class_id"),
                            score: float(r, &["hypothesis", "score"]),
                            centroid: [pos("x"), pos("y"), pos("z")],
                            size: [size("x"), size("y"), size("z")],
                        }
                    })
                    .collect();
                o.det3.push(Det3Array {
                    log_time_ns: m.log_time_ns,
                    frame_id,
                    stamp,
                    dets,
                });
            }
            schema::POINT_CLOUD2 => {
                assert_eq!(m.topic, format!("{COLOUR}/yolact/points"));
                let v = schema::decode_dynamic(&m.msg_type, &m.data).unwrap();
                let (frame_id, stamp) = header_of(&v);
                let fields = array(&v, "fields")
                    .iter()
                    .map(|f| {
                        (
                            string(f, "name"),
                            int(f, "offset") as u64,
                            int(f, "datatype") as u64,
                        )
                    })
                    .collect();
                let data: Vec<u8> = array(&v, "data")
                    .iter()
                    .map(|b| match b {
                        Value::Int(x) => *x as u8,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!(int(&v, "point_step"), 20);
                assert_eq!(int(&v, "height"), 1);
                let n = int(&v, "width") as usize;
                assert_eq!(data.len(), n * 20);
                o.clouds.push(Cloud {
                    log_time_ns: m.log_time_ns,
                    frame_id,
                    stamp,
                    fields,
                    points: (0..n).map(|i| point(&data, i * 20)).collect(),
                });
            }
            _ => {}
        }
    }
    o
}

/// The same outputs through rosbags; `None` (printed) when rosbags is missing and not required.
fn read_rosbags(out: &Path) -> Option<(Vec<Det3Array>, Vec<Cloud>)> {
    let required = std::env::var_os("YOLACT_REQUIRE_ROSBAGS").is_some();
    let o = Command::new("python3")
        .arg(support::repo().join("tools/read_replay_bag.py"))
        .arg(out)
        .arg(support::repo().join("msg"))
        .output()
        .expect("python3");
    if o.status.code() == Some(2) {
        assert!(!required, "rosbags required: {}", support::text(&o));
        eprintln!("NOT CHECKED with rosbags: {}", support::text(&o));
        return None;
    }
    assert!(o.status.success(), "{}", support::text(&o));
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    let hdr = |m: &Json| {
        let h = &m["header"];
        (
            h["frame_id"].as_str().unwrap().to_string(),
            (
                h["stamp"]["sec"].as_i64().unwrap(),
                h["stamp"]["nanosec"].as_i64().unwrap(),
            ),
        )
    };
    let (mut det3, mut clouds) = (vec![], vec![]);
    for rec in j["messages"].as_array().unwrap() {
        let m = &rec["msg"];
        let t = rec["log_time_ns"].as_u64().unwrap();
        match rec["msgtype"].as_str().unwrap() {
            "vision_msgs/msg/Detection3DArray" => {
                let (frame_id, stamp) = hdr(m);
                let dets = m["detections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        let r = &d["results"][0];
                        let p = &r["pose"]["pose"]["position"];
                        let s = &d["bbox"]["size"];
                        let xyz = |v: &Json| {
                            [
                                v["x"].as_f64().unwrap(),
                                v["y"].as_f64().unwrap(),
                                v["z"].as_f64().unwrap(),
                            ]
                        };
                        Det3 {
                            id: d["id"].as_str().unwrap().into(),
                            class: r["hypothesis"]["class_id"].as_str().unwrap().into(),
                            score: r["hypothesis"]["score"].as_f64().unwrap(),
                            centroid: xyz(p),
                            size: xyz(s),
                        }
                    })
                    .collect();
                det3.push(Det3Array {
                    log_time_ns: t,
                    frame_id,
                    stamp,
                    dets,
                });
            }
            "sensor_msgs/msg/PointCloud2" => {
                let (frame_id, stamp) = hdr(m);
                let fields = m["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        (
                            f["name"].as_str().unwrap().to_string(),
                            f["offset"].as_u64().unwrap(),
                            f["datatype"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                let points = m["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        let f = |k: &str| p[k].as_f64().unwrap() as f32;
                        let u = |k: &str| p[k].as_u64().unwrap() as u32;
                        ([f("x"), f("y"), f("z")], u("instance_id"), u("class_id"))
                    })
                    .collect();
                clouds.push(Cloud {
                    log_time_ns: t,
                    frame_id,
                    stamp,
                    fields,
                    points,
                });
            }
            _ => {}
        }
    }
    Some((det3, clouds))
}

/// Frame i's detections by the replay's engine (synthetic yolact_resnet50 weights with the
/// default seed, as `--weights synthetic`; the replay's thresholds), computed once.
fn engine_detections() -> &'static [Detections] {
    static DETS: OnceLock<Vec<Detections>> = OnceLock::new();
    DETS.get_or_init(|| {
        use yolact_ros2::engine::{Engine, InferOptions};
        use yolact_ros2::weights::synth;
        let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
        let sd = synth::synth_state_dict(&cfg, synth::DEFAULT_SEED).unwrap();
        let engine = Engine::from_state_dict(sd, cfg, &candle_core::Device::Cpu).unwrap();
        let opts = InferOptions {
            score_threshold: 0.05,
            top_k: 5,
            ..InferOptions::default()
        };
        (0..FRAMES)
            .map(|i| engine.infer(&colour_image(i), &opts).unwrap())
            .collect()
    })
}

/// The full-image masks of the frame an InstanceArray belongs to, after checking that the
/// in-process detections are the replay's.
fn masks_for(inst: &InstanceArray) -> Vec<Vec<bool>> {
    let i = inst.header.stamp.nanosec / 100_000_000;
    let dets = &engine_detections()[i as usize];
    assert_eq!(dets.items.len(), inst.instances.len(), "frame {i}");
    dets.items
        .iter()
        .zip(&inst.instances)
        .map(|(d, m)| {
            assert_eq!(d.bbox, [m.x1, m.y1, m.x2, m.y2], "frame {i}");
            let mut full = vec![false; (CW * CH) as usize];
            for y in 0..CH as usize {
                for x in 0..CW as usize {
                    full[y * CW as usize + x] = d.mask.get(x, y);
                }
            }
            full
        })
        .collect()
}

/// The colour pixel whose centre is nearest to depth pixel `d`'s centre: both images span the
/// same field of view, pixel edges on pixel edges.
fn colour_pixel(d: u32, depth_n: u32, colour_n: u32) -> usize {
    let s = f64::from(colour_n) / f64::from(depth_n);
    ((f64::from(d) + 0.5) * s - 0.5).round() as usize
}

/// What the depth under a mask says, computed from the scene: sampled and valid pixel counts,
/// and the valid readings as points (without erosion or outlier rejection).
struct Expect {
    sampled: usize,
    valid: usize,
    points: Vec<[f64; 3]>,
}

fn expect(mask: &[bool]) -> Expect {
    let mut e = Expect {
        sampled: 0,
        valid: 0,
        points: vec![],
    };
    for v in 0..DH {
        for u in 0..DW {
            let (cu, cv) = (colour_pixel(u, DW, CW), colour_pixel(v, DH, CH));
            if !mask[cv * CW as usize + cu] {
                continue;
            }
            e.sampled += 1;
            if let Some(z) = scene_depth(u, v) {
                e.valid += 1;
                let (x, y) = ((f64::from(u) - CX) / FX * z, (f64::from(v) - CY) / FX * z);
                e.points.push([x, y, z]);
            }
        }
    }
    e
}

fn mean(p: &[[f64; 3]]) -> [f64; 3] {
    std::array::from_fn(|i| p.iter().map(|q| q[i]).sum::<f64>() / p.len() as f64)
}

/// Checks one run without erosion and rejection against the scene; returns the outputs.
fn check_run(out: &Path, report: &Json) -> Outputs {
    let md = std::fs::read_to_string(out.parent().unwrap().join("report/report.md")).unwrap();
    assert!(md.contains("## 3D (aligned depth)"), "{md}");
    let o = read_ours(out);
    for (t, ty) in [
        (
            format!("{COLOUR}/yolact/detections_3d"),
            schema::DETECTION3D_ARRAY,
        ),
        (format!("{COLOUR}/yolact/points"), schema::POINT_CLOUD2),
    ] {
        assert!(o.topics.contains(&(t.clone(), ty.to_string())), "{t}");
    }
    // The depth stream was paired, not segmented as a colour image.
    assert!(!o.topics.iter().any(|(t, _)| t.starts_with(DEPTH)));
    assert_eq!(o.instances.len(), FRAMES as usize);
    assert_eq!(report["frames"], FRAMES);
    let d = &report["depth"][COLOUR];
    assert_eq!(d["depth_topic"], DEPTH);
    assert_eq!(d["info_topic"], INFO);
    assert_eq!(d["registered"], true);
    assert_eq!(d["colour_frames"], FRAMES);
    assert_eq!(d["paired"], FRAMES - 1);
    assert_eq!(d["colour_unpaired"], 1);
    assert_eq!(d["depth_unpaired"], 1);
    assert_eq!(d["depth_frames"], FRAMES);
    assert_eq!(d["camera_infos"], 1);
    assert_eq!(d["errors"], 0, "{d}");
    assert!((d["pairing_rate"].as_f64().unwrap() - 0.75).abs() < 1e-12);

    // One Detection3DArray and one cloud per paired frame, at the colour frame's log time, with
    // the depth frame's header.
    let paired: Vec<&(u64, InstanceArray)> = o
        .instances
        .iter()
        .filter(|(_, m)| m.header.stamp.nanosec != LONELY * 100_000_000)
        .collect();
    assert_eq!(o.det3.len(), paired.len());
    assert_eq!(o.clouds.len(), paired.len());
    let (mut instances, mut located, mut without) = (0u64, 0u64, 0u64);
    let (mut fsum, mut fn_, mut valid, mut sampled) = (0.0, 0u64, 0usize, 0usize);
    let mut tracks: BTreeMap<u32, Vec<[f64; 3]>> = BTreeMap::new();
    for (((t, inst), det3), cloud) in paired.iter().zip(&o.det3).zip(&o.clouds) {
        assert_eq!(det3.log_time_ns, *t);
        assert_eq!(cloud.log_time_ns, *t);
        let want_stamp = (
            i64::from(inst.header.stamp.sec),
            i64::from(inst.header.stamp.nanosec + DEPTH_OFFSET_NS),
        );
        assert_eq!(
            (det3.frame_id.as_str(), det3.stamp),
            (DEPTH_FRAME, want_stamp)
        );
        assert_eq!(
            (cloud.frame_id.as_str(), cloud.stamp),
            (DEPTH_FRAME, want_stamp)
        );
        let names: Vec<&str> = cloud.fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["x", "y", "z", "instance_id", "class_id"]);
        let mut dets = det3.dets.iter();
        for (i, mask) in inst.instances.iter().zip(masks_for(inst)) {
            instances += 1;
            let e = expect(&mask);
            if e.sampled > 0 {
                fsum += e.valid as f64 / e.sampled as f64;
                fn_ += 1;
            }
            valid += e.valid;
            sampled += e.sampled;
            if e.valid < 3 {
                without += 1;
                continue;
            }
            located += 1;
            let d = dets.next().expect("a Detection3D per located instance");
            assert_eq!(d.id, i.track_id.to_string());
            assert_eq!(d.class, i.class_name);
            assert!((d.score - f64::from(i.score)).abs() < 1e-6);
            let c = mean(&e.points);
            for k in 0..3 {
                assert!((d.centroid[k] - c[k]).abs() < 1e-4, "{d:?} vs {c:?}");
            }
            // Between the object and the wall, and flat where only one of them is seen.
            assert!((OBJECT_M - 1e-6..=WALL_M + 1e-6).contains(&d.centroid[2]));
            if i.track_id != u32::MAX {
                tracks.entry(i.track_id).or_default().push(c);
            }
            let mine: Vec<_> = cloud.points.iter().filter(|p| p.1 == i.track_id).collect();
            assert_eq!(mine.len(), e.valid, "points of track {}", i.track_id);
            for p in mine {
                assert_eq!(p.2, u32::from(i.class_id));
                let z = f64::from(p.0[2]);
                assert!(
                    (z - OBJECT_M).abs() < 1e-6 || (z - WALL_M).abs() < 1e-6,
                    "{z}"
                );
            }
        }
        assert!(dets.next().is_none(), "a Detection3D for no instance");
    }
    assert!(located > 0, "no instance located: nothing 3D was checked");
    assert_eq!(d["instances"], instances);
    assert_eq!(d["instances_located"], located);
    assert_eq!(d["instances_without_enough_depth"], without);
    let f = d["valid_depth_fraction_mean"].as_f64().unwrap();
    assert!((f - fsum / fn_ as f64).abs() < 1e-9, "{f}");
    assert!(f < 1.0, "the scene has holes: {f}");
    let pooled = d["valid_depth_fraction_pooled"].as_f64().unwrap();
    assert!((pooled - valid as f64 / sampled as f64).abs() < 1e-9);
    // Jitter per track: RMS distance of the track's centroids from their mean.
    for (id, cs) in &tracks {
        let r = &d["tracks"][id.to_string()];
        assert_eq!(r["frames"], cs.len());
        let m = mean(cs);
        let rms = (cs
            .iter()
            .map(|c| (0..3).map(|k| (c[k] - m[k]).powi(2)).sum::<f64>())
            .sum::<f64>()
            / cs.len() as f64)
            .sqrt();
        match r["jitter_rms_m"].as_f64() {
            Some(j) => assert!((j - rms).abs() < 1e-4, "track {id}: {j} vs {rms}"),
            None => assert_eq!(cs.len(), 1),
        }
    }
    if let Some((det3, clouds)) = read_rosbags(out) {
        assert_eq!(det3, o.det3);
        assert_eq!(clouds, o.clouds);
    }
    o
}

const EXACT: [&str; 4] = ["--depth-erosion-px", "0", "--depth-outlier-k", "0"];

/// 16UC1 mm and 32FC1 m bags give the same 3D outputs, both equal to the scene's.
#[test]
fn replay_pairs_aligned_depth_and_writes_the_3d_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for float in [false, true] {
        let sub = dir.path().join(if float { "m" } else { "mm" });
        let bag = sub.join("rgbd.mcap");
        write_bag(&bag, float);
        let (out, report) = replay(&bag, &sub, &EXACT);
        runs.push(check_run(&out, &report));
    }
    assert_eq!(runs[0].det3, runs[1].det3, "mm and m differ");
    assert_eq!(runs[0].clouds, runs[1].clouds);
}

/// With the default rejection, an instance whose mask covers object and wall keeps only the
/// surface holding most of its readings: no box spans the gap (no edge bleeding).
#[test]
fn replay_depth_rejects_the_wall_behind_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("rgbd.mcap");
    write_bag(&bag, false);
    let (out, report) = replay(&bag, dir.path(), &["--depth-erosion-px", "0"]);
    let o = read_ours(&out);
    assert_eq!(report["depth"][COLOUR]["paired"], FRAMES - 1);
    let mut mixed = 0;
    for (_, inst) in &o.instances {
        let Some(cloud) = o
            .clouds
            .iter()
            .find(|c| c.stamp.1 == i64::from(inst.header.stamp.nanosec + DEPTH_OFFSET_NS))
        else {
            continue;
        };
        for (i, mask) in inst.instances.iter().zip(masks_for(inst)) {
            let e = expect(&mask);
            let near = e.points.iter().filter(|p| p[2] < 1.5).count();
            let far = e.points.len() - near;
            let mine: Vec<f32> = cloud
                .points
                .iter()
                .filter(|p| p.1 == i.track_id)
                .map(|p| p.0[2])
                .collect();
            if near == far {
                continue;
            }
            if near.max(far) < 3 {
                assert!(mine.is_empty(), "track {}: too few points kept", i.track_id);
                continue;
            }
            let want = if near > far { OBJECT_M } else { WALL_M };
            if near > 0 && far > 0 {
                mixed += 1;
            }
            assert_eq!(mine.len(), near.max(far), "track {}", i.track_id);
            assert!(mine.iter().all(|z| (f64::from(*z) - want).abs() < 1e-6));
        }
    }
    assert!(
        mixed > 0,
        "no mask covered both surfaces: rejection untested"
    );
}

/// `--depth` names the pairing explicitly; `--no-depth` turns it off; a bad pairing is refused.
#[test]
fn replay_depth_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("rgbd.mcap");
    write_bag(&bag, false);
    let o = yolact_cmd()
        .arg("replay")
        .arg(&bag)
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--depth", &format!("{COLOUR}=/nope")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", support::text(&o));
    assert!(
        support::text(&o).contains("no topic /nope"),
        "{}",
        support::text(&o)
    );

    let sub = dir.path().join("off");
    let (out, report) = replay(&bag, &sub, &["--no-depth", "--topics", COLOUR]);
    assert!(report["depth"].as_object().unwrap().is_empty());
    assert!(read_ours(&out).det3.is_empty());
}
