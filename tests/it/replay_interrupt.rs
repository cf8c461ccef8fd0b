//! Signals during `yolact replay`: SIGINT, SIGTERM and SIGHUP stop the run between frames, the
//! output MCAP is finished with its final /diagnostics message, the report says so, and the exit
//! status is 130. After a SIGKILL the output is left as OUT.partial with every flushed frame;
//! `yolact bag-recover` makes it a complete file and `--resume` finishes the run with every frame
//! exactly once.

use crate::support::yolact_cmd;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use yolact_ros2::bag::open_bag;
use yolact_ros2::msgs::schema;
use yolact_ros2::msgs::{DiagnosticArray, InstanceArray};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bag() -> PathBuf {
    root().join("tests/fixtures/bags/bag_mcap")
}

/// Log times of the fixture bag's good image frames (expected.json: messages with pixels).
fn good_frames() -> Vec<(String, u64)> {
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/bags/expected.json")).unwrap(),
    )
    .unwrap();
    j["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("rgb_b64").is_some())
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                m["log_time_ns"].as_u64().unwrap(),
            )
        })
        .collect()
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: JoinHandle<String>,
}

/// Starts a replay of the fixture bag whose stderr carries a `frame done` line per frame.
fn start(out: &Path, rep: &Path, extra: &[&str]) -> Running {
    let mut child = yolact_cmd()
        .arg("replay")
        .arg(bag())
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--score-threshold", "0.3"])
        .arg("--out")
        .arg(out)
        .arg("--report")
        .arg(rep)
        .args(extra)
        .env("RUST_LOG", "warn,yolact_ros2::replay=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start yolact");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    Running {
        child,
        lines: rx,
        stderr: reader,
    }
}

impl Running {
    /// Waits for the `n`-th `frame done` line (a frame is logged done just before it is
    /// written).
    fn wait_frames(&mut self, n: usize) {
        let mut done = 0;
        self.wait_until(&format!("{n} frames done"), |l| {
            done += usize::from(l.contains("frame done"));
            done >= n
        });
    }

    /// Waits until the output writer says it has flushed at least `n` frames to the file.
    fn wait_flushed(&mut self, n: usize) {
        self.wait_until(&format!("{n} frames flushed"), |l| {
            l.split_once(": flushed, ")
                .and_then(|(_, t)| t.strip_suffix(" frames")?.parse::<usize>().ok())
                .is_some_and(|k| k >= n)
        });
    }

    /// Reads stderr lines until `enough` says so.
    fn wait_until(&mut self, what: &str, mut enough: impl FnMut(&str) -> bool) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(300)) {
                Ok(l) if enough(&l) => return,
                Ok(_) => continue,
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("waiting for {what}: {e}");
                }
            }
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        (status.code(), self.stderr.join().unwrap())
    }
}

