//! `yolact replay` end to end on the fixture bags (tests/fixtures/bags, written by rosbags):
//! every good frame has an output message with the input's header and log time, bad frames are
//! counted with their reasons, and the output MCAP reads back with our reader and with rosbags
//! (tools/read_replay_bag.py, decoding our types from msg/*.msg).

use crate::support::yolact_cmd;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;

use serde_json::Value as Json;
use yolact_ros2::bag::open_bag;
use yolact_ros2::msgs::schema::{self, Value};
use yolact_ros2::msgs::{DiagnosticArray, InstanceArray};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bags() -> PathBuf {
    root().join("tests/fixtures/bags")
}

/// Runs the replay, which must complete with status 3: every fixture bag holds frames that are
/// skipped by design (unknown encoding, 0x0 image, a String topic), and a run that skipped data
/// says so (docs/replay.md, "Exit status"). Returns (output bag, report.json).
fn run_replay(bag: &Path, extra: &[&str], threshold: &str, dir: &Path) -> (PathBuf, Json) {
    run_replay_code(bag, extra, threshold, dir, 3)
}

/// `yolact replay BAG` on synthetic YOLACT R50 weights on the CPU.
fn replay_cmd(bag: &Path) -> Command {
    let mut c = yolact_cmd();
    c.arg("replay").arg(bag).args([
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
    ]);
    c
}

/// Runs the replay, which must exit with `code`; returns (output bag, report.json).
fn run_replay_code(
    bag: &Path,
    extra: &[&str],
    threshold: &str,
    dir: &Path,
    code: i32,
) -> (PathBuf, Json) {
    let out = dir.join("out.mcap");
    let rep = dir.join("report");
    let o = replay_cmd(bag)
        .args(["--score-threshold", threshold])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&rep)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run yolact");
    assert_eq!(
        o.status.code(),
        Some(code),
        "yolact replay: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // stderr is a pipe here: the progress bar must stay hidden.
    assert!(
        !o.stderr.contains(&0x1b),
        "escape codes on a non-terminal stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(rep.join("report.md").is_file());
    let json = std::fs::read_to_string(rep.join("report.json")).unwrap();
    (out, serde_json::from_str(&json).unwrap())
}

/// Fixture messages on `topics`, in bag order, from expected.json.
fn expected(topics: &[&str]) -> Vec<Json> {
    let text = std::fs::read_to_string(bags().join("expected.json")).unwrap();
    let all: Json = serde_json::from_str(&text).unwrap();
    all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| topics.contains(&m["topic"].as_str().unwrap()))
        .cloned()
        .collect()
}

fn reason_of(kind: &str) -> &'static str {
    match kind {
        "type" => "unsupported_type",
        "encoding" => "encoding",
        "size" => "image",
        other => panic!("unknown fixture error kind {other}"),
    }
}

/// Sum of the runs of a COCO compressed RLE string, decoded independently of src/output/rle.rs.
fn rle_total(s: &str) -> i64 {
    support::rle_counts(s).iter().sum()
}

/// What our own reader finds in the output bag.
pub(crate) struct OurRead {
    /// (topic, log time, message) for instance topics.
    pub(crate) instances: Vec<(String, u64, InstanceArray)>,
    pub(crate) detections: Vec<(String, u64, Value)>,
    pub(crate) diagnostics: Option<DiagnosticArray>,
    pub(crate) last_topic: String,
}

pub(crate) fn read_ours(out: &Path) -> OurRead {
    let reader = open_bag(out).unwrap();
    let mut r = OurRead {
        instances: vec![],
        detections: vec![],
        diagnostics: None,
        last_topic: String::new(),
    };
    for m in reader.messages(None) {
        let m = m.unwrap();
        r.last_topic = m.topic.clone();
        match m.msg_type.as_str() {
            schema::INSTANCE_ARRAY => r.instances.push((
                m.topic.clone(),
                m.log_time_ns,
                InstanceArray::from_cdr(&m.data).unwrap(),
            )),
            schema::DETECTION2D_ARRAY => r.detections.push((
                m.topic.clone(),
                m.log_time_ns,
                schema::decode_dynamic(&m.msg_type, &m.data).unwrap(),
            )),
            schema::DIAGNOSTIC_ARRAY => {
                r.diagnostics = Some(DiagnosticArray::from_cdr(&m.data).unwrap())
            }
            _ => {}
        }
    }
    r
}

