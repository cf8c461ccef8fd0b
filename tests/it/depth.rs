//! Instances in 3D from an aligned depth image (src/depth), on scenes ray-cast here: a pinhole
//! camera, boxes and a sphere at known poses in front of a far wall, exact depth.
//!
//! What the truth is: the library averages the depth points it samples, one per depth pixel, so
//! it measures the centroid of the *visible surface as the image samples it* (pixel-weighted), not
//! the object's volume centre. The test states that truth twice, independently of the code under
//! test: analytically for a box facing the camera on the optical axis (only its front face is
//! visible, a plane parallel to the image maps pixels affinely onto itself, so the pixel mean is
//! the face's centre), and for off-axis objects as the mean of the ray-cast hit points over the
//! object's pixels in the colour image (the scene generator's own samples).

use std::process::Command;

use yolact_ros2::bag::{Header, ImageMsg, Time};
use yolact_ros2::depth::pairing::StampPairer;
use yolact_ros2::depth::{
    instance_3d, CameraModel, Depth3dOptions, DepthError, DepthImage, Instance3d, Instance3dResult,
};
use yolact_ros2::msgs::camera_info::CameraInfo;
use yolact_ros2::msgs::detection3d::{Detection3D, Detection3DArray};
use yolact_ros2::msgs::point_cloud::{self, LabelledPoint};
use yolact_ros2::msgs::schema::{self, Value};
use yolact_ros2::output::detection::Mask;

const W: u32 = 640;
const H: u32 = 480;
const WALL_Z: f64 = 3.0;

#[derive(Clone, Copy)]
enum Shape {
    /// Axis-aligned box: centre, half sizes.
    Box([f64; 3], [f64; 3]),
    Sphere([f64; 3], f64),
}

impl Shape {
    /// Ray parameter t (= z, rays have d.z = 1) of the nearest hit in front of the camera.
    fn hit(&self, d: [f64; 3]) -> Option<f64> {
        match *self {
            Shape::Box(c, h) => {
                let (mut t0, mut t1) = (0.0f64, f64::INFINITY);
                for i in 0..3 {
                    let (a, b) = ((c[i] - h[i]) / d[i], (c[i] + h[i]) / d[i]);
                    t0 = t0.max(a.min(b));
                    t1 = t1.min(a.max(b));
                }
                (t0 <= t1).then_some(t0)
            }
            Shape::Sphere(c, r) => {
                let dd: f64 = d.iter().map(|v| v * v).sum();
                let dc: f64 = d.iter().zip(c).map(|(a, b)| a * b).sum();
                let cc: f64 = c.iter().map(|v| v * v).sum();
                let disc = dc * dc - dd * (cc - r * r);
                (disc >= 0.0).then(|| (dc - disc.sqrt()) / dd)
            }
        }
    }
}

/// The nearest hit per pixel: depth (metres) and which shape (None = wall).
struct Render {
    cam: CameraModel,
    z: Vec<f64>,
    label: Vec<Option<usize>>,
}

fn render(cam: CameraModel, shapes: &[Shape]) -> Render {
    let (w, h) = (cam.width as usize, cam.height as usize);
    let mut z = vec![WALL_Z; w * h];
    let mut label = vec![None; w * h];
    for v in 0..h {
        for u in 0..w {
            let [x, y] = cam.ray(u as f64, v as f64);
            for (i, s) in shapes.iter().enumerate() {
                if let Some(t) = s.hit([x, y, 1.0]) {
                    if t < z[v * w + u] {
                        z[v * w + u] = t;
                        label[v * w + u] = Some(i);
                    }
                }
            }
        }
    }
    Render { cam, z, label }
}

impl Render {
    /// Shape `i`'s pixels, dilated by `grow` pixels (a mask a little too wide, onto the wall).
    fn mask(&self, i: usize, grow: usize) -> Mask {
        let (w, h) = (self.cam.width as usize, self.cam.height as usize);
        let mut data = vec![0u8; w * h];
        for v in 0..h {
            for u in 0..w {
                if self.label[v * w + u] != Some(i) {
                    continue;
                }
                for y in v.saturating_sub(grow)..(v + grow + 1).min(h) {
                    for x in u.saturating_sub(grow)..(u + grow + 1).min(w) {
                        data[y * w + x] = 1;
                    }
                }
            }
        }
        Mask::full(h, w, data)
    }

