//! The node's 3D outputs over the loopback transport, on synthetic weights: colour, aligned depth
//! and CameraInfo in, Detection3DArray and PointCloud2 out, pairing and depth errors on
//! /diagnostics.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use image::RgbImage;
use yolact_ros2::bag::{Header, ImageMsg, Time};
use yolact_ros2::msgs::camera_info::CameraInfo;
use yolact_ros2::msgs::schema::{self, Value};
use yolact_ros2::msgs::{DiagnosticArray, InstanceArray};
use yolact_ros2::node::loopback::LoopbackTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::transport::{Qos, RawPublisher, Transport};
use yolact_ros2::node::{Node, NodeParams, NodeStats};

const W: u32 = 96;
const H: u32 = 72;
const PLANE_MM: u16 = 1500;

fn params() -> NodeParams {
    let o: Vec<(String, String)> = [
        ("weights", "synthetic"),
        ("config", "yolact_resnet50"),
        ("device", "cpu"),
        ("score_threshold", "0.05"),
        ("top_k", "5"),
        ("diagnostics.period", "0.2"),
        ("cameras.camera.depth_topic", "camera/depth/image_raw"),
        ("depth.min_points", "3"),
        ("depth.erosion_px", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    yolact_ros2::node::load_params(None, &o, "yolact").unwrap()
}

fn identity() -> NodeIdentity {
    NodeIdentity {
        name: "yolact".into(),
        namespace: "/".into(),
        domain_id: 0,
    }
}

fn header(ns: u32, frame: &str) -> Header {
    Header {
        stamp: Time {
            sec: 42,
            nanosec: ns,
        },
        frame_id: frame.into(),
    }
}

fn colour(ns: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(W, H, |x, y| {
        image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) * 7 % 256) as u8,
        ])
    });
    ImageMsg::from_rgb(header(ns, "cam_color_optical"), &img)
        .to_cdr(true)
        .unwrap()
}

/// A wall at 1.5 m filling the whole view, 16UC1.
fn depth(ns: u32) -> Vec<u8> {
    ImageMsg {
        header: header(ns, "cam_depth_optical"),
        height: H,
        width: W,
        encoding: "16UC1".into(),
        is_bigendian: 0,
        step: W * 2,
        data: (0..W * H).flat_map(|_| PLANE_MM.to_le_bytes()).collect(),
    }
    .to_cdr(true)
    .unwrap()
}

fn info(fx: f64) -> Vec<u8> {
    CameraInfo::pinhole(header(0, "cam_depth_optical"), W, H, fx, 80.0, 47.5, 35.5)
        .to_cdr()
        .unwrap()
}

fn listen(lb: &LoopbackTransport, topic: &str, ty: &str) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let mut t = lb.clone();
    t.subscribe(topic, ty, Qos::DEFAULT, Box::new(move |m| drop(tx.send(m))))
        .unwrap();
    rx
}

fn publisher(lb: &LoopbackTransport, topic: &str, ty: &str) -> Box<dyn RawPublisher> {
    let mut t = lb.clone();
    t.advertise(topic, ty, Qos::SENSOR_DATA).unwrap()
}

