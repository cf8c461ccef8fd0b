//! The ROS-free node end to end over the in-process loopback transport, on synthetic weights:
//! images in, InstanceArray / Detection2DArray / label image / overlay / diagnostics /
//! transition events out.

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use yolact_ros2::bag::{CdrReader, Header, ImageMsg, Time};
use yolact_ros2::msgs::{schema, DiagnosticArray, InstanceArray};
use yolact_ros2::node::lifecycle;
use yolact_ros2::node::loopback::LoopbackTransport;
use yolact_ros2::node::open::NodeIdentity;
use yolact_ros2::node::transport::{Qos, RawPublisher, Transport};
use yolact_ros2::node::{Node, NodeParams, NodeStats};

const W: u32 = 96;
const H: u32 = 72;

fn identity() -> NodeIdentity {
    NodeIdentity {
        name: "yolact".into(),
        namespace: "/".into(),
        domain_id: 0,
    }
}

fn params(cameras: &[&str]) -> NodeParams {
    let mut o: Vec<(String, String)> = vec![
        ("weights".into(), "synthetic".into()),
        ("config".into(), "yolact_resnet50".into()),
        ("device".into(), "cpu".into()),
        ("score_threshold".into(), "0.05".into()),
        ("top_k".into(), "5".into()),
        ("diagnostics.period".into(), "0.2".into()),
    ];
    o.push(("cameras.names".into(), format!("[{}]", cameras.join(", "))));
    yolact_ros2::node::load_params(None, &o, "yolact").unwrap()
}

fn test_image(seed: u32) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        image::Rgb([
            ((x * 3 + seed * 17) % 256) as u8,
            ((y * 5 + seed * 29) % 256) as u8,
            (((x + y) * 7) % 256) as u8,
        ])
    })
}

fn header(sec: i32) -> Header {
    Header {
        stamp: Time { sec, nanosec: 7 },
        frame_id: "cam_optical".into(),
    }
}

fn image_cdr(sec: i32) -> Vec<u8> {
    ImageMsg::from_rgb(header(sec), &test_image(sec as u32))
        .to_cdr(true)
        .unwrap()
}

fn listen(lb: &LoopbackTransport, topic: &str, ty: &str) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let mut t = lb.clone();
    t.subscribe(
        topic,
        ty,
        Qos::DEFAULT,
        Box::new(move |m| {
            let _ = tx.send(m);
        }),
    )
    .unwrap();
    rx
}

fn camera_pub(lb: &LoopbackTransport, topic: &str) -> Box<dyn RawPublisher> {
    let mut t = lb.clone();
    t.advertise(topic, schema::IMAGE, Qos::SENSOR_DATA).unwrap()
}

fn wait_for(
    node: &Node,
    what: &str,
    timeout: Duration,
    f: impl Fn(&NodeStats) -> bool,
) -> NodeStats {
    let t0 = Instant::now();
    loop {
        let s = node.stats();
        if f(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out waiting for {what}: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn idle(s: &NodeStats) -> bool {
    s.cameras.iter().all(|c| !c.pending && !c.in_flight)
}

#[test]
fn one_frame_in_instance_array_out_with_header_and_boxes_in_input_pixels() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(&["camera"]), identity(), Box::new(lb.clone())).unwrap();
    assert_eq!(node.stats().state, lifecycle::STATE_ACTIVE);
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    let det_rx = listen(&lb, "/camera/yolact/detections", schema::DETECTION2D_ARRAY);
    let label_rx = listen(&lb, "/camera/yolact/label_image", schema::IMAGE);
    let cam = camera_pub(&lb, "/camera/image_raw");
    assert_eq!(cam.subscription_count(), Some(1));
    cam.publish(&image_cdr(42)).unwrap();

    let msg = inst_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    let inst = InstanceArray::from_cdr(&msg).unwrap();
    assert_eq!(inst.header, header(42));
    assert_eq!((inst.image_width, inst.image_height), (W, H));
    assert_eq!(inst.model, "yolact_resnet50");
    assert!(
        !inst.instances.is_empty(),
        "synthetic weights gave no detections at 0.05"
    );
    assert!(inst.instances.len() <= 5);
    for i in &inst.instances {
        assert!(0.0 <= i.x1 && i.x1 <= i.x2 && i.x2 <= W as f32, "{i:?}");
        assert!(0.0 <= i.y1 && i.y1 <= i.y2 && i.y2 <= H as f32, "{i:?}");
        assert!(i.mask_x + i.mask_width <= W && i.mask_y + i.mask_height <= H);
        assert_ne!(i.track_id, u32::MAX);
    }
    let det = det_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut r = CdrReader::new(&det).unwrap();
    assert_eq!(r.read_header().unwrap(), header(42));
    let label =
        ImageMsg::from_cdr(&label_rx.recv_timeout(Duration::from_secs(5)).unwrap()).unwrap();
    assert_eq!(label.header, header(42));
    assert_eq!(
        (label.width, label.height, label.encoding.as_str()),
        (W, H, "mono16")
    );
    let max_label = label
        .data
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .max()
        .unwrap();
    assert!(max_label as usize <= inst.instances.len());

    let s = wait_for(&node, "published", Duration::from_secs(10), |s| {
        s.cameras[0].published == 1
    });
    assert_eq!(s.cameras[0].received, 1);
    assert_eq!(s.cameras[0].processed, 1);
    assert_eq!(s.cameras[0].dropped, 0);
    assert_eq!(s.cameras[0].last_published_stamp_ns, Some(42_000_000_007));
    node.shutdown().unwrap();
}
