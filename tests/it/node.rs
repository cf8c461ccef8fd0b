//! The ROS-free node end to end over the in-process loopback transport, on synthetic weights:
//! images in, InstanceArray / Detection2DArray / label image / overlay / diagnostics /
//! transition events out.

use crate::support::yolact_cmd;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use image::RgbImage;
use yolact_ros2::bag::{CdrReader, Header, ImageMsg, Time};
use yolact_ros2::msgs::{schema, DiagnosticArray, InstanceArray};
use yolact_ros2::node::lifecycle;
use yolact_ros2::node::loopback::LoopbackTransport;
use yolact_ros2::node::open::{NodeIdentity, SERVICE_MAPPING_ENV};
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
    header_for(sec, "cam_optical")
}

fn header_for(sec: i32, frame: &str) -> Header {
    Header {
        stamp: Time { sec, nanosec: 7 },
        frame_id: frame.into(),
    }
}

fn image_cdr(sec: i32) -> Vec<u8> {
    ImageMsg::from_rgb(header(sec), &test_image(sec as u32))
        .to_cdr(true)
        .unwrap()
}

fn image_cdr_for(sec: i32, frame: &str) -> Vec<u8> {
    ImageMsg::from_rgb(header_for(sec, frame), &test_image(sec as u32))
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

#[test]
fn a_flood_while_one_frame_is_processed_is_dropped_down_to_the_newest() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(&["camera"]), identity(), Box::new(lb.clone())).unwrap();
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    let cam = camera_pub(&lb, "/camera/image_raw");
    cam.publish(&image_cdr(1)).unwrap();
    wait_for(
        &node,
        "the first frame in flight",
        Duration::from_secs(30),
        |s| s.cameras[0].in_flight,
    );
    for sec in 2..=21 {
        cam.publish(&image_cdr(sec)).unwrap();
    }
    let s = wait_for(&node, "idle", Duration::from_secs(120), |s| {
        idle(s) && s.cameras[0].processed == 2
    });
    let c = &s.cameras[0];
    assert_eq!(c.received, 21);
    assert_eq!(c.dropped, 19, "{c:?}");
    assert!(c.published <= c.received);
    assert_eq!(c.published, 2);
    assert_eq!(c.last_published_stamp_ns, Some(21_000_000_007));
    let stamps: Vec<i32> = inst_rx
        .try_iter()
        .map(|m| InstanceArray::from_cdr(&m).unwrap().header.stamp.sec)
        .collect();
    assert_eq!(stamps, vec![1, 21]);
    // Latency is bounded by about two inferences, not by the 20 queued frames.
    assert!(c.last_latency.unwrap() < Duration::from_secs(60));
    node.shutdown().unwrap();
}

#[test]
fn frames_of_two_cameras_pending_together_share_one_forward_pass() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(&["left", "right"]), identity(), Box::new(lb.clone())).unwrap();
    let left_rx = listen(&lb, "/left/yolact/instances", schema::INSTANCE_ARRAY);
    let right_rx = listen(&lb, "/right/yolact/instances", schema::INSTANCE_ARRAY);
    let left = camera_pub(&lb, "/left/image_raw");
    let right = camera_pub(&lb, "/right/image_raw");
    left.publish(&image_cdr_for(1, "left")).unwrap();
    wait_for(&node, "left in flight", Duration::from_secs(30), |s| {
        s.camera("left").unwrap().in_flight
    });
    left.publish(&image_cdr_for(2, "left")).unwrap();
    right.publish(&image_cdr_for(3, "right")).unwrap();
    let s = wait_for(&node, "both processed", Duration::from_secs(120), |s| {
        idle(s) && s.camera("right").unwrap().processed == 1
    });
    assert_eq!(s.forward_passes, 2, "{s:#?}");
    assert_eq!(s.batch_sizes.get(&2), Some(&1), "{s:#?}");
    assert_eq!(s.batch_sizes.get(&1), Some(&1), "{s:#?}");
    assert_eq!(s.camera("right").unwrap().last_batch_size, 2);
    assert_eq!(s.camera("left").unwrap().batches, 2);
    let l: Vec<Header> = left_rx
        .try_iter()
        .map(|m| InstanceArray::from_cdr(&m).unwrap().header)
        .collect();
    let r: Vec<Header> = right_rx
        .try_iter()
        .map(|m| InstanceArray::from_cdr(&m).unwrap().header)
        .collect();
    assert_eq!(l, vec![header_for(1, "left"), header_for(2, "left")]);
    assert_eq!(r, vec![header_for(3, "right")]);
    node.shutdown().unwrap();
}

