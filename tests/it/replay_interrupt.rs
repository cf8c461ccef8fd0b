//! Ctrl-C during `yolact replay`: the run stops between frames, the output MCAP is finished with
//! its final /diagnostics message, the report says so, and the exit status is 130.

use crate::support::yolact_cmd;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use yolact_ros2::bag::open_bag;
use yolact_ros2::msgs::schema;
use yolact_ros2::msgs::{DiagnosticArray, InstanceArray};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sigint_finishes_the_output_bag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mcap");
    let rep = dir.path().join("report");
    // 10 messages, 8 good frames of a few hundred ms to seconds each on the CPU: the signal
    // arrives well before the end.
    let mut child = yolact_cmd()
        .arg("replay")
        .arg(root().join("tests/fixtures/bags/bag_mcap"))
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--score-threshold", "0.3"])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&rep)
        .env("RUST_LOG", "warn,yolact_ros2::replay=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start yolact");
    let pid = child.id();

    // Forward stderr lines; signal once the first frame is done.
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
    let first = loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(l) if l.contains("frame done") => break l,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("no frame finished: {e}");
            }
        }
    };
    eprintln!("after `{first}`: sending SIGINT to {pid}");
    let st = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{err}");

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
}
