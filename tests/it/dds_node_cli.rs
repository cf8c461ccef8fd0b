//! `yolact node --transport dds` as a process, as a robot runs it: params file plus `-p`
//! overrides, `--ros-args -r __ns:=...`, `ROS_DOMAIN_ID`, against tools/dds_peer.py on the PyPI
//! `cyclonedds` wheel. The same output checks as tests/it/dds_e2e.rs (which runs the node in
//! process), plus the lifecycle state seen from outside after `deactivate`.
//!
//! Skips with a printed reason when python3 cannot import cyclonedds and rosbags; fails instead
//! when `YOLACT_REQUIRE_DDS=1` (CI).
#![cfg(feature = "dds")]

use crate::support::yolact_cmd;
use std::process::Stdio;
use std::time::Duration;

use crate::support::dds::{check_node_outputs, peer_available, run_peer, test_domain, PeerRun};

const STEADY: u64 = 2;
const FLOOD: u64 = 20;

/// Kills the node when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn yolact_node_binary_over_dds() {
    if !peer_available() {
        return;
    }
    let domain = test_domain(3);
    let ns = format!("/dds_c{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("params.yaml");
    std::fs::write(
        &params,
        "/**:\n  ros__parameters:\n    weights: \"synthetic\"\n    config: \"yolact_resnet50\"\n    \
         device: \"cpu\"\n    top_k: 5\n    publish:\n      overlay: false\n      label_image: false\n",
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let node = yolact_cmd()
        .arg("node")
        .arg("--transport")
        .arg("dds")
        .arg("--params-file")
        .arg(&params)
        .args([
            "-p",
            "score_threshold:=0.05",
            "-p",
            "diagnostics.period:=0.5",
        ])
        .args(["--ros-args", "-r", &format!("__ns:={ns}")])
        .env("ROS_DOMAIN_ID", domain.to_string())
        .env("YOLACT_DDS_SERVICE_MAPPING", "cyclone")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start yolact node");
    let mut node = KillOnDrop(node);

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
        "40",
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
    let still_running = node.0.try_wait().ok().flatten().is_none();
    let node_log = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!("peer stderr:\n{stderr}\nnode log:\n{node_log}");
    assert!(still_running, "the node exited early; {context}");
    assert!(ok, "peer failed; {context}\n{lines:#?}");
    check_node_outputs(&lines, STEADY, FLOOD, &context);

    let of =
        |k: &str| -> Vec<&serde_json::Value> { lines.iter().filter(|l| l["kind"] == k).collect() };
    assert_eq!(of("change_state")[0]["reply"]["success"], true, "{context}");
    assert_eq!(
        of("get_state")[0]["reply"]["current_state"]["label"],
        "active"
    );
    let after = &of("get_state_after")[0]["reply"]["current_state"];
    assert_eq!(after["label"], "inactive", "{after}");
    assert_eq!(after["id"], 2);
}
