//! `yolact replay --coco-gt`: frames matched to COCO images by stamp (and by index), results.json
//! with the frames' image ids, and AP equal to `yolact coco-eval` and pycocotools on the same files.

use crate::support::yolact_cmd;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn gt() -> PathBuf {
    root().join("tests/fixtures/bags/coco_gt.json")
}

/// Header stamps in ns of the frames the replay segments, from the fixture's expected.json.
fn good_stamps() -> Vec<i64> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/bags/expected.json")).unwrap();
    let e: Json = serde_json::from_str(&text).unwrap();
    e["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("error").is_none() && m["type"].as_str().unwrap().contains("Image"))
        .map(|m| {
            m["stamp_sec"].as_i64().unwrap() * 1_000_000_000 + m["stamp_nanosec"].as_i64().unwrap()
        })
        .collect()
}

/// Runs the replay; returns (report.json, results.json, stdout).
fn replay(mode: &str, dir: &Path) -> (Json, Json, String) {
    let rep = dir.join("report");
    let o = yolact_cmd()
        .arg("replay")
        .arg(root().join("tests/fixtures/bags/bag_mcap"))
        .args(["--weights", "synthetic", "--config", "yolact_resnet50"])
        .args(["--device", "cpu", "--score-threshold", "0.05"])
        .arg("--coco-gt")
        .arg(gt())
        .args(["--coco-match", mode])
        .arg("--report")
        .arg(&rep)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    // 3: the bag's bad frames are skipped (docs/replay.md, "Exit status").
    assert!(
        o.status.code() == Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |p: PathBuf| -> Json {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    (
        read(rep.join("report.json")),
        read(rep.join("results.json")),
        stdout,
    )
}

fn image_ids(results: &Json) -> BTreeSet<i64> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_i64().unwrap())
        .collect()
}

/// GT image ids keyed by the stamp they carry (field or file-name stem), read here with plain
/// JSON access rather than through the code under test.
fn gt_ids_by_stamp() -> Vec<(i64, i64)> {
    let g: Json = serde_json::from_str(&std::fs::read_to_string(gt()).unwrap()).unwrap();
    g["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let s = match i.get("stamp_ns") {
                Some(s) => s.as_i64().unwrap(),
                None => i["file_name"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches(".png")
                    .parse()
                    .unwrap(),
            };
            (s, i["id"].as_i64().unwrap())
        })
        .collect()
}

fn coco_eval_json(results: &Path) -> Json {
    let o = yolact_cmd()
        .args(["coco-eval", "--json", "--gt"])
        .arg(gt())
        .arg("--results")
        .arg(results)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

fn assert_stats_close(a: &Json, b: &Json, tol: f64, what: &str) {
    for kind in ["bbox", "segm"] {
        for n in NAMES {
            let (x, y) = (a[kind][n].as_f64().unwrap(), b[kind][n].as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{what}: {kind} {n}: {x} vs {y}");
        }
    }
}

fn pycocotools(results: &Path) -> Json {
    crate::support::pycocotools(&gt(), results)
}

#[test]
fn replay_coco_by_stamp_matches_coco_eval_and_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let (report, results, stdout) = replay("auto", dir.path());

    let stamps = good_stamps();
    assert_eq!(stamps.len(), 8);
    let by_stamp = gt_ids_by_stamp();
    let expected: BTreeSet<i64> = stamps
        .iter()
        .filter_map(|s| by_stamp.iter().find(|(t, _)| t == s).map(|(_, id)| *id))
        .collect();
    assert_eq!(
        expected.len(),
        7,
        "the fixture leaves one frame without an image"
    );
    assert_eq!(image_ids(&results), expected);

    let c = &report["coco"];
    assert_eq!(c["matched_by"], "stamp");
    assert_eq!(c["matched"], 7);
    assert_eq!(c["unmatched"], 1);
    assert!(
        stdout.contains("bbox:") && stdout.contains("segm:"),
        "{stdout}"
    );

    let results_path = dir.path().join("report/results.json");
    let cli = coco_eval_json(&results_path);
    assert_stats_close(&c["stats"], &cli, 1e-12, "replay vs coco-eval");
    // The fixture must exercise matching: some AP above zero.
    assert!(cli["segm"]["AR100"].as_f64().unwrap() > 0.0, "{cli}");
    let py = pycocotools(&results_path);
    assert_stats_close(&cli, &py, 1e-4, "ours vs pycocotools");
}

/// Index matching pairs the i-th image message (skipped ones included) with the i-th image by id.
#[test]
fn replay_coco_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let (report, results, _) = replay("index", dir.path());
    let mut ids: Vec<i64> = gt_ids_by_stamp().into_iter().map(|(_, id)| id).collect();
    ids.sort();
    // Image messages in bag order: 6 good raw frames (positions 0..=5), 2 refused ones (6, 7),
    // then 2 compressed frames (8, 9); only 8 images, so the compressed frames find none.
    let expected: BTreeSet<i64> = ids[..6].iter().copied().collect();
    assert_eq!(image_ids(&results), expected);
    assert_eq!(report["coco"]["matched_by"], "index");
    assert_eq!(report["coco"]["matched"], 6);
    assert_eq!(report["coco"]["unmatched"], 2);
}