#[test]
fn batched_inference_equals_single_image_inference() {
    use yolact_ros2::engine::{Engine, InferOptions};
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
    let sd = yolact_ros2::weights::synth::synth_state_dict(&cfg, 3).unwrap();
    let engine = Engine::from_state_dict(sd, cfg, &candle_core::Device::Cpu).unwrap();
    let opts = InferOptions {
        score_threshold: 0.05,
        top_k: 5,
        ..InferOptions::default()
    };
    let a = test_image(1);
    let b = RgbImage::from_fn(64, 80, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 3) as u8, 90])
    });
    let batch = engine.infer_batch(&[a.clone(), b.clone()], &opts).unwrap();
    assert_eq!(batch.len(), 2);
    for (img, (got, _)) in [a, b].iter().zip(&batch) {
        let want = engine.infer(img, &opts).unwrap();
        assert_eq!((got.width, got.height), (want.width, want.height));
        assert_eq!(got.items.len(), want.items.len());
        assert!(!want.items.is_empty());
        for (g, w) in got.items.iter().zip(&want.items) {
            assert_eq!(g.class_id, w.class_id);
            assert!(
                (g.score - w.score).abs() < 1e-4,
                "{} vs {}",
                g.score,
                w.score
            );
            for k in 0..4 {
                assert!(
                    (g.bbox[k] - w.bbox[k]).abs() < 1e-2,
                    "{:?} vs {:?}",
                    g.bbox,
                    w.bbox
                );
            }
            let (gm, wm) = (g.mask.to_full(), w.mask.to_full());
            let differ = gm.iter().zip(&wm).filter(|(x, y)| x != y).count();
            assert!(differ * 1000 <= gm.len(), "{differ} mask pixels differ");
        }
    }
    assert!(engine.infer_batch(&[], &opts).unwrap().is_empty());
}

/// (transition id, start state, goal state) of each TransitionEvent.
fn events(rx: &Receiver<Vec<u8>>) -> Vec<(u8, u8, u8)> {
    rx.try_iter()
        .map(|m| {
            let mut r = CdrReader::new(&m).unwrap();
            let _stamp = r.read_u64().unwrap();
            let id = r.read_u8().unwrap();
            let _label = r.read_string().unwrap();
            let start = r.read_u8().unwrap();
            let start_label = r.read_string().unwrap();
            assert_eq!(start_label, lifecycle::state_label(start));
            let goal = r.read_u8().unwrap();
            let _ = r.read_string().unwrap();
            (id, start, goal)
        })
        .collect()
}

