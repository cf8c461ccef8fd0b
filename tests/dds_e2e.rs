//! The node end to end over real DDS: `Node` (synthetic yolact_resnet50 weights, CPU) on the
//! `DdsTransport`, fed and read by tools/dds_peer.py on the PyPI `cyclonedds` wheel, which
//! decodes our outputs from the repository's msg/*.msg (and the rosbags standard definitions).
//!
//! Checks: headers preserved, boxes in input pixels (96x72, not the 550x550 network input),
//! Detection2DArray consistent with the instances, drops counted on /diagnostics under a flood,
//! the newest flood frame is the one processed (bounded latency), and `change_state` over the
//! lifecycle service.
//!
//! Skips with a printed reason when python3 cannot import cyclonedds and rosbags; fails instead
//! when `YOLACT_REQUIRE_DDS=1` (CI).
#![cfg(feature = "dds")]

mod dds_common;

use std::time::Duration;

use dds_common::{peer_available, run_peer, test_domain, PeerRun};
use serde_json::Value;
use yolact_ros2::node::dds::DdsTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::{load_params, Node};

const W: f64 = 96.0;
const H: f64 = 72.0;
const STEADY: u64 = 2;
const FLOOD: u64 = 30;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn node_over_dds_against_a_cyclonedds_peer() {
    if !peer_available() {
        return;
    }
    let domain = test_domain(2);
    let ns = format!("/dds_e{}", std::process::id());
    let identity = NodeIdentity {
        name: "yolact".into(),
        namespace: ns.clone(),
        domain_id: domain,
    };
    let overrides: Vec<(String, String)> = [
        ("weights", "synthetic"),
        ("config", "yolact_resnet50"),
        ("device", "cpu"),
        ("score_threshold", "0.05"),
        ("top_k", "5"),
        ("diagnostics.period", "0.5"),
        ("publish.overlay", "false"),
        ("publish.label_image", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let params = load_params(None, &overrides, "yolact").unwrap();
    // rmw_cyclonedds' request/reply mapping, which the Python peer speaks. One test per binary,
    // so nothing reads the environment concurrently.
    std::env::set_var("YOLACT_DDS_SERVICE_MAPPING", "cyclone");
    let transport = DdsTransport::open(&identity).expect("open DDS transport");
    let node = Node::start(params, identity, Box::new(transport)).expect("node starts");

    let peer = run_peer(&[
        "node",
        "--domain",
        &domain.to_string(),
        "--namespace",
        &ns,
        "--node-name",
        "yolact",
        "--frames",
        &STEADY.to_string(),
        "--flood",
        &FLOOD.to_string(),
        "--frame-wait",
        "30",
        "--settle",
        "20",
        "--lifecycle",
        "--transition-id",
        "4",
        "--transition-label",
        "deactivate",
        "--timeout",
        "150",
    ]);
    let PeerRun { lines, stderr, ok } = peer.wait(Duration::from_secs(200));
    let stats = node.stats();
    assert!(ok, "peer failed:\n{stderr}\n{lines:#?}");
    let of = |k: &str| -> Vec<&Value> { lines.iter().filter(|l| l["kind"] == k).collect() };
    let sent: Vec<(String, i64, i64)> = of("sent")
        .iter()
        .map(|s| {
            (
                s["frame_id"].as_str().unwrap().to_string(),
                s["sec"].as_i64().unwrap(),
                s["nanosec"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sent.len() as u64, STEADY + FLOOD);
    let instances = of("instances");
    let detections = of("detections");
    assert!(
        instances.len() as u64 >= STEADY,
        "{} InstanceArrays; stats {stats:?}; topics {:?}; peer stderr:\n{stderr}",
        instances.len(),
        node.topics()
    );
    // Fewer results than frames: the flood was thinned, not queued.
    assert!(
        (instances.len() as u64) < STEADY + FLOOD,
        "{}",
        instances.len()
    );

    let mut boxes = 0;
    for m in instances.iter().map(|l| &l["msg"]) {
        let h = &m["header"];
        let key = (
            h["frame_id"].as_str().unwrap().to_string(),
            h["stamp"]["sec"].as_i64().unwrap(),
            h["stamp"]["nanosec"].as_i64().unwrap(),
        );
        assert!(sent.contains(&key), "header {key:?} was never sent");
        assert_eq!((num(&m["image_width"]), num(&m["image_height"])), (W, H));
        assert_eq!(m["model"], "yolact_resnet50");
        for inst in m["instances"].as_array().unwrap() {
            let (x1, y1, x2, y2) = (
                num(&inst["x1"]),
                num(&inst["y1"]),
                num(&inst["x2"]),
                num(&inst["y2"]),
            );
            assert!(0.0 <= x1 && x1 <= x2 && x2 <= W, "x {x1}..{x2}");
            assert!(0.0 <= y1 && y1 <= y2 && y2 <= H, "y {y1}..{y2}");
            assert!(num(&inst["mask_x"]) + num(&inst["mask_width"]) <= W);
            assert!(num(&inst["mask_y"]) + num(&inst["mask_height"]) <= H);
            assert!(inst["score"].as_f64().unwrap() >= 0.05);
            boxes += 1;
        }
    }
    assert!(
        boxes > 0,
        "no instance in any frame; nothing about boxes was checked"
    );

    // Detection2DArray: one per InstanceArray, same header, same boxes as centre/size.
    for d in detections.iter().map(|l| &l["msg"]) {
        let twin = instances
            .iter()
            .map(|l| &l["msg"])
            .find(|m| m["header"] == d["header"])
            .unwrap_or_else(|| panic!("Detection2DArray without InstanceArray: {}", d["header"]));
        let dets = d["detections"].as_array().unwrap();
        let insts = twin["instances"].as_array().unwrap();
        assert_eq!(dets.len(), insts.len());
        for (det, inst) in dets.iter().zip(insts) {
            let b = &det["bbox"];
            let cx = num(&b["center"]["position"]["x"]);
            let cy = num(&b["center"]["position"]["y"]);
            let x1 = num(&inst["x1"]);
            let x2 = num(&inst["x2"]);
            let y1 = num(&inst["y1"]);
            let y2 = num(&inst["y2"]);
            assert!((cx - (x1 + x2) / 2.0).abs() < 1e-3 && (cy - (y1 + y2) / 2.0).abs() < 1e-3);
            assert!((num(&b["size_x"]) - (x2 - x1)).abs() < 1e-3);
            assert!((num(&b["size_y"]) - (y2 - y1)).abs() < 1e-3);
            assert_eq!(det["header"], d["header"]);
        }
    }
    assert!(!detections.is_empty());

    // The newest flood frame is processed: latency stays bounded however fast frames come.
    let last = sent.last().unwrap();
    assert!(
        instances
            .iter()
            .any(|l| l["msg"]["header"]["frame_id"] == last.0.as_str()),
        "the last frame {last:?} never came out; stats {stats:?}"
    );

    // /diagnostics counted the drops.
    let dropped = of("diagnostics")
        .iter()
        .flat_map(|l| l["msg"]["status"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter(|kv| kv["key"] == "dropped")
        .filter_map(|kv| kv["value"].as_str().and_then(|v| v.parse::<u64>().ok()))
        .max();
    let dropped = dropped.unwrap_or_else(|| panic!("no `dropped` on /diagnostics: {lines:#?}"));
    assert!(
        dropped >= FLOOD / 2,
        "dropped {dropped} of a {FLOOD}-frame flood"
    );

    // Lifecycle over DDS: deactivate through ~/change_state.
    let change = of("change_state");
    assert_eq!(change.len(), 1, "{lines:#?}");
    assert_eq!(change[0]["reply"]["success"], true, "{:?}", change[0]);
    let get = &of("get_state")[0]["reply"]["current_state"];
    assert_eq!(get["label"], "active", "state before the transition: {get}");
    assert_eq!(
        stats.state, 2,
        "node not inactive after deactivate: {stats:?}"
    );
    node.shutdown().unwrap();
}
