//! The DDS transport against an independent DDS implementation: tools/dds_peer.py on the PyPI
//! `cyclonedds` wheel publishes `sensor_msgs/Image` on a ROS-named topic; our `DdsTransport`
//! receives the raw CDR, answers each frame with a `DiagnosticArray` describing what arrived, and
//! serves the lifecycle services the peer calls.
//!
//! Skips with a printed reason when python3 cannot import cyclonedds and rosbags; fails instead
//! when `YOLACT_REQUIRE_DDS=1` (CI).
#![cfg(feature = "dds")]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::dds::{peer_available, run_peer, test_domain, PeerRun};
use yolact_ros2::bag::{Header, ImageMsg};
use yolact_ros2::msgs::{DiagnosticArray, DiagnosticStatus};
use yolact_ros2::node::dds::DdsTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::transport::{
    LifecycleControl, LifecycleState, LifecycleTransition, Qos, Transport,
};

/// A lifecycle that only records what it was asked.
struct Recorder {
    state: AtomicU8,
    last_transition: AtomicU8,
}

fn st(id: u8, label: &str) -> LifecycleState {
    LifecycleState {
        id,
        label: label.into(),
    }
}

impl LifecycleControl for Recorder {
    fn current_state(&self) -> LifecycleState {
        match self.state.load(Ordering::SeqCst) {
            3 => st(3, "active"),
            _ => st(2, "inactive"),
        }
    }
    fn change_state(&self, transition_id: u8, label: &str) -> bool {
        self.last_transition.store(transition_id, Ordering::SeqCst);
        if transition_id == 3 && label == "activate" {
            self.state.store(3, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
    fn available_states(&self) -> Vec<LifecycleState> {
        vec![st(2, "inactive"), st(3, "active")]
    }
    fn available_transitions(&self) -> Vec<LifecycleTransition> {
        vec![LifecycleTransition {
            id: 3,
            label: "activate".into(),
            start: st(2, "inactive"),
            goal: st(3, "active"),
        }]
    }
    fn transition_graph(&self) -> Vec<LifecycleTransition> {
        self.available_transitions()
    }
}

/// What the peer writes into frame `i`, computed here independently of the bytes we received.
fn expected_pixels(i: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|x| ((x * 7 + i * 13) % 256) as u8)
        .collect()
}

#[test]
fn images_in_diagnostics_out_and_lifecycle_services_against_cyclonedds() {
    if !peer_available() {
        return;
    }
    let domain = test_domain(1);
    let pid = std::process::id();
    let ns = format!("/dds_t{pid}");
    let identity = NodeIdentity {
        name: "yolact_t".into(),
        namespace: ns.clone(),
        domain_id: domain,
    };
    // The Python peer speaks rmw_cyclonedds' request/reply mapping. This test binary has one
    // test, so nothing else reads the environment concurrently.
    std::env::set_var("YOLACT_DDS_SERVICE_MAPPING", "cyclone");
    let mut transport = DdsTransport::open(&identity).expect("open DDS transport");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    transport
        .subscribe(
            &format!("{ns}/camera/image_raw"),
            "sensor_msgs/msg/Image",
            Qos::DEFAULT,
            Box::new(move |cdr| {
                let _ = tx.send(cdr);
            }),
        )
        .unwrap();
    let diag = transport
        .advertise(
            &format!("{ns}/diagnostics"),
            "diagnostic_msgs/msg/DiagnosticArray",
            Qos::DEFAULT,
        )
        .unwrap();
    assert_eq!(diag.subscription_count(), Some(0));
    let recorder = Arc::new(Recorder {
        state: AtomicU8::new(2),
        last_transition: AtomicU8::new(0),
    });
    transport
        .serve_lifecycle(recorder.clone() as Arc<dyn LifecycleControl>)
        .unwrap();

    let frames = 3u64;
    let peer = run_peer(&[
        "transport",
        "--domain",
        &domain.to_string(),
        "--namespace",
        &ns,
        "--node-name",
        "yolact_t",
        "--frames",
        &frames.to_string(),
        "--lifecycle",
        "--transition-id",
        "3",
        "--transition-label",
        "activate",
        "--timeout",
        "40",
    ]);

    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut max_matched = 0;
    while (received.len() as u64) < frames && Instant::now() < deadline {
        if let Some(n) = diag.subscription_count() {
            max_matched = max_matched.max(n);
        }
        let Ok(cdr) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let img = ImageMsg::from_cdr(&cdr).expect("an Image the codec reads");
        let status = DiagnosticStatus {
            level: 0,
            name: "echo".into(),
            message: img.encoding.clone(),
            hardware_id: String::new(),
            values: vec![
                ("width".into(), img.width.to_string()),
                ("height".into(), img.height.to_string()),
                ("step".into(), img.step.to_string()),
                ("bytes".into(), img.data.len().to_string()),
            ],
        };
        // Only frames whose pixels are exactly what the peer wrote are echoed.
        let i = u64::from(img.header.stamp.sec as u32) - 1000;
        assert_eq!(img.data, expected_pixels(i, img.data.len()), "frame {i}");
        let out = DiagnosticArray {
            header: Header {
                stamp: img.header.stamp,
                frame_id: img.header.frame_id.clone(),
            },
            status: vec![status],
        };
        diag.publish(&out.to_cdr().unwrap()).unwrap();
        received.push(img);
    }
    let PeerRun { lines, stderr, ok } = peer.wait(Duration::from_secs(90));
    assert!(ok, "peer failed:\n{stderr}\n{lines:#?}");
    assert_eq!(
        received.len() as u64,
        frames,
        "images received; peer:\n{stderr}"
    );
    assert!(
        max_matched >= 1,
        "the peer's reader never matched our writer"
    );
    for (i, img) in received.iter().enumerate() {
        assert_eq!(img.header.frame_id, format!("cam_{i}"));
        assert_eq!(img.header.stamp.sec, 1000 + i as i32);
        assert_eq!(img.header.stamp.nanosec, 500_000_000 + i as u32);
        assert_eq!((img.width, img.height, img.step), (96, 72, 96 * 3));
        assert_eq!(img.encoding, "rgb8");
    }

    // What the peer decoded (with cyclonedds, from the rosbags definitions) is what we sent.
    let diags: Vec<_> = lines
        .iter()
        .filter(|l| l["kind"] == "diagnostics")
        .collect();
    assert_eq!(diags.len() as u64, frames, "{lines:#?}");
    for (i, d) in diags.iter().enumerate() {
        let m = &d["msg"];
        assert_eq!(m["header"]["frame_id"], format!("cam_{i}"));
        assert_eq!(m["header"]["stamp"]["sec"], 1000 + i as i64);
        assert_eq!(m["header"]["stamp"]["nanosec"], 500_000_000 + i as i64);
        let s = &m["status"][0];
        assert_eq!(s["name"], "echo");
        assert_eq!(s["message"], "rgb8");
        assert_eq!(s["values"][0]["key"], "width");
        assert_eq!(s["values"][0]["value"], "96");
        assert_eq!(s["values"][3]["value"], (96 * 72 * 3).to_string());
    }

    // Lifecycle services, called the way rmw_cyclonedds clients call them.
    let find = |k: &str| {
        lines
            .iter()
            .find(|l| l["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in {lines:#?}"))
            .clone()
    };
    let get = find("get_state");
    assert_eq!(get["reply"]["current_state"]["label"], "inactive", "{get}");
    assert_eq!(get["reply"]["current_state"]["id"], 2);
    let avail = find("get_available_transitions");
    let t = &avail["reply"]["available_transitions"][0];
    assert_eq!(t["transition"]["label"], "activate", "{avail}");
    assert_eq!(t["goal_state"]["id"], 3);
    let change = find("change_state");
    assert_eq!(change["reply"]["success"], true, "{change}");
    assert_eq!(recorder.last_transition.load(Ordering::SeqCst), 3);
    assert_eq!(recorder.current_state().label, "active");
}