#[test]
fn lifecycle_configure_activate_deactivate_cleanup_shutdown() {
    let lb = LoopbackTransport::new();
    let ev_rx = listen(
        &lb,
        "/yolact/transition_event",
        lifecycle::TRANSITION_EVENT_TYPE,
    );
    let mut p = params(&["camera"]);
    p.autostart = false;
    let node = Node::start(p, identity(), Box::new(lb.clone())).unwrap();
    let lc = node.lifecycle();
    // The transport got the same control for its services.
    assert_eq!(lb.lifecycle().unwrap().current_state(), lc.current_state());
    assert_eq!(lc.current_state().id, 1);
    assert_eq!(lc.current_state().label, "unconfigured");
    let cam = camera_pub(&lb, "/camera/image_raw");
    assert_eq!(cam.subscription_count(), Some(0));
    assert!(!lc.change_state(3, ""), "activate from unconfigured");
    assert!(!lc.change_state(0, "deactivate"));
    assert!(!lc.change_state(42, ""));

    assert!(lc.change_state(1, ""));
    assert_eq!(lc.current_state().label, "inactive");
    let s = node.stats();
    assert!(s.host_weights_loaded && s.engine_loaded);
    assert_eq!(
        cam.subscription_count(),
        Some(0),
        "inactive: not subscribed"
    );

    assert!(lc.change_state(0, "activate"));
    assert_eq!(lc.current_state().label, "active");
    assert_eq!(cam.subscription_count(), Some(1));
    let labels: Vec<String> = lc
        .available_transitions()
        .into_iter()
        .map(|t| t.label)
        .collect();
    assert_eq!(labels, vec!["deactivate", "shutdown"]);
    assert!(!lc.change_state(2, ""), "cleanup from active");

    assert!(lc.change_state(4, ""));
    assert_eq!(lc.current_state().label, "inactive");
    assert_eq!(cam.subscription_count(), Some(0));
    let s = node.stats();
    assert!(
        s.host_weights_loaded && !s.engine_loaded,
        "deactivate drops the engine only"
    );

    assert!(lc.change_state(3, ""));
    assert!(node.stats().engine_loaded);
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    cam.publish(&image_cdr(5)).unwrap();
    let inst =
        InstanceArray::from_cdr(&inst_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert_eq!(inst.header, header(5));
    assert!(lc.change_state(4, ""));
    assert!(lc.change_state(2, ""));
    assert_eq!(lc.current_state().label, "unconfigured");
    let s = node.stats();
    assert!(!s.host_weights_loaded && !s.engine_loaded);
    assert!(lc.change_state(0, "shutdown"));
    assert_eq!(lc.current_state().id, 4);
    assert_eq!(lc.current_state().label, "finalized");
    assert!(!lc.change_state(1, ""));

    let ev = events(&ev_rx);
    assert_eq!(
        ev,
        vec![
            (1, 1, 10),
            (10, 10, 2),
            (3, 2, 13),
            (30, 13, 3),
            (4, 3, 14),
            (40, 14, 2),
            (3, 2, 13),
            (30, 13, 3),
            (4, 3, 14),
            (40, 14, 2),
            (2, 2, 11),
            (20, 11, 1),
            (5, 1, 12),
            (50, 12, 4),
        ]
    );
    node.shutdown().unwrap();
}

#[test]
fn bad_encodings_are_reported_on_diagnostics_and_good_frames_still_flow() {
    let lb = LoopbackTransport::new();
    let mut p = params(&["camera", "packed"]);
    p.cameras[1].transport = yolact_ros2::node::params::InputTransport::Compressed;
    let node = Node::start(p, identity(), Box::new(lb.clone())).unwrap();
    let diag_rx = listen(&lb, "/diagnostics", schema::DIAGNOSTIC_ARRAY);
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    let packed_rx = listen(&lb, "/packed/yolact/instances", schema::INSTANCE_ARRAY);
    let cam = camera_pub(&lb, "/camera/image_raw");
    let mut bad = ImageMsg::from_rgb(header(1), &test_image(1));
    bad.encoding = "yuv422".into();
    for _ in 0..3 {
        cam.publish(&bad.to_cdr(true).unwrap()).unwrap();
        wait_for(&node, "bad frame taken", Duration::from_secs(30), idle);
    }
    cam.publish(&[0, 1, 0, 0, 9]).unwrap(); // truncated CDR
    wait_for(&node, "corrupt frame taken", Duration::from_secs(30), idle);
    cam.publish(&image_cdr(2)).unwrap();
    let inst =
        InstanceArray::from_cdr(&inst_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert_eq!(inst.header, header(2));

    // A PNG on the compressed camera (`<topic>/compressed`).
    let mut png = Vec::new();
    test_image(4)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let packed = {
        let mut t = lb.clone();
        t.advertise(
            "/packed/image_raw/compressed",
            schema::COMPRESSED_IMAGE,
            Qos::SENSOR_DATA,
        )
        .unwrap()
    };
    let msg = yolact_ros2::bag::CompressedImageMsg {
        header: header(4),
        format: "png".into(),
        data: png,
    };
    packed.publish(&msg.to_cdr(true).unwrap()).unwrap();
    let inst = InstanceArray::from_cdr(&packed_rx.recv_timeout(Duration::from_secs(120)).unwrap())
        .unwrap();
    assert_eq!(inst.header, header(4));
    assert_eq!((inst.image_width, inst.image_height), (W, H));

    let s = node.stats();
    let c = s.camera("camera").unwrap();
    assert_eq!(c.decode_errors, 4);
    assert_eq!(c.decode_reasons.get("encoding:yuv422"), Some(&3));
    assert_eq!(c.decode_reasons.get("cdr"), Some(&1));
    assert_eq!(c.processed, 1);

    // Within a few periods a /diagnostics message names the encoding for that camera.
    let t0 = Instant::now();
    let mut saw_warn = false;
    let status = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no diagnostics naming yuv422"
        );
        let Ok(m) = diag_rx.recv_timeout(Duration::from_secs(2)) else {
            continue;
        };
        let d = DiagnosticArray::from_cdr(&m).unwrap();
        assert_eq!(d.status.len(), 2);
        let st = d
            .status
            .into_iter()
            .find(|s| s.name.ends_with("camera camera"))
            .unwrap();
        saw_warn |= st.level == 1 && st.message.contains("yuv422");
        let names_it = st
            .values
            .iter()
            .any(|(k, v)| k == "decode_errors.encoding:yuv422" && v.contains("yuv422"));
        let after_good_frame = st.values.iter().any(|(k, v)| k == "processed" && v == "1");
        if names_it && after_good_frame {
            break st;
        }
    };
    assert!(saw_warn, "no WARN status whose message names yuv422");
    let value = |k: &str| {
        status
            .values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value("decode_errors").as_deref(), Some("4"));
    assert_eq!(value("device").as_deref(), Some("cpu"));
    assert_eq!(value("model").as_deref(), Some("yolact_resnet50"));
    assert!(value("latency_p95_ms").is_some());
    assert!(
        value("stability.run.frames").is_some(),
        "{:?}",
        status.values
    );
    node.shutdown().unwrap();
}