/// Checks outputs against the fixture: one InstanceArray + Detection2DArray per good frame with
/// the input's header and log time; the bad ones in the report with the right reasons.
fn check_against_fixture(topics: &[&str], report: &Json, ours: &OurRead) {
    let exp = expected(topics);
    let good: Vec<&Json> = exp.iter().filter(|m| m.get("error").is_none()).collect();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for m in exp.iter().filter(|m| m.get("error").is_some()) {
        *reasons
            .entry(reason_of(m["error"].as_str().unwrap()).into())
            .or_default() += 1;
    }
    assert_eq!(report["messages"], exp.len() as u64);
    assert_eq!(report["frames"], good.len() as u64);
    let got_reasons: BTreeMap<String, u64> =
        serde_json::from_value(report["skipped_by_reason"].clone()).unwrap();
    assert_eq!(got_reasons, reasons);
    assert_eq!(
        report["skipped"].as_array().unwrap().len(),
        exp.len() - good.len()
    );

    assert_eq!(ours.instances.len(), good.len());
    assert_eq!(ours.detections.len(), good.len());
    for (e, (topic, t, inst)) in good.iter().zip(&ours.instances) {
        assert_eq!(
            topic,
            &format!("{}/yolact/instances", e["topic"].as_str().unwrap())
        );
        assert_eq!(*t, e["log_time_ns"].as_u64().unwrap());
        assert_eq!(
            i64::from(inst.header.stamp.sec),
            e["stamp_sec"].as_i64().unwrap()
        );
        assert_eq!(
            u64::from(inst.header.stamp.nanosec),
            e["stamp_nanosec"].as_u64().unwrap()
        );
        assert_eq!(inst.header.frame_id, e["frame_id"].as_str().unwrap());
        assert_eq!(u64::from(inst.image_width), e["width"].as_u64().unwrap());
        assert_eq!(u64::from(inst.image_height), e["height"].as_u64().unwrap());
        assert_eq!(inst.model, "yolact_resnet50");
        for i in &inst.instances {
            assert!(i.score >= 0.0 && i.x1 <= i.x2 && i.y1 <= i.y2);
            assert!(i.mask_x + i.mask_width <= inst.image_width);
            assert!(i.mask_y + i.mask_height <= inst.image_height);
            assert_eq!(
                rle_total(&i.mask_rle),
                i64::from(i.mask_width) * i64::from(i.mask_height),
                "RLE of the window"
            );
        }
    }
    for ((_, ti, inst), (topic, td, det)) in ours.instances.iter().zip(&ours.detections) {
        assert!(topic.ends_with("/yolact/detections"));
        assert_eq!(ti, td);
        let Some(Value::Array(d)) = det.get("detections") else {
            panic!("no detections field")
        };
        assert_eq!(d.len(), inst.instances.len());
    }
    assert_eq!(ours.last_topic, "/diagnostics");
    let diag = ours.diagnostics.as_ref().expect("a /diagnostics message");
    let run = &diag.status[0];
    let frames = run.values.iter().find(|(k, _)| k == "frames").unwrap();
    assert_eq!(frames.1, good.len().to_string());
    for t in report["topics"].as_object().unwrap().keys() {
        assert!(diag.status.iter().any(|s| s.name.ends_with(t.as_str())));
    }
}