    /// Mean of the hit points over shape `i`'s pixels: the visible surface as pixels sample it.
    fn visible_centroid(&self, i: usize) -> [f64; 3] {
        let w = self.cam.width as usize;
        let (mut s, mut n) = ([0.0; 3], 0.0);
        for (k, l) in self.label.iter().enumerate() {
            if *l == Some(i) {
                let p = self
                    .cam
                    .back_project((k % w) as f64, (k / w) as f64, self.z[k]);
                for j in 0..3 {
                    s[j] += p[j];
                }
                n += 1.0;
            }
        }
        s.map(|v| v / n)
    }

    fn depth_msg_mm(&self) -> ImageMsg {
        let data = self
            .z
            .iter()
            .flat_map(|z| ((z * 1000.0).round() as u16).to_le_bytes())
            .collect();
        self.msg("16UC1", 2, data)
    }

    /// 32FC1 metres; `from_mm` rounds to the millimetre first, as the 16UC1 image does.
    fn depth_msg_m(&self, from_mm: bool) -> ImageMsg {
        let data = self
            .z
            .iter()
            .flat_map(|&z| {
                let m = if from_mm {
                    ((z * 1000.0).round() / 1000.0) as f32
                } else {
                    z as f32
                };
                m.to_le_bytes()
            })
            .collect();
        self.msg("32FC1", 4, data)
    }

    fn msg(&self, encoding: &str, bytes: u32, data: Vec<u8>) -> ImageMsg {
        ImageMsg {
            header: Header::default(),
            height: self.cam.height,
            width: self.cam.width,
            encoding: encoding.into(),
            is_bigendian: 0,
            step: self.cam.width * bytes,
            data,
        }
    }
}

fn colour_cam() -> CameraModel {
    CameraModel::new(W, H, 525.0, 525.0, 319.5, 239.5).unwrap()
}

fn scene() -> Vec<Shape> {
    vec![
        // On the optical axis, front face at z = 1.0: only that face is visible.
        Shape::Box([0.0, 0.0, 1.1], [0.1, 0.1, 0.1]),
        // Off axis: its -x side face is visible too.
        Shape::Box([0.4, -0.12, 1.0], [0.07, 0.06, 0.05]),
        Shape::Sphere([-0.35, 0.12, 1.0], 0.08),
    ]
}