#[test]
fn the_overlay_is_drawn_only_while_subscribed() {
    let lb = LoopbackTransport::new();
    let node = Node::start(params(&["camera"]), identity(), Box::new(lb.clone())).unwrap();
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    let cam = camera_pub(&lb, "/camera/image_raw");
    cam.publish(&image_cdr(1)).unwrap();
    inst_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    let s = wait_for(&node, "published", Duration::from_secs(10), |s| {
        s.cameras[0].published == 1
    });
    assert_eq!(s.cameras[0].overlays_published, 0);
    let overlay_rx = listen(&lb, "/camera/yolact/overlay", schema::IMAGE);
    cam.publish(&image_cdr(2)).unwrap();
    let ov =
        ImageMsg::from_cdr(&overlay_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert_eq!(ov.header, header(2));
    assert_eq!((ov.width, ov.height, ov.encoding.as_str()), (W, H, "rgb8"));
    let s = wait_for(&node, "published", Duration::from_secs(10), |s| {
        s.cameras[0].published == 2
    });
    assert_eq!(s.cameras[0].overlays_published, 1);
    node.shutdown().unwrap();
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn params_file_errors_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let f = write(dir.path(), "p.yaml", text);
        yolact_ros2::node::load_params(Some(&f), &[], "yolact")
    };
    let e = load("yolact:\n  ros__parameters:\n    weights: w.pth\n    scor_threshold: 0.3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`scor_threshold`: unknown parameter"), "{e}");
    let e = load("/**:\n  ros__parameters:\n    weights: w.pth\n    top_k: many\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`top_k`: expected an int, got string \"many\""),
        "{e}"
    );
    let e = load("/**:\n  ros__parameters:\n    weights: w.pth\n    classes: [person, dragon]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown class \"dragon\"") && e.contains("teddy bear"),
        "{e}"
    );
    let e = load("/**:\n  ros__parameters:\n    weights: w.pth\n    qos:\n      output:\n        reliability: sometimes\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`qos.output.reliability`: \"sometimes\" is not one of: reliable, best_effort"),
        "{e}"
    );
    let e = load("/**:\n  ros__parameters:\n    weights: w.pth\n    diagnostics:\n      warn:\n        max_drop_ratio: 1.5\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`diagnostics.warn.max_drop_ratio`: 1.5 is out of range"),
        "{e}"
    );
    let e = load("- just a list\n").unwrap_err().to_string();
    assert!(e.contains("p.yaml"), "{e}");
    // A section for another node does not apply: this node keeps the default weights.
    let p = load("other_node:\n  ros__parameters:\n    weights: w.pth\n").unwrap();
    assert_eq!(p.weights, yolact_ros2::weights::shipped::SHIPPED_NAME);
}

