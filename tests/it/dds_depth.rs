//! The node's 3D outputs over real DDS: `Node` (synthetic weights, CPU) on the `DdsTransport`,
//! fed by tools/dds_peer.py (`depth` mode, PyPI `cyclonedds`) with CameraInfo, an aligned 16UC1
//! depth image of a plane at 1.5 m and a colour image of the same stamp. The peer decodes our
//! Detection3DArray and PointCloud2 from the vision_msgs / sensor_msgs definitions (never from
//! the Rust code), and the cloud's points from its own fields.
//!
//! Checks: Detection3DArray in the depth frame with the depth stamp, ids = the InstanceArray's
//! track ids, centroids on the plane; no PointCloud2 is built while nobody subscribes, and one
//! arrives once the peer subscribes, its points on the plane and labelled with those ids; a
//! CameraInfo with a zero focal length or the wrong size is a `/diagnostics` error and the node
//! keeps running.
//!
//! Skips with a printed reason when python3 cannot import cyclonedds and rosbags; fails instead
//! when `YOLACT_REQUIRE_DDS=1` (CI).
#![cfg(feature = "dds")]

use std::time::Duration;

use crate::support::dds::{
    peer_available, peer_dds_options, run_peer, synthetic_node_params, test_domain, PeerRun,
};
use serde_json::Value;
use yolact_ros2::node::dds::DdsTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::Node;

const PLANE_M: f64 = 1.5;

fn peer(domain: u16, ns: &str, first_sec: u32, extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = [
        "depth",
        "--domain",
        &domain.to_string(),
        "--namespace",
        ns,
        "--frames",
        "2",
        "--frame-wait",
        "60",
        "--settle",
        "3",
        "--timeout",
        "150",
        "--first-sec",
        &first_sec.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let PeerRun { lines, stderr, ok } = run_peer(&refs).wait(Duration::from_secs(200));
    assert!(ok, "peer failed:\n{stderr}\n{lines:#?}");
    lines
}

fn of<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

fn stamp(h: &Value) -> (i64, i64) {
    (
        h["stamp"]["sec"].as_i64().unwrap(),
        h["stamp"]["nanosec"].as_i64().unwrap(),
    )
}

/// The track ids of the InstanceArray with stamp `s`.
fn ids_at(lines: &[Value], s: (i64, i64)) -> Vec<String> {
    of(lines, "instances")
        .iter()
        .map(|l| &l["msg"])
        .filter(|m| stamp(&m["header"]) == s)
        .flat_map(|m| m["instances"].as_array().unwrap().clone())
        .map(|i| i["track_id"].as_u64().unwrap().to_string())
        .collect()
}

/// Checks every Detection3DArray of a run; returns how many detections there were.
fn check_detections_3d(lines: &[Value]) -> usize {
    let sent: Vec<(i64, i64)> = of(lines, "sent")
        .iter()
        .map(|s| (s["sec"].as_i64().unwrap(), s["nanosec"].as_i64().unwrap()))
        .collect();
    let arrays = of(lines, "detections_3d");
    assert!(!arrays.is_empty(), "no Detection3DArray: {lines:#?}");
    let mut n = 0;
    for m in arrays.iter().map(|l| &l["msg"]) {
        assert_eq!(m["header"]["frame_id"], "cam_depth_optical");
        let s = stamp(&m["header"]);
        assert!(sent.contains(&s), "stamp {s:?} never sent");
        let ids = ids_at(lines, s);
        for d in m["detections"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_string();
            assert!(ids.contains(&id), "{id} not among {ids:?}");
            let z = d["results"][0]["pose"]["pose"]["position"]["z"]
                .as_f64()
                .unwrap();
            assert!((z - PLANE_M).abs() < 1e-6, "centroid z {z}");
            assert!(d["bbox"]["size"]["z"].as_f64().unwrap() < 1e-6);
            n += 1;
        }
    }
    n
}

fn last_depth_error(lines: &[Value]) -> Option<String> {
    of(lines, "diagnostics")
        .iter()
        .flat_map(|l| l["msg"]["status"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter(|kv| kv["key"] == "depth.last_error")
        .filter_map(|kv| kv["value"].as_str().map(String::from))
        .next_back()
}

#[test]
fn node_3d_outputs_over_dds_against_a_cyclonedds_peer() {
    if !peer_available() {
        return;
    }
    let domain = test_domain(5);
    let ns = format!("/dds_d{}", std::process::id());
    let identity = NodeIdentity {
        name: "yolact".into(),
        namespace: ns.clone(),
        domain_id: domain,
    };
    let params = synthetic_node_params(&[
        ("cameras.camera.depth_topic", "camera/depth/image_raw"),
        ("depth.min_points", "3"),
        ("depth.erosion_px", "1"),
    ]);
    let transport =
        DdsTransport::open_with(&identity, &peer_dds_options()).expect("open DDS transport");
    let node = Node::start(params, identity, Box::new(transport)).expect("node starts");

    // Nobody subscribes to the cloud: Detection3DArray only, no cloud built.
    let lines = peer(domain, &ns, 2000, &[]);
    let dets = check_detections_3d(&lines);
    assert!(dets > 0, "no instance located: nothing 3D was checked");
    let s = node.stats();
    assert!(s.cameras[0].depth.published >= 1, "{s:?}");
    assert_eq!(s.cameras[0].depth.clouds_published, 0, "{s:?}");
    assert_eq!(s.cameras[0].depth.errors, 0, "{s:?}");

    // With a cloud subscriber: the labelled points of the located instances.
    let lines = peer(domain, &ns, 3000, &["--points"]);
    check_detections_3d(&lines);
    let clouds = of(&lines, "points");
    assert!(!clouds.is_empty(), "no PointCloud2: {lines:#?}");
    let mut points = 0;
    for c in &clouds {
        assert_eq!(c["header"]["frame_id"], "cam_depth_optical");
        let names: Vec<&str> = c["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["x", "y", "z", "instance_id", "class_id"]);
        let ids = ids_at(&lines, stamp(&c["header"]));
        for p in c["points"].as_array().unwrap() {
            assert!((p["z"].as_f64().unwrap() - PLANE_M).abs() < 1e-6, "{p}");
            let id = p["instance_id"].as_u64().unwrap().to_string();
            assert!(ids.contains(&id), "{id} not among {ids:?}");
            assert!(p["class_id"].as_u64().unwrap() < 80);
            points += 1;
        }
    }
    assert!(points > 0, "empty clouds only");
    assert!(node.stats().cameras[0].depth.clouds_published >= 1);

    // Broken CameraInfo: a diagnostic naming it, no panic, the node goes on.
    for (bad, first, want) in [
        ("zero-fx", 4000, "focal length fx = 0"),
        ("wrong-size", 5000, "camera_info says 104x72"),
    ] {
        let lines = peer(domain, &ns, first, &["--bad-info", bad, "--settle", "4"]);
        let e = last_depth_error(&lines)
            .unwrap_or_else(|| panic!("{bad}: no depth.last_error on /diagnostics: {lines:#?}"));
        assert!(e.contains(want), "{bad}: {e}");
        assert!(of(&lines, "detections_3d").is_empty(), "{bad}: a 3D output");
    }
    let s = node.stats();
    assert!(s.cameras[0].depth.errors >= 2, "{s:?}");
    node.shutdown().unwrap();
}
