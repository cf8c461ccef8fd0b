//! The DDS transport against an independent DDS implementation: tools/dds_peer.py on the PyPI
//! `cyclonedds` wheel publishes `sensor_msgs/Image` on a ROS-named topic; our `DdsTransport`
//! receives the raw CDR, answers each frame with a `DiagnosticArray` describing what arrived, and
//! serves the lifecycle services the peer calls. Also: the lifecycle services answer in the
//! request/reply mapping `DdsOptions` asks for (an in-process ros2-client caller, no Python).
//!
//! The peer test skips with a printed reason when python3 cannot import cyclonedds and rosbags;
//! it fails instead when `YOLACT_REQUIRE_DDS=1` (CI).
#![cfg(feature = "dds")]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::dds::{peer_available, peer_dds_options, run_peer, test_domain, PeerRun};
use yolact_ros2::bag::{Header, ImageMsg};
use yolact_ros2::msgs::{DiagnosticArray, DiagnosticStatus};
use yolact_ros2::node::dds::DdsTransport;
use yolact_ros2::node::open::{DdsOptions, NodeIdentity, ServiceMapping};
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
    let mut transport =
        DdsTransport::open_with(&identity, &peer_dds_options()).expect("open DDS transport");
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

/// `lifecycle_msgs/srv/GetState` as ros2-client clients send and read it; written here from the
/// IDL, not taken from the transport's own mirrors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct GetStateRequest {
    structure_needs_at_least_one_member: u8,
}
impl ros2_client::Message for GetStateRequest {}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StateMsg {
    id: u8,
    label: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct GetStateResponse {
    current_state: StateMsg,
}
impl ros2_client::Message for GetStateResponse {}

/// Serves the lifecycle with `mapping` and calls `~/get_state` from a second, in-process DDS
/// participant whose client speaks `mapping` too. A client only reads replies in its own mapping,
/// so a reply shows that the option reached the servers (the peer tests cover Cyclone only).
fn get_state_in(mapping: ServiceMapping, offset: u16) -> Result<GetStateResponse, String> {
    let domain = test_domain(offset);
    let ns = format!("/dds_m{}_{}", std::process::id(), mapping.name());
    let identity = NodeIdentity {
        name: "yolact_m".into(),
        namespace: ns.clone(),
        domain_id: domain,
    };
    let options = DdsOptions {
        service_mapping: mapping,
    };
    let mut transport = DdsTransport::open_with(&identity, &options).expect("open DDS transport");
    transport
        .serve_lifecycle(Arc::new(Recorder {
            state: AtomicU8::new(2),
            last_transition: AtomicU8::new(0),
        }))
        .unwrap();

    let rmw_mapping = match mapping {
        ServiceMapping::Enhanced => ros2_client::dds::ServiceMapping::Enhanced,
        ServiceMapping::Cyclone => ros2_client::dds::ServiceMapping::Cyclone,
        ServiceMapping::Basic => ros2_client::dds::ServiceMapping::Basic,
    };
    let context = ros2_client::dds::Context::with_options(
        ros2_client::dds::ContextOptions::new().domain_id(domain),
    )
    .unwrap();
    let mut node = context
        .new_node(
            ros2_client::NodeName::new(&ns, "caller").unwrap(),
            ros2_client::NodeOptions::new()
                .enable_rosout(false)
                .start_parameter_services(false),
        )
        .unwrap();
    let qos = ros2_client::QosProfile::publisher_default()
        .history(ros2_client::qos::History::KeepLast { depth: 10 });
    let client = node
        .create_client::<GetStateRequest, GetStateResponse>(
            rmw_mapping,
            &ros2_client::Name::new(&format!("{ns}/yolact_m"), "get_state").unwrap(),
            &ros2_client::ServiceTypeName::new("lifecycle_msgs", "GetState"),
            qos.clone(),
            qos,
        )
        .unwrap();

    // Requests sent before discovery has matched the endpoints are lost (volatile), so ask
    // again until an answer to one of ours arrives.
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let id = client
            .send_request(GetStateRequest {
                structure_needs_at_least_one_member: 0,
            })
            .map_err(|e| format!("send: {e:?}"))?;
        sent.push(id);
        let wait_until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < wait_until {
            match client.receive_response() {
                Ok(Some((id, reply))) if sent.contains(&id) => return Ok(reply),
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("unreadable reply: {e:?}")),
            }
        }
    }
    Err(format!(
        "no reply in {} mapping to {} requests",
        mapping.name(),
        sent.len()
    ))
}

#[test]
fn lifecycle_services_answer_in_the_cyclone_mapping_when_asked_to() {
    let reply = get_state_in(ServiceMapping::Cyclone, 6).unwrap();
    assert_eq!(reply.current_state.label, "inactive");
    assert_eq!(reply.current_state.id, 2);
}

#[test]
fn lifecycle_services_answer_in_the_enhanced_mapping_when_asked_to() {
    let reply = get_state_in(ServiceMapping::Enhanced, 7).unwrap();
    assert_eq!(reply.current_state.label, "inactive");
    assert_eq!(reply.current_state.id, 2);
}