/// Reads the bag with rosbags; compares with our reader. Prints why when rosbags is missing, and
/// fails then if `YOLACT_REQUIRE_ROSBAGS` is set (CI sets it after installing rosbags).
pub(crate) fn check_with_rosbags(out: &Path, ours: &OurRead) {
    let required = std::env::var_os("YOLACT_REQUIRE_ROSBAGS").is_some();
    let o = match Command::new("python3")
        .arg(root().join("tools/read_replay_bag.py"))
        .arg(out)
        .arg(root().join("msg"))
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(
                !required,
                "rosbags check required but python3 cannot run: {e}"
            );
            eprintln!("NOT CHECKED with rosbags: cannot run python3: {e}");
            return;
        }
    };
    if o.status.code() == Some(2) {
        assert!(
            !required,
            "rosbags check required but unavailable: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!(
            "NOT CHECKED with rosbags: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    assert!(
        o.status.success(),
        "read_replay_bag.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    let msgs = j["messages"].as_array().unwrap();
    let inst: Vec<&Json> = msgs
        .iter()
        .filter(|m| m["msgtype"] == "yolact_ros2_msgs/msg/InstanceArray")
        .collect();
    assert_eq!(inst.len(), ours.instances.len());
    for (p, (topic, t, m)) in inst.iter().zip(&ours.instances) {
        assert_eq!(p["topic"].as_str().unwrap(), topic);
        assert_eq!(p["log_time_ns"].as_u64().unwrap(), *t);
        let pm = &p["msg"];
        assert_eq!(
            pm["header"]["frame_id"].as_str().unwrap(),
            m.header.frame_id
        );
        assert_eq!(
            pm["header"]["stamp"]["sec"].as_i64().unwrap(),
            i64::from(m.header.stamp.sec)
        );
        let pi = pm["instances"].as_array().unwrap();
        assert_eq!(pi.len(), m.instances.len());
        for (a, b) in pi.iter().zip(&m.instances) {
            assert_eq!(a["class_id"].as_u64().unwrap(), u64::from(b.class_id));
            assert_eq!(a["class_name"].as_str().unwrap(), b.class_name);
            assert_eq!(a["track_id"].as_u64().unwrap(), u64::from(b.track_id));
            assert_eq!(a["mask_width"].as_u64().unwrap(), u64::from(b.mask_width));
            assert_eq!(a["mask_rle"].as_str().unwrap(), b.mask_rle);
            assert_eq!(a["x2"].as_f64().unwrap() as f32, b.x2);
            assert!(a["mask_iou"].is_null() == b.mask_iou.is_nan());
        }
    }
    let dets = msgs
        .iter()
        .filter(|m| m["msgtype"] == "vision_msgs/msg/Detection2DArray")
        .count();
    assert_eq!(dets, ours.detections.len());
    let last = msgs.last().unwrap();
    assert_eq!(last["msgtype"], "diagnostic_msgs/msg/DiagnosticArray");
}

#[test]
fn replay_mcap_bag_all_image_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = run_replay(
        &bags().join("bag_mcap"),
        &["--copy-inputs"],
        "0.3",
        dir.path(),
    );
    let topics = ["/cam/image_raw", "/cam/image_raw/compressed"];
    let ours = read_ours(&out);
    check_against_fixture(&topics, &report, &ours);
    let lat = &report["latency_ms"];
    for stage in ["decode", "backbone", "total"] {
        assert!(lat[stage]["p50"].as_f64().unwrap() > 0.0, "{stage}");
        assert!(lat[stage]["p50"].as_f64() <= lat[stage]["p99"].as_f64());
    }
    assert_eq!(report["topics"]["/cam/image_raw"]["frames"], 6);
    assert_eq!(report["topics"]["/cam/image_raw"]["skipped"], 2);
    assert!(report["topics"]["/cam/image_raw"]["stability"]["run"].is_object());
    // --copy-inputs copies the processed frames only.
    let copied = open_bag(&out)
        .unwrap()
        .messages(None)
        .filter(|m| m.as_ref().unwrap().topic == "/cam/image_raw")
        .count();
    assert_eq!(copied, 6);
    check_with_rosbags(&out, &ours);
    assert_eq!(report["interrupted"], false);
    check_plots(&dir.path().join("report"));
}

/// Distinct colours in a rectangle of the image.
fn colours(img: &image::RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    let mut set = std::collections::BTreeSet::new();
    for y in y0..y1 {
        for x in x0..x1 {
            set.insert(img.get_pixel(x, y).0);
        }
    }
    set.len()
}

/// Distinct non-grey colours (the lines; background, grid and text are grey or black) in the
/// plot area of panel `k` of `panels`, without the legend on the right.
fn line_colours(img: &image::RgbImage, panels: u32, k: u32) -> usize {
    let (w, h) = img.dimensions();
    let ph = h / panels;
    let mut set = std::collections::BTreeSet::new();
    for y in k * ph + 32..(k + 1) * ph - 36 {
        for x in 82..w - 242 {
            let p = img.get_pixel(x, y).0;
            if !(p[0] == p[1] && p[1] == p[2]) {
                set.insert(p);
            }
        }
    }
    set.len()
}