fn wait_for(node: &Node, what: &str, f: impl Fn(&NodeStats) -> bool) -> NodeStats {
    let t0 = Instant::now();
    loop {
        let s = node.stats();
        if f(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = v.get(p).unwrap_or_else(|| panic!("no {p} in {v:?}"));
    }
    match v {
        Value::Float(x) => *x,
        other => panic!("{other:?}"),
    }
}

#[test]
fn colour_depth_and_camera_info_in_detections_3d_and_points_out() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(), identity(), Box::new(lb.clone())).unwrap();
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    let det_rx = listen(
        &lb,
        "/camera/yolact/detections_3d",
        schema::DETECTION3D_ARRAY,
    );
    let pts_rx = listen(&lb, "/camera/yolact/points", schema::POINT_CLOUD2);
    let info_pub = publisher(&lb, "/camera/depth/camera_info", schema::CAMERA_INFO);
    let depth_pub = publisher(&lb, "/camera/depth/image_raw", schema::IMAGE);
    let cam = publisher(&lb, "/camera/image_raw", schema::IMAGE);
    assert_eq!(depth_pub.subscription_count(), Some(1));
    info_pub.publish(&info(80.0)).unwrap();
    // Depth 3 ms before the colour frame (within the 20 ms slop), and one 40 ms after, which
    // tells the pairer that no closer depth frame will come.
    depth_pub.publish(&depth(0)).unwrap();
    depth_pub.publish(&depth(40_000_000)).unwrap();
    cam.publish(&colour(3_000_000)).unwrap();

    let inst =
        InstanceArray::from_cdr(&inst_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert!(
        !inst.instances.is_empty(),
        "synthetic weights gave no detections"
    );
    let bytes = det_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let v = schema::decode_dynamic(schema::DETECTION3D_ARRAY, &bytes).unwrap();
    let frame = v.get("header").unwrap().get("frame_id").unwrap();
    assert_eq!(frame, &Value::Str("cam_depth_optical".into()));
    let Some(Value::Array(dets)) = v.get("detections") else {
        panic!("{v:?}")
    };
    let ids: Vec<String> = inst
        .instances
        .iter()
        .map(|i| i.track_id.to_string())
        .collect();
    for d in dets {
        let Some(Value::Str(id)) = d.get("id") else {
            panic!()
        };
        assert!(ids.contains(id), "{id} not among {ids:?}");
    }
    // Every point is on the 1.5 m wall: centroid and box centre at 1.5 m, no depth extent.
    for d in dets {
        let Some(Value::Array(res)) = d.get("results") else {
            panic!()
        };
        let centroid_z = f(&res[0], &["pose", "pose", "position", "z"]);
        assert!((centroid_z - 1.5).abs() < 1e-6, "{centroid_z}");
        let bbox = d.get("bbox").unwrap();
        assert!((f(bbox, &["center", "position", "z"]) - 1.5).abs() < 1e-6);
        let size: Vec<f64> = ["x", "y", "z"]
            .iter()
            .map(|a| f(bbox, &["size", a]))
            .collect();
        assert!(size[2] < 1e-6, "a plane's box is flat: {size:?}");
        // The instance's 2D box holds the projected centroid.
        let Some(Value::Str(id)) = d.get("id") else {
            panic!()
        };
        let i = &inst.instances[ids.iter().position(|x| x == id).unwrap()];
        let (cx, cy) = (
            f(&res[0], &["pose", "pose", "position", "x"]),
            f(&res[0], &["pose", "pose", "position", "y"]),
        );
        let (u, v) = (80.0 * cx / 1.5 + 47.5, 80.0 * cy / 1.5 + 35.5);
        assert!(
            f64::from(i.x1) - 1.0 <= u && u <= f64::from(i.x2) + 1.0,
            "{u} vs {i:?}"
        );
        assert!(
            f64::from(i.y1) - 1.0 <= v && v <= f64::from(i.y2) + 1.0,
            "{v} vs {i:?}"
        );
    }
    let cloud = schema::decode_dynamic(
        schema::POINT_CLOUD2,
        &pts_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
    )
    .unwrap();
    let Some(Value::Array(data)) = cloud.get("data") else {
        panic!()
    };
    let data: Vec<u8> = data
        .iter()
        .map(|b| match b {
            Value::Int(x) => *x as u8,
            _ => panic!(),
        })
        .collect();
    assert!(!data.is_empty() || dets.is_empty());
    for p in data.chunks_exact(20) {
        let z = f32::from_le_bytes(p[8..12].try_into().unwrap());
        let id = u32::from_le_bytes(p[12..16].try_into().unwrap());
        assert!((z - 1.5).abs() < 1e-6);
        assert!(ids.contains(&id.to_string()));
    }
    let s = wait_for(&node, "the pair counted", |s| {
        s.cameras[0].depth_pairing.paired == 1
    });
    let c = &s.cameras[0];
    assert_eq!(
        c.depth.located + c.depth.not_enough_depth,
        inst.instances.len() as u64
    );
    assert_eq!(c.depth.located, dets.len() as u64);
    assert_eq!(c.depth.errors, 0, "{:?}", c.depth.last_error);
    node.shutdown().unwrap();
}

#[test]
fn a_zero_focal_length_is_a_diagnostic_not_a_box() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(), identity(), Box::new(lb.clone())).unwrap();
    let det_rx = listen(
        &lb,
        "/camera/yolact/detections_3d",
        schema::DETECTION3D_ARRAY,
    );
    let diag_rx = listen(&lb, "/diagnostics", schema::DIAGNOSTIC_ARRAY);
    publisher(&lb, "/camera/depth/camera_info", schema::CAMERA_INFO)
        .publish(&info(0.0))
        .unwrap();
    publisher(&lb, "/camera/depth/image_raw", schema::IMAGE)
        .publish(&depth(0))
        .unwrap();
    publisher(&lb, "/camera/image_raw", schema::IMAGE)
        .publish(&colour(0))
        .unwrap();
    let s = wait_for(&node, "a depth error", |s| s.cameras[0].depth.errors > 0);
    let e = s.cameras[0].depth.last_error.clone().unwrap();
    assert!(e.contains("focal length fx = 0"), "{e}");
    assert!(
        det_rx.try_recv().is_err(),
        "no Detection3DArray from a bad CameraInfo"
    );
    let t0 = Instant::now();
    loop {
        let d = DiagnosticArray::from_cdr(&diag_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .unwrap();
        let st = &d.status[0];
        let get = |k: &str| {
            st.values
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        if get("depth.errors").is_some_and(|v| v != "0") {
            assert!(st.level >= 1, "{st:?}");
            // STALE / ERROR (no frame since, on a loaded machine) keep their own message.
            assert!(
                st.level >= 2 || st.message.contains("focal length"),
                "{st:?}"
            );
            assert_eq!(get("depth.paired").as_deref(), Some("1"));
            assert!(get("depth.last_error")
                .unwrap()
                .contains("focal length fx = 0"));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
    }
    node.shutdown().unwrap();
}

#[test]
fn a_depth_stamp_beyond_the_slop_leaves_the_colour_frame_unpaired() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(), identity(), Box::new(lb.clone())).unwrap();
    let det_rx = listen(
        &lb,
        "/camera/yolact/detections_3d",
        schema::DETECTION3D_ARRAY,
    );
    publisher(&lb, "/camera/depth/camera_info", schema::CAMERA_INFO)
        .publish(&info(80.0))
        .unwrap();
    let dp = publisher(&lb, "/camera/depth/image_raw", schema::IMAGE);
    dp.publish(&depth(0)).unwrap();
    dp.publish(&depth(100_000_000)).unwrap();
    publisher(&lb, "/camera/image_raw", schema::IMAGE)
        .publish(&colour(50_000_000))
        .unwrap();
    let s = wait_for(&node, "the colour frame unpaired", |s| {
        s.cameras[0].depth_pairing.colour_unpaired == 1
    });
    assert_eq!(s.cameras[0].depth_pairing.paired, 0);
    assert!(det_rx.try_recv().is_err());
    node.shutdown().unwrap();
}
