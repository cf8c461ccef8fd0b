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

use std::time::Duration;

use crate::support::dds::{
    check_node_outputs, peer_available, peer_dds_options, run_peer, synthetic_node_params,
    test_domain, PeerRun,
};
use serde_json::Value;
use yolact_ros2::node::dds::DdsTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::Node;

const STEADY: u64 = 2;
const FLOOD: u64 = 30;

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
    let params = synthetic_node_params(&[]);
    let transport =
        DdsTransport::open_with(&identity, &peer_dds_options()).expect("open DDS transport");
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
    let context = format!(
        "stats {stats:?}; topics {:?}; peer stderr:\n{stderr}",
        node.topics()
    );
    check_node_outputs(&lines, STEADY, FLOOD, &context);
    let of = |k: &str| -> Vec<&Value> { lines.iter().filter(|l| l["kind"] == k).collect() };
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
