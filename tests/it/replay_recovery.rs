//! `yolact replay` against inputs it must not destroy and data it must not silently lose: an
//! output aimed at the input is refused before anything is written, outputs are checked before
//! the work, a damaged middle chunk costs only its own frames (exit status 3), and a file that
//! is not MCAP says so.

use crate::support::yolact_cmd;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_bag() -> PathBuf {
    root().join("tests/fixtures/bags/bag_mcap")
}

fn replay(bag: &Path, args: &[&str]) -> Output {
    yolact_cmd()
        .arg("replay")
        .arg(bag)
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--score-threshold", "0.3"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            m.extend(snapshot(&p));
        } else {
            m.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    m
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn outputs_aimed_at_the_input_are_refused_and_the_input_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let bag = d.path().join("bag");
    std::fs::create_dir(&bag).unwrap();
    for f in ["metadata.yaml", "bag_mcap.mcap"] {
        std::fs::copy(fixture_bag().join(f), bag.join(f)).unwrap();
    }
    let link = d.path().join("link.mcap");
    std::os::unix::fs::symlink(bag.join("bag_mcap.mcap"), &link).unwrap();
    let before = snapshot(d.path());
    let mcap = bag.join("bag_mcap.mcap");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(PathBuf, Vec<String>, &str)> = vec![
        (bag.clone(), vec!["--out".into(), s(&bag.join("x.mcap"))], "inside the input"),
        (bag.clone(), vec!["--out".into(), s(&mcap)], "inside the input"),
        (mcap.clone(), vec!["--out".into(), s(&mcap)], "is the input"),
        // Through a symlink to the input file, and a `..` path back into the bag.
        (mcap.clone(), vec!["--out".into(), s(&link)], "is the input"),
        (
            bag.clone(),
            vec!["--out".into(), s(&d.path().join("new/../bag/y.mcap"))],
            "inside the input",
        ),
        (bag.clone(), vec!["--report".into(), s(&bag)], "inside the input"),
    ];
    for (input, args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = replay(input, &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("frames processed"), "refused before the work: {t}");
        assert_eq!(snapshot(d.path()), before, "{args:?}: the input is unchanged");
    }
}

#[test]
fn outputs_are_checked_before_the_work() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("a_file");
    std::fs::write(&file, b"keep").unwrap();
    let out = d.path().join("out.mcap");
    let under_file = file.join("x.mcap");
    let cases = [
        (vec!["--report", file.to_str().unwrap()], "not a directory"),
        (vec!["--out", d.path().to_str().unwrap()], "is a directory"),
        (
            vec!["--out", under_file.to_str().unwrap()],
            "not a directory",
        ),
    ];
    for (args, want) in cases {
        let o = replay(&fixture_bag(), &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("frames processed"), "{args:?}: {t}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    assert!(!out.exists());
}

#[test]
fn a_file_that_is_not_mcap_says_so() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.mcap");
    std::fs::write(&junk, b"this is not a bag at all, just some text\n").unwrap();
    let cut = d.path().join("cut.mcap");
    let full = std::fs::read(fixture_bag().join("bag_mcap.mcap")).unwrap();
    std::fs::write(&cut, &full[..30]).unwrap();
    for (p, want) in [(&junk, "not an MCAP file"), (&cut, "no message could be read")] {
        let o = replay(p, &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(want), "{t}");
        assert!(!t.contains("no Image or CompressedImage topic"), "{t}");
    }
}

/// Start offsets of the top-level Chunk records, by framing the file independently of the
/// reader under test.
pub(crate) fn chunk_offsets(data: &[u8]) -> Vec<usize> {
    let mut at = 8;
    let mut out = Vec::new();
    while at + 9 <= data.len() {
        let op = data[at];
        let len = u64::from_le_bytes(data[at + 1..at + 9].try_into().unwrap()) as usize;
        if op == 0x06 {
            out.push(at);
        }
        if op == 0x0F {
            break;
        }
        at += 9 + len;
    }
    out
}

/// The offset of the compressed records of the zstd chunk at `at` (after opcode, length, start
/// and end time, size, CRC and the compression string "zstd" and the records length): where the
/// zstd frame's magic number is. The fixture (rosbags) stores no chunk CRCs, so damage deeper in
/// the zstd data can decode to wrong bytes undetectably; a broken frame header cannot.
pub(crate) fn zstd_records(at: usize) -> usize {
    at + 9 + 8 * 3 + 4 + 4 + 4 + 8
}

#[test]
fn a_corrupted_middle_chunk_costs_only_its_frames_and_the_exit_status_says_so() {
    let d = tempfile::tempdir().unwrap();
    let mut data = std::fs::read(fixture_bag().join("bag_mcap.mcap")).unwrap();
    let chunks = chunk_offsets(&data);
    assert_eq!(chunks.len(), 4, "fixture: 4 chunks of 3 messages");
    // Damage the second chunk's compressed records (its frames 3, 4, 5).
    let mid = zstd_records(chunks[1]);
    assert_eq!(data[mid..mid + 4], [0x28, 0xb5, 0x2f, 0xfd], "the zstd magic");
    for b in &mut data[mid..mid + 4] {
        *b ^= 0x5a;
    }
    let bad = d.path().join("bad.mcap");
    std::fs::write(&bad, &data).unwrap();
    let rep = d.path().join("report");
    let out = d.path().join("out.mcap");
    let o = replay(
        &bad,
        &["--out", out.to_str().unwrap(), "--report", rep.to_str().unwrap()],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    // The good frames (expected.json: those with pixels) outside the damaged chunk's log-time
    // range, read from its header.
    let h = chunks[1] + 9;
    let time_at = |o: usize| u64::from_le_bytes(data[h + o..h + o + 8].try_into().unwrap());
    let (t0, t1) = (time_at(0), time_at(8));
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/bags/expected.json")).unwrap(),
    )
    .unwrap();
    let good: Vec<u64> = exp["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("rgb_b64").is_some())
        .map(|m| m["log_time_ns"].as_u64().unwrap())
        .collect();
    let kept = good.iter().filter(|&&x| x < t0 || x > t1).count();
    assert!(kept < good.len() && kept > 0, "the chunk holds some good frames");
    assert_eq!(r["frames"].as_u64().unwrap(), kept as u64, "{t}");
    assert_eq!(r["read_errors"].as_array().unwrap().len(), 1);
    let by = r["read_errors_by_reason"].as_object().unwrap();
    let n: u64 = ["chunk", "chunk_crc"]
        .iter()
        .filter_map(|k| by.get(*k).and_then(|v| v.as_u64()))
        .sum();
    assert_eq!(n, 1, "{by:?}");
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("## Read errors"));
    let ours = crate::replay::read_ours(&out);
    assert_eq!(ours.instances.len(), kept);
}