#[test]
fn shipped_config_loads_and_lists_every_parameter() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("config/yolact.yaml");
    let p = yolact_ros2::node::load_params(Some(&path), &[], "/robot/yolact").unwrap();
    let defaults = NodeParams::with_weights(&p.weights).unwrap();
    // The file states the defaults, so it loads to exactly what no file gives.
    assert_eq!(p, defaults);
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/ros.md")).unwrap();
    let table = yolact_ros2::node::params::render::markdown_table();
    assert!(
        docs.contains(&table),
        "docs/ros.md's parameter table differs from the parameter table; it should read:\n{table}"
    );
    for param in yolact_ros2::node::params::PARAMETERS {
        let leaf = param.name.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{leaf}:")),
            "{} missing from config/yolact.yaml",
            param.name
        );
        assert!(
            docs.contains(&format!("`{}`", param.name)),
            "{} missing from docs/ros.md",
            param.name
        );
    }
    // Both are written from the one parameter table.
    let rendered = yolact_ros2::node::params::render::params_file();
    assert!(
        text == rendered,
        "config/yolact.yaml is not what the parameter table gives; rewrite it with \
         `cargo run --release -- node --print-params-file > config/yolact.yaml`"
    );
}

#[test]
fn cli_rejects_an_unknown_dds_service_mapping() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |mapping: &str| {
        yolact_cmd()
            .args([
                "node",
                "--dry-run",
                "--params-file",
                "config/yolact.yaml",
                "-p",
                "weights:=synthetic",
            ])
            .current_dir(root)
            .env("RUST_LOG", "warn")
            .env_remove("ROS_DOMAIN_ID")
            .env(SERVICE_MAPPING_ENV, mapping)
            .output()
            .unwrap()
    };
    let o = run("zenoh");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(SERVICE_MAPPING_ENV) && err.contains("`zenoh`") && err.contains("cyclone"),
        "{err}"
    );
    // A known name in another case is accepted.
    let o = run("Cyclone");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn cli_dry_run_validates_the_shipped_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let yolact = |args: &[&str]| {
        yolact_cmd()
            .args(args)
            .current_dir(root)
            .env("RUST_LOG", "warn")
            .env_remove("ROS_DOMAIN_ID")
            .output()
            .unwrap()
    };
    let o = yolact(&[
        "node",
        "--dry-run",
        "--params-file",
        "config/yolact.yaml",
        "-p",
        "weights:=synthetic",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("/camera/image_raw") && out.contains("best_effort, volatile, keep_last(1)"),
        "{out}"
    );
    assert!(out.contains("/camera/yolact/instances"), "{out}");

    // What ros2 launch appends: renamed node, namespace, remap, params.
    let o = yolact(&[
        "node",
        "--dry-run",
        "--params-file",
        "config/yolact.yaml",
        "--ros-args",
        "-r",
        "__node:=seg",
        "-r",
        "__ns:=/robot",
        "-r",
        "camera/image_raw:=/front/image",
        "-p",
        "weights:=synthetic",
        "-p",
        "use_sim_time:=True",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("node /robot/seg"), "{out}");
    assert!(out.contains("/front/image"), "{out}");
    assert!(out.contains("/robot/camera/yolact/instances"), "{out}");
    assert!(out.contains("/robot/seg/transition_event"), "{out}");

    let o = yolact(&[
        "node",
        "--dry-run",
        "--params-file",
        "config/yolact.yaml",
        "-p",
        "weights:=synthetic",
        "-p",
        "top_kk:=3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`top_kk`: unknown parameter"), "{err}");

    // No transport in a default build: a clear error, exit 2.
    if yolact_ros2::node::open::default_kind().is_none() {
        let o = yolact(&[
            "node",
            "--params-file",
            "config/yolact.yaml",
            "-p",
            "weights:=synthetic",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--features ros") && err.contains("--features dds"),
            "{err}"
        );
    }
}

#[test]
fn a_failing_configure_is_refused_and_leaves_the_node_unconfigured() {
    let lb = LoopbackTransport::new();
    let mut p = params(&["camera"]);
    p.weights = "/nonexistent/yolact.pth".into();
    let e = match Node::start(p.clone(), identity(), Box::new(lb.clone())) {
        Ok(_) => panic!("autostart with a missing checkpoint started"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("configure failed") && e.contains("does not exist"),
        "{e}"
    );

    let lb = LoopbackTransport::new();
    p.autostart = false;
    let node = Node::start(p, identity(), Box::new(lb.clone())).unwrap();
    let lc = node.lifecycle();
    assert!(!lc.change_state(1, "configure"));
    assert_eq!(lc.current_state().label, "unconfigured");
    assert!(!node.stats().host_weights_loaded);
    // Nothing was advertised but the transition events.
    let advertised: Vec<String> = lb.advertised().into_keys().collect();
    assert_eq!(advertised, vec!["/yolact/transition_event".to_string()]);
    node.shutdown().unwrap();
}

#[test]
fn node_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Node>();
    check::<LoopbackTransport>();
}

#[test]
fn the_class_allow_list_keeps_only_the_named_classes() {
    use yolact_ros2::engine::Engine;
    let p0 = params(&["camera"]);
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
    let sd = yolact_ros2::weights::synth::synth_state_dict(
        &cfg,
        yolact_ros2::weights::synth::DEFAULT_SEED,
    )
    .unwrap();
    let engine = Engine::from_state_dict(sd, cfg, &candle_core::Device::Cpu).unwrap();
    let all = engine.infer(&test_image(9), &p0.infer_options()).unwrap();
    let keep = all.items.last().expect("no detections").class_id;
    let name = yolact_ros2::output::labels::class_name(keep);
    let want: Vec<[f32; 4]> = all
        .items
        .iter()
        .filter(|d| d.class_id == keep)
        .map(|d| d.bbox)
        .collect();

    let mut p = p0;
    p.classes = vec![name.clone()];
    let lb = LoopbackTransport::new();
    let node = Node::start(p, identity(), Box::new(lb.clone())).unwrap();
    let inst_rx = listen(&lb, "/camera/yolact/instances", schema::INSTANCE_ARRAY);
    camera_pub(&lb, "/camera/image_raw")
        .publish(&image_cdr(9))
        .unwrap();
    let inst =
        InstanceArray::from_cdr(&inst_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert_eq!(inst.instances.len(), want.len());
    for (i, b) in inst.instances.iter().zip(&want) {
        assert_eq!(i.class_name, name);
        let got = [i.x1, i.y1, i.x2, i.y2];
        assert!(
            got.iter().zip(b).all(|(g, w)| (g - w).abs() < 1e-3),
            "{got:?} vs {b:?}"
        );
    }
    node.shutdown().unwrap();
}

#[test]
fn fp16_on_the_cpu_is_a_clear_configure_error() {
    let lb = LoopbackTransport::new();
    let mut p = params(&["camera"]);
    p.device = "cpu".into();
    p.fp16 = true;
    let e = match Node::start(p, identity(), Box::new(lb)) {
        Ok(_) => panic!("fp16 on the CPU started"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("fp16") && e.contains("CUDA"), "{e}");
}

#[test]
fn a_truncated_jpeg_is_a_counted_decode_error_and_the_whole_one_is_processed() {
    let lb = LoopbackTransport::new();
    let mut p = params(&["packed"]);
    p.cameras[0].transport = yolact_ros2::node::params::InputTransport::Compressed;
    let node = Node::start(p, identity(), Box::new(lb.clone())).unwrap();
    let diag_rx = listen(&lb, "/diagnostics", schema::DIAGNOSTIC_ARRAY);
    let inst_rx = listen(&lb, "/packed/yolact/instances", schema::INSTANCE_ARRAY);
    let packed = {
        let mut t = lb.clone();
        t.advertise(
            "/packed/image_raw/compressed",
            schema::COMPRESSED_IMAGE,
            Qos::SENSOR_DATA,
        )
        .unwrap()
    };
    let mut jpeg = Vec::new();
    test_image(5)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let msg = |sec: i32, data: Vec<u8>| {
        yolact_ros2::bag::CompressedImageMsg {
            header: header(sec),
            format: "jpeg".into(),
            data,
        }
        .to_cdr(true)
        .unwrap()
    };
    // The image crate alone decodes this cut file "successfully", grey below the cut.
    let cut = jpeg[..jpeg.len() * 2 / 3].to_vec();
    assert!(image::load_from_memory_with_format(&cut, image::ImageFormat::Jpeg).is_ok());
    packed.publish(&msg(5, cut)).unwrap();
    wait_for(
        &node,
        "truncated frame taken",
        Duration::from_secs(30),
        idle,
    );
    packed.publish(&msg(6, jpeg)).unwrap();
    let inst =
        InstanceArray::from_cdr(&inst_rx.recv_timeout(Duration::from_secs(120)).unwrap()).unwrap();
    assert_eq!(
        inst.header,
        header(6),
        "the truncated frame was not published"
    );

    // The count is updated just after the publish.
    let s = wait_for(&node, "processed counted", Duration::from_secs(30), |s| {
        s.camera("packed").is_some_and(|c| c.processed == 1)
    });
    let c = s.camera("packed").unwrap();
    assert_eq!((c.decode_errors, c.processed), (1, 1));
    assert_eq!(c.decode_reasons.get("image"), Some(&1));
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no diagnostics counting the truncated JPEG"
        );
        let Ok(m) = diag_rx.recv_timeout(Duration::from_secs(2)) else {
            continue;
        };
        let d = DiagnosticArray::from_cdr(&m).unwrap();
        let st = &d.status[0];
        let has = |k: &str, want: &str| st.values.iter().any(|(n, v)| n == k && v == want);
        if has("processed", "1") {
            assert!(has("decode_errors", "1"), "{:?}", st.values);
            let why = st
                .values
                .iter()
                .find(|(n, _)| n == "decode_errors.image")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            assert!(why.contains("truncated JPEG"), "{:?}", st.values);
            break;
        }
    }
    node.shutdown().unwrap();
}