/// latency.png and stability.png decode, have the documented sizes, and hold coloured lines in
/// their plot areas: latency has the total and the stages; the instances-per-frame panel of
/// stability.png (defined from the first frame on, unlike mask stability) has both topics.
fn check_plots(dir: &Path) {
    let open = |name: &str| {
        image::open(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .to_rgb8()
    };
    let lat = open("latency.png");
    assert_eq!(lat.dimensions(), (1000, 560));
    let n = line_colours(&lat, 1, 0);
    assert!(n >= 5, "latency.png: {n} line colours");
    assert!(colours(&lat, 0, 0, 1000, 560) >= 8);
    let stab = open("stability.png");
    assert_eq!(stab.dimensions(), (1000, 840));
    let n = line_colours(&stab, 3, 2);
    assert!(n >= 2, "stability.png instances panel: {n} line colours");
}

fn run_fail(args: &[&str], bag: &Path) -> String {
    let o = replay_cmd(bag).args(args).output().expect("run yolact");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `--topics` naming a topic the bag lacks fails and lists the bag's image topics; a bag without
/// image topics fails and lists what it has.
#[test]
fn replay_refuses_missing_topics() {
    let err = run_fail(
        &["--topics", "/cam/image_raw,/nope"],
        &bags().join("bag_mcap"),
    );
    assert!(err.contains("/nope"), "{err}");
    assert!(
        err.contains("image topics: /cam/image_raw, /cam/image_raw/compressed"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bag = dir.path().join("diag_only.mcap");
    let mut w = yolact_ros2::replay::BagWriter::create(&bag).unwrap();
    let diag = DiagnosticArray {
        header: Default::default(),
        status: vec![],
    };
    w.write(
        "/diagnostics",
        schema::DIAGNOSTIC_ARRAY,
        5,
        &diag.to_cdr().unwrap(),
    )
    .unwrap();
    w.finish().unwrap();
    let err = run_fail(&[], &bag);
    assert!(err.contains("no Image or CompressedImage topic"), "{err}");
    assert!(
        err.contains("/diagnostics (diagnostic_msgs/msg/DiagnosticArray)"),
        "{err}"
    );
}

/// sqlite3 storage, an explicit topic list including a non-image topic, and a low threshold so
/// that instances exist and their fields go through both readers.
#[test]
fn replay_sqlite_bag_explicit_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = run_replay(
        &bags().join("bag_sqlite3"),
        &["--topics", "/cam/image_raw/compressed,/chatter"],
        "0.05",
        dir.path(),
    );
    let topics = ["/cam/image_raw/compressed", "/chatter"];
    let ours = read_ours(&out);
    check_against_fixture(&topics, &report, &ours);
    assert!(ours
        .instances
        .iter()
        .any(|(_, _, m)| !m.instances.is_empty()));
    let per_class: u64 = report["detections_per_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_class, report["detections_total"].as_u64().unwrap());
    check_with_rosbags(&out, &ours);
}

/// A file cut off mid-chunk: the read error is recorded, the run still ends with a valid bag;
/// no frame was segmented, so the exit status is 1.
#[test]
fn replay_truncated_mcap_records_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = run_replay_code(
        &bags().join("truncated.mcap"),
        &["--topics", "/chatter"],
        "0.3",
        dir.path(),
        1,
    );
    assert_eq!(report["read_errors"].as_array().unwrap().len(), 1);
    assert_eq!(report["frames"], 0);
    assert_eq!(report["skipped_by_reason"]["unsupported_type"], 1);
    let ours = read_ours(&out);
    assert_eq!(ours.last_topic, "/diagnostics");
    let d = ours.diagnostics.as_ref().unwrap();
    assert_eq!(d.status[0].level, 1);
    check_with_rosbags(&out, &ours);
}

/// Inputs the fuzz targets found (docs/replay.md, "Fuzzing"): an MCAP whose channel metadata
/// declares a 3.4 GB string, and a db3 whose row names an unknown topic id before a malformed
/// page. The replay must end with a status of its own (0; 3 when data was skipped; 1 when
/// nothing was segmented), never a panic or a signal.
#[test]
fn replay_survives_fuzz_findings() {
    for name in [
        "fuzz_mcap_huge_string.mcap",
        "fuzz_sqlite_unknown_topic.db3",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = yolact_cmd()
            .arg("replay")
            .arg(bags().join(name))
            .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
            .args(["--device", "cpu", "--score-threshold", "0.3"])
            .arg("--out")
            .arg(dir.path().join("out.mcap"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(0 | 1 | 3)),
            "{name}: {:?}\n{err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}