fn locate(
    r: &Render,
    depth: &DepthImage,
    dcam: &CameraModel,
    i: usize,
    grow: usize,
    o: &Depth3dOptions,
) -> Instance3d {
    match instance_3d(&r.mask(i, grow), &r.cam, dcam, depth, o).unwrap() {
        Instance3dResult::Located(x) => x,
        other => panic!("shape {i}: {other:?}"),
    }
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn centroids_within_a_centimetre_at_one_metre() {
    let r = render(colour_cam(), &scene());
    let depth = DepthImage::from_msg(&r.depth_msg_mm(), None).unwrap();
    let o = Depth3dOptions::default();
    let front = locate(&r, &depth, &r.cam, 0, 0, &o);
    let e = dist(front.stats.centroid, [0.0, 0.0, 1.0]);
    assert!(
        e <= 0.01,
        "on-axis box: {:?} is {e} m from its face centre",
        front.stats.centroid
    );
    // The face is 0.2 x 0.2 at z = 1 (less the 2-pixel erosion, 2 * 2 / 525 m).
    let size = front.stats.aabb.size();
    assert!(
        (size[0] - 0.2).abs() < 0.01 && (size[1] - 0.2).abs() < 0.01,
        "{size:?}"
    );
    assert!(size[2] < 0.002, "a face has no depth: {size:?}");
    assert!(front.valid_fraction > 0.999);
    for i in 1..3 {
        let got = locate(&r, &depth, &r.cam, i, 0, &o);
        let truth = r.visible_centroid(i);
        let e = dist(got.stats.centroid, truth);
        assert!(
            e <= 0.01,
            "shape {i}: {:?} vs visible surface {truth:?}: {e} m",
            got.stats.centroid
        );
    }
    // The sphere's points lie on it (radius 0.08 about its centre, to the millimetre rounding).
    let sphere = locate(&r, &depth, &r.cam, 2, 0, &o);
    for p in &sphere.points {
        let d = dist(p.map(f64::from), [-0.35, 0.12, 1.0]);
        assert!((d - 0.08).abs() < 0.004, "{p:?} at {d}");
    }
}

#[test]
fn a_mask_spilling_onto_the_far_wall_keeps_the_object_box() {
    let r = render(colour_cam(), &scene());
    let depth = DepthImage::from_msg(&r.depth_msg_mm(), None).unwrap();
    // 4 pixels of wall around the object, 2 eroded: the rest must go by the depth band.
    let o = Depth3dOptions::default();
    for i in 0..3 {
        let got = locate(&r, &depth, &r.cam, i, 4, &o);
        let zmax = got.stats.aabb.max[2];
        assert!(
            zmax < 1.2,
            "shape {i}: box reaches z = {zmax} (the wall is at {WALL_Z})"
        );
        let e = dist(got.stats.centroid, r.visible_centroid(i));
        assert!(e <= 0.01, "shape {i}: centroid moved {e} m");
        assert!(got.valid_fraction > 0.999);
    }
    // Without erosion and rejection the same mask does bleed: the check above can fail.
    let off = Depth3dOptions {
        erosion_px: 0,
        outlier_k: 0.0,
        ..o
    };
    let bled = locate(&r, &depth, &r.cam, 1, 4, &off);
    assert!((bled.stats.aabb.max[2] - WALL_Z).abs() < 1e-3);
    // Rejection alone (no erosion) also holds.
    let reject_only = Depth3dOptions { erosion_px: 0, ..o };
    let got = locate(&r, &depth, &r.cam, 1, 4, &reject_only);
    assert!(got.stats.aabb.max[2] < 1.2);
}

#[test]
fn millimetres_and_metres_give_the_same_instance() {
    let r = render(colour_cam(), &scene());
    let mm = DepthImage::from_msg(&r.depth_msg_mm(), None).unwrap();
    let m = DepthImage::from_msg(&r.depth_msg_m(true), None).unwrap();
    let exact = DepthImage::from_msg(&r.depth_msg_m(false), None).unwrap();
    let o = Depth3dOptions::default();
    for i in 0..3 {
        let a = locate(&r, &mm, &r.cam, i, 1, &o);
        let b = locate(&r, &m, &r.cam, i, 1, &o);
        let c = locate(&r, &exact, &r.cam, i, 1, &o);
        assert_eq!(a.points.len(), b.points.len());
        assert!(dist(a.stats.centroid, b.stats.centroid) < 1e-6);
        assert!(dist(a.stats.centroid, c.stats.centroid) < 1e-3);
    }
    // A sensor in 0.1 mm units needs the scale: 16UC1 values x 10, scale 1e-4.
    let mut tenth = r.depth_msg_mm();
    for px in tenth.data.chunks_exact_mut(2) {
        let v = u16::from_le_bytes([px[0], px[1]]) * 10;
        px.copy_from_slice(&v.to_le_bytes());
    }
    let t = DepthImage::from_msg(&tenth, Some(1e-4)).unwrap();
    let a = locate(&r, &mm, &r.cam, 0, 1, &o);
    let b = locate(&r, &t, &r.cam, 0, 1, &o);
    assert!(dist(a.stats.centroid, b.stats.centroid) < 1e-6);
}

#[test]
fn depth_at_half_the_colour_resolution_goes_through_the_intrinsics() {
    let colour = render(colour_cam(), &scene());
    let dcam = colour_cam().scaled_to(W / 2, H / 2).unwrap();
    let low = render(dcam, &scene());
    let depth = DepthImage::from_msg(&low.depth_msg_mm(), None).unwrap();
    let o = Depth3dOptions::default();
    for i in 0..3 {
        let got = locate(&colour, &depth, &dcam, i, 2, &o);
        let e = dist(got.stats.centroid, colour.visible_centroid(i));
        assert!(e <= 0.01, "shape {i}: {e} m");
        // A quarter of the colour pixels: one point per depth pixel.
        let full = locate(
            &colour,
            &DepthImage::from_msg(&colour.depth_msg_mm(), None).unwrap(),
            &colour.cam,
            i,
            2,
            &o,
        );
        let ratio = full.points.len() as f64 / got.points.len() as f64;
        assert!((3.0..5.0).contains(&ratio), "shape {i}: {ratio}");
    }
}

#[test]
fn no_depth_under_a_mask_is_not_enough_depth_not_a_box() {
    let r = render(colour_cam(), &scene());
    let mut msg = r.depth_msg_mm();
    msg.data.iter_mut().for_each(|b| *b = 0);
    let depth = DepthImage::from_msg(&msg, None).unwrap();
    let got = instance_3d(
        &r.mask(0, 0),
        &r.cam,
        &r.cam,
        &depth,
        &Depth3dOptions::default(),
    )
    .unwrap();
    match got {
        Instance3dResult::NotEnoughDepth {
            sampled,
            valid,
            required,
            ..
        } => {
            assert!(sampled > 1000);
            assert_eq!((valid, required), (0, 20));
        }
        other => panic!("{other:?}"),
    }
    // Everything beyond max_depth: also not enough.
    let depth = DepthImage::from_msg(&r.depth_msg_mm(), None).unwrap();
    let near = Depth3dOptions {
        max_depth: 0.5,
        ..Default::default()
    };
    assert!(instance_3d(&r.mask(0, 0), &r.cam, &r.cam, &depth, &near)
        .unwrap()
        .located()
        .is_none());
}

#[test]
fn bad_camera_info_is_a_clear_error() {
    let mut info = CameraInfo::pinhole(Header::default(), W, H, 0.0, 525.0, 319.5, 239.5);
    let back = CameraInfo::from_cdr(&info.to_cdr().unwrap()).unwrap();
    assert_eq!(back, info);
    let e = back.camera_model().unwrap_err();
    assert!(matches!(e, DepthError::FocalLength { .. }));
    assert!(e.to_string().contains("fx = 0"), "{e}");
    // Right intrinsics, wrong size for the depth image.
    info.k[0] = 525.0;
    info.width = 320;
    let cam = info.camera_model().unwrap();
    let r = render(colour_cam(), &scene());
    let depth = DepthImage::from_msg(&r.depth_msg_mm(), None).unwrap();
    let e = instance_3d(
        &r.mask(0, 0),
        &r.cam,
        &cam,
        &depth,
        &Depth3dOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "depth image is 640x480 but its camera_info says 320x480"
    );
    let e = DepthImage::from_msg(
        &ImageMsg {
            encoding: "rgb8".into(),
            ..r.depth_msg_mm()
        },
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("`rgb8` is not supported"), "{e}");
    let bad = Depth3dOptions {
        min_depth: 2.0,
        max_depth: 1.0,
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn a_30_hz_depth_stream_pairs_with_the_colour_frames_the_worker_took() {
    const MS: i64 = 1_000_000;
    let mut p = StampPairer::new(5 * MS, 4, 16);
    let mut pairs = Vec::new();
    // Depth every 33 ms; the worker processed every third colour frame, stamped 2 ms later.
    for k in 0..30i64 {
        p.push_depth(k * 33 * MS, k);
        if k % 3 == 1 {
            p.push_colour(k * 33 * MS + 2 * MS, k);
        }
        pairs.extend(p.poll());
    }
    assert_eq!(pairs.len(), 10);
    assert!(pairs.iter().all(|q| q.colour == q.depth));
    let s = p.stats();
    assert_eq!(s.colour_unpaired, 0);
    // The unused depth frames go once no colour can reach them, not all at once at the end.
    assert!(s.depth_unpaired >= 18, "{s:?}");
    assert!(p.queued().1 <= 2);
}

/// Runs python3 with rosbags on our CDR; prints why and returns None when rosbags is missing
/// (fails then if YOLACT_REQUIRE_ROSBAGS is set, as CI does).
fn rosbags_decode(msgtype: &str, cdr: &[u8]) -> Option<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.cdr");
    std::fs::write(&path, cdr).unwrap();
    let vision = schema::schema_text(schema::DETECTION3D_ARRAY).unwrap();
    let script = r#"
import json, sys
try:
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
except ImportError as e:
    print(e, file=sys.stderr); sys.exit(2)
ts = get_typestore(Stores.ROS2_HUMBLE)
# vision_msgs is not in the typestore: register it from our schema's vision_msgs sections.
text = sys.argv[3]
sections = text.split('=' * 80 + '\n')
types = {}
name = 'vision_msgs/msg/Detection3DArray'
for i, sec in enumerate(sections):
    if i > 0:
        first, sec = sec.split('\n', 1)
        name = first[len('MSG: '):].replace('/', '/msg/', 1)
    if name.startswith('vision_msgs/'):
        types.update(get_types_from_msg(sec, name))
ts.register(types)
def plain(v):
    if hasattr(v, '__dataclass_fields__'):
        return {k: plain(getattr(v, k)) for k in v.__dataclass_fields__ if k != '__msgtype__'}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, 'tolist'):
        return v.tolist()
    return v
m = ts.deserialize_cdr(open(sys.argv[1], 'rb').read(), sys.argv[2])
print(json.dumps(plain(m)))
"#;
    let required = std::env::var_os("YOLACT_REQUIRE_ROSBAGS").is_some();
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(msgtype)
        .arg(&vision)
        .output();
    match o {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        Ok(o) if o.status.code() == Some(2) => {
            assert!(
                !required,
                "rosbags required: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            eprintln!(
                "NOT CHECKED with rosbags: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Ok(o) => panic!(
            "rosbags could not read our {msgtype}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            assert!(!required, "python3: {e}");
            eprintln!("NOT CHECKED with rosbags: {e}");
            None
        }
    }
}

fn header() -> Header {
    Header {
        stamp: Time { sec: 5, nanosec: 6 },
        frame_id: "camera_depth_optical_frame".into(),
    }
}

#[test]
fn detection3d_array_reads_back_with_the_schema_and_rosbags() {
    let msg = Detection3DArray {
        header: header(),
        detections: vec![Detection3D {
            id: "7".into(),
            class_name: "cup".into(),
            score: 0.75,
            centroid: [0.1, -0.2, 1.0],
            center: [0.11, -0.19, 1.02],
            orientation: [0.0, 0.0, 0.5f64.sqrt(), 0.5f64.sqrt()],
            size: [0.08, 0.1, 0.03],
        }],
    };
    let cdr = msg.to_cdr().unwrap();
    let v = schema::decode_dynamic(schema::DETECTION3D_ARRAY, &cdr).unwrap();
    let Some(Value::Array(d)) = v.get("detections") else {
        panic!("{v:?}")
    };
    let bbox = d[0].get("bbox").unwrap();
    assert_eq!(bbox.get("size").unwrap().get("y"), Some(&Value::Float(0.1)));
    assert_eq!(d[0].get("id"), Some(&Value::Str("7".into())));
    let Some(j) = rosbags_decode(schema::DETECTION3D_ARRAY, &cdr) else {
        return;
    };
    let det = &j["detections"][0];
    assert_eq!(det["id"], "7");
    assert_eq!(det["results"][0]["hypothesis"]["class_id"], "cup");
    assert_eq!(det["results"][0]["hypothesis"]["score"], 0.75);
    assert_eq!(det["results"][0]["pose"]["pose"]["position"]["z"], 1.0);
    assert_eq!(det["bbox"]["center"]["position"]["x"], 0.11);
    assert_eq!(det["bbox"]["center"]["orientation"]["w"], 0.5f64.sqrt());
    assert_eq!(det["bbox"]["size"]["z"], 0.03);
    assert_eq!(j["header"]["frame_id"], "camera_depth_optical_frame");
}

#[test]
fn point_cloud_and_camera_info_read_back_with_rosbags() {
    let pts = [
        LabelledPoint {
            xyz: [0.5, -0.25, 1.5],
            instance_id: 3,
            class_id: 41,
        },
        LabelledPoint {
            xyz: [1.0, 2.0, 3.0],
            instance_id: 4,
            class_id: 0,
        },
    ];
    let cdr = point_cloud::to_cdr(&header(), &pts).unwrap();
    let v = schema::decode_dynamic(schema::POINT_CLOUD2, &cdr).unwrap();
    assert_eq!(v.get("width"), Some(&Value::Int(2)));
    assert_eq!(v.get("row_step"), Some(&Value::Int(40)));
    let info = CameraInfo::pinhole(header(), W, H, 525.0, 526.0, 319.5, 239.5);
    let info_cdr = info.to_cdr().unwrap();
    assert!(schema::decode_dynamic(schema::CAMERA_INFO, &info_cdr).is_ok());
    let Some(j) = rosbags_decode(schema::POINT_CLOUD2, &cdr) else {
        return;
    };
    assert_eq!(j["width"], 2);
    assert_eq!(j["point_step"], 20);
    let fields: Vec<(&str, u64, u64)> = j["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["offset"].as_u64().unwrap(),
                f["datatype"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("x", 0, 7),
            ("y", 4, 7),
            ("z", 8, 7),
            ("instance_id", 12, 6),
            ("class_id", 16, 6)
        ]
    );
    // The second point's bytes, decoded by hand from rosbags' data array.
    let data: Vec<u8> = j["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let f = |o: usize| f32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    assert_eq!((f(20), f(24), f(28), u(32), u(36)), (1.0, 2.0, 3.0, 4, 0));
    assert_eq!((f(0), u(12), u(16)), (0.5, 3, 41));
    let j = rosbags_decode(schema::CAMERA_INFO, &info_cdr).unwrap();
    assert_eq!(j["k"][4], 526.0);
    assert_eq!(j["width"], 640);
    assert_eq!(j["roi"]["do_rectify"], false);
}

/// The added cost per frame at 640x480: `cargo test --release --test it depth::bench -- --ignored
/// --nocapture`. Prints median and spread (min, max) over the repetitions.
#[test]
#[ignore]
fn bench_instances_3d_640x480() {
    let cam = colour_cam();
    for n in [10usize, 50] {
        // n boxes on a grid, each about 50 x 50 pixels, at 0.8 .. 1.6 m.
        let shapes: Vec<Shape> = (0..n)
            .map(|i| {
                let (gx, gy) = ((i % 10) as f64, (i / 10) as f64);
                let z = 0.8 + 0.8 * (i as f64 / n as f64);
                Shape::Box(
                    [(-0.45 + 0.1 * gx) * z, (-0.3 + 0.12 * gy) * z, z],
                    [0.045 * z, 0.045 * z, 0.05],
                )
            })
            .collect();
        let r = render(cam, &shapes);
        let masks: Vec<Mask> = (0..n).map(|i| r.mask(i, 1)).collect();
        let msg = r.depth_msg_mm();
        let o = Depth3dOptions::default();
        let mut times = Vec::new();
        let mut located = 0;
        for _ in 0..15 {
            let t0 = std::time::Instant::now();
            let depth = DepthImage::from_msg(&msg, None).unwrap();
            located = masks
                .iter()
                .filter(|m| {
                    instance_3d(m, &cam, &cam, &depth, &o)
                        .unwrap()
                        .located()
                        .is_some()
                })
                .count();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "depth 3D, {n} instances at 640x480 ({located} located): median {:.2} ms, min {:.2}, max {:.2} (15 runs)",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
        assert_eq!(located, n);
    }
}