/// Sends `sig` after the first frame; checks status 130, the report and a finished bag.
fn signal_finishes_the_output_bag(sig: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mcap");
    let rep = dir.path().join("report");
    // 10 messages, 8 good frames of a few hundred ms to seconds each on the CPU: the signal
    // arrives well before the end.
    let mut run = start(&out, &rep, &[]);
    run.wait_frames(1);
    run.signal(sig);
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "SIG{sig}: stderr:\n{err}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    let frames = report["frames"].as_u64().unwrap();
    assert!(
        (1..8).contains(&frames),
        "frames {frames}: the signal came after the first frame and before the last"
    );
    assert!(
        err.contains(&format!("interrupted after {frames} frames")),
        "{err}"
    );
    assert!(rep.join("latency.png").is_file());
    assert!(!yolact_ros2::bag::out_path::partial_path(&out).exists());

    // The bag was finished: our reader (which needs no footer) and the summary agree, every
    // written frame is there, /diagnostics is last and says interrupted.
    let reader = open_bag(&out).unwrap();
    let mut instances = 0u64;
    let mut last = None;
    let mut count = 0;
    for m in reader.messages(None) {
        let m = m.expect("a finished bag reads without error");
        count += 1;
        if m.msg_type == schema::INSTANCE_ARRAY {
            InstanceArray::from_cdr(&m.data).unwrap();
            instances += 1;
        }
        last = Some(m);
    }
    assert_eq!(instances, frames);
    assert_eq!(count as u64, 2 * frames + 1);
    let last = last.unwrap();
    assert_eq!(last.topic, "/diagnostics");
    let d = DiagnosticArray::from_cdr(&last.data).unwrap();
    let v = |k: &str| {
        d.status[0]
            .values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(v("interrupted").as_deref(), Some("true"));
    assert_eq!(v("frames"), Some(frames.to_string()));
    // The summary section exists only when `finish` ran.
    let bytes = std::fs::read(&out).unwrap();
    let summary = mcap::Summary::read(&bytes)
        .unwrap()
        .expect("an MCAP summary");
    assert_eq!(summary.stats.unwrap().message_count, 2 * frames + 1);
    // And a reader that is not ours (rosbags) agrees, frame by frame.
    let ours = crate::replay::read_ours(&out);
    assert_eq!(ours.instances.len() as u64, frames);
    crate::replay::check_with_rosbags(&out, &ours);
}

#[test]
fn sigint_finishes_the_output_bag() {
    signal_finishes_the_output_bag("INT");
}

#[test]
fn sigterm_finishes_the_output_bag() {
    signal_finishes_the_output_bag("TERM");
}

#[test]
fn sighup_finishes_the_output_bag() {
    signal_finishes_the_output_bag("HUP");
}

/// (topic of the input, log time) of every InstanceArray and Detection2DArray in `path`.
/// (input topic, log time) per frame.
type Frames = Vec<(String, u64)>;

fn frames_in(path: &Path) -> (Frames, Frames) {
    let (mut inst, mut det) = (Vec::new(), Vec::new());
    for m in open_bag(path).unwrap().messages(None).flatten() {
        if m.msg_type == schema::INSTANCE_ARRAY {
            let t = m.topic.strip_suffix("/yolact/instances").unwrap();
            inst.push((t.to_string(), m.log_time_ns));
        } else if m.msg_type == schema::DETECTION2D_ARRAY {
            let t = m.topic.strip_suffix("/yolact/detections").unwrap();
            det.push((t.to_string(), m.log_time_ns));
        }
    }
    inst.sort();
    det.sort();
    (inst, det)
}

/// A SIGKILL leaves OUT.partial (no summary, no footer) holding the flushed frames;
/// bag-recover turns it into a complete file; --resume then ends with every frame exactly once.
#[test]
fn sigkill_leaves_a_recoverable_partial_and_resume_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mcap");
    let rep = dir.path().join("report");
    let partial = yolact_ros2::bag::out_path::partial_path(&out);
    let mut run = start(&out, &rep, &[]);
    run.wait_flushed(2);
    run.signal("KILL");
    let (code, err) = run.finish();
    assert_eq!(code, None, "killed by a signal: {err}");
    assert!(!out.exists(), "OUT appears only when complete");
    let bytes = std::fs::read(&partial).unwrap();
    assert!(
        mcap::Summary::read(&bytes)
            .map(|s| s.is_none())
            .unwrap_or(true),
        "a killed run has no summary"
    );

    // Our reader gets every flushed frame, then one error for the missing end.
    let items: Vec<_> = open_bag(&partial).unwrap().messages(None).collect();
    let errors = items.iter().filter(|r| r.is_err()).count();
    assert_eq!(errors, 1);
    let (inst, det) = frames_in(&partial);
    assert!(
        inst.len() >= 2,
        "the frames flushed before the kill are in the file: {inst:?}"
    );
    let good = good_frames();
    for f in &inst {
        assert!(good.contains(f), "{f:?} is a frame of the bag");
    }

    // bag-recover: a complete copy (a summary the mcap crate reads), nothing lost.
    let rec = dir.path().join("recovered.mcap");
    let o = yolact_cmd()
        .arg("bag-recover")
        .arg(&partial)
        .arg(&rec)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rb = std::fs::read(&rec).unwrap();
    let summary = mcap::Summary::read(&rb).unwrap().expect("a summary");
    let n_ok = items.len() - errors;
    assert_eq!(summary.stats.unwrap().message_count, n_ok as u64);
    let theirs = mcap::MessageStream::new(&rb).unwrap().count();
    assert_eq!(theirs, n_ok, "the mcap crate reads every recovered message");
    assert_eq!(frames_in(&rec), (inst.clone(), det.clone()));
    for m in open_bag(&rec).unwrap().messages(None) {
        m.expect("a recovered file reads without error");
    }

    // --resume: the carried frames are not redone, and the output ends complete.
    let o = yolact_cmd()
        .arg("replay")
        .arg(bag())
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--score-threshold", "0.3", "--resume"])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&rep)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!partial.exists());
    let (inst2, det2) = frames_in(&out);
    let mut want = good.clone();
    want.sort();
    assert_eq!(inst2, want, "every frame exactly once");
    assert_eq!(det2, want);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    let carried = inst.iter().filter(|f| det.contains(f)).count() as u64;
    assert_eq!(report["resumed_frames"].as_u64().unwrap(), carried);
    assert_eq!(
        report["frames"].as_u64().unwrap() + carried,
        want.len() as u64
    );
    // The carried frames are the killed run's bytes, unchanged.
    let old: BTreeMap<u64, Vec<u8>> = open_bag(&rec)
        .unwrap()
        .messages(None)
        .flatten()
        .filter(|m| m.msg_type == schema::INSTANCE_ARRAY)
        .map(|m| (m.log_time_ns, m.data))
        .collect();
    let new: BTreeMap<u64, Vec<u8>> = open_bag(&out)
        .unwrap()
        .messages(None)
        .flatten()
        .filter(|m| m.msg_type == schema::INSTANCE_ARRAY)
        .map(|m| (m.log_time_ns, m.data))
        .collect();
    for (t, d) in &old {
        if det.iter().any(|(_, dt)| dt == t) {
            assert_eq!(new.get(t), Some(d), "frame {t} carried unchanged");
        }
    }
    let ours = crate::replay::read_ours(&out);
    assert_eq!(ours.last_topic, "/diagnostics");
    crate::replay::check_with_rosbags(&out, &ours);
}
