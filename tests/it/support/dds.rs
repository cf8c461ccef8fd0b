//! Shared by the DDS tests: finding and running tools/dds_peer.py.
#![allow(dead_code)]

use std::io::Read;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::repo;
use yolact_ros2::node::open::{DdsOptions, ServiceMapping};

/// The node's parameters as the DDS tests run it: synthetic weights on the CPU, a low threshold so
/// random weights still detect, fast diagnostics, no images published; then `extra`.
pub fn synthetic_node_params(extra: &[(&str, &str)]) -> yolact_ros2::node::params::NodeParams {
    let shared = [
        ("weights", "synthetic"),
        ("config", "yolact_resnet50"),
        ("device", "cpu"),
        ("score_threshold", "0.05"),
        ("top_k", "5"),
        ("diagnostics.period", "0.5"),
        ("publish.overlay", "false"),
        ("publish.label_image", "false"),
    ];
    let overrides: Vec<(String, String)> = shared
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    yolact_ros2::node::load_params(None, &overrides, "yolact").unwrap()
}

/// How the DDS tests open `DdsTransport`: the Python peer speaks rmw_cyclonedds' request/reply
/// mapping.
pub fn peer_dds_options() -> DdsOptions {
    DdsOptions {
        service_mapping: ServiceMapping::Cyclone,
    }
}

/// Whether python3 can import the peer's packages. When it cannot: prints why and returns false,
/// or panics when `YOLACT_REQUIRE_DDS=1`.
pub fn peer_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cyclonedds, rosbags"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let why = "python3 cannot import cyclonedds and rosbags \
               (pip install cyclonedds==11.0.1 rosbags==0.11.9)";
    if std::env::var("YOLACT_REQUIRE_DDS").is_ok_and(|v| v == "1") {
        panic!("{why} (YOLACT_REQUIRE_DDS=1)");
    }
    eprintln!("SKIPPED: {why}; set YOLACT_REQUIRE_DDS=1 to make this a failure");
    false
}

/// A DDS domain of its own per test process (and per `offset`), so parallel test binaries and
/// other users of the machine do not see each other's topics. Domains above 200 would run out of
/// UDP ports (7400 + 250 * domain).
pub fn test_domain(offset: u16) -> u16 {
    if let Ok(d) = std::env::var("YOLACT_TEST_DDS_DOMAIN") {
        if let Ok(d) = d.parse() {
            return d;
        }
    }
    20 + ((std::process::id() as u16).wrapping_add(offset * 37)) % 160
}

pub struct Peer {
    child: Child,
    // Drained while the peer runs, so a chatty peer never blocks on a full pipe.
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

pub struct PeerRun {
    /// The peer's JSON lines.
    pub lines: Vec<serde_json::Value>,
    pub stderr: String,
    pub ok: bool,
}

pub fn run_peer(args: &[&str]) -> Peer {
    let mut child = Command::new("python3")
        .arg(repo().join("tools/dds_peer.py"))
        .args(args)
        .arg("--msg-dir")
        .arg(repo().join("msg"))
        // Unicast discovery even where multicast works (the peer switches by itself where not).
        .args(
            std::env::var("YOLACT_DDS_PEER_UNICAST")
                .is_ok_and(|v| v == "1")
                .then_some("--unicast"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3 tools/dds_peer.py");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    Peer {
        child,
        stdout,
        stderr,
    }
}

impl Peer {
    /// Waits for the peer to exit (killing it after `timeout`) and parses its output.
    pub fn wait(mut self, timeout: Duration) -> PeerRun {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll peer") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                timed_out = true;
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = self.stdout.join().unwrap_or_default();
        let mut err = self.stderr.join().unwrap_or_default();
        if timed_out {
            err.push_str("\n[peer killed after the timeout]");
        }
        let lines = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        PeerRun {
            lines,
            stderr: err,
            ok: !timed_out && status.is_some_and(|s| s.success()),
        }
    }
}

const W: f64 = 96.0;
const H: f64 = 72.0;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The output checks shared by the in-process and the `yolact node` runs: `lines` is the peer's
/// output after `steady` paced frames and a `flood`; `context` goes into failure messages.
pub fn check_node_outputs(lines: &[Value], steady: u64, flood: u64, context: &str) {
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
    assert_eq!(sent.len() as u64, steady + flood);
    let instances = of("instances");
    let detections = of("detections");
    assert!(
        instances.len() as u64 >= steady,
        "{} InstanceArrays; {context}",
        instances.len()
    );
    // Fewer results than frames: the flood was thinned, not queued.
    assert!(
        (instances.len() as u64) < steady + flood,
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
        "the last frame {last:?} never came out; {context}"
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
        dropped >= flood / 2,
        "dropped {dropped} of a {flood}-frame flood"
    );
}
