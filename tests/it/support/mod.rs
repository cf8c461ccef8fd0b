//! Helpers shared by the integration tests: the release binary, the repository's paths, and an
//! RLE decoder independent of ours.

pub mod coco_train;
pub mod dds;
pub mod synth;
pub mod train;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (fixtures, tools, config and docs are found from here).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// The `yolact` binary this test run built.
pub fn yolact_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_yolact"))
}

/// Runs `yolact ARGS` with our logs at warn, and waits for it.
pub fn yolact(args: &[&str]) -> Output {
    yolact_cmd()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run yolact")
}

/// stdout then stderr of a finished command, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs of a COCO compressed RLE string, decoded independently of src/output/rle.rs (pycocotools'
/// rleFrString: 5-bit groups offset by '0', 0x20 continues, 0x10 of the last group sign-extends,
/// runs from the third on delta-coded against the run two back).
pub fn rle_counts(s: &str) -> Vec<i64> {
    let b = s.as_bytes();
    let (mut i, mut counts) = (0, Vec::<i64>::new());
    while i < b.len() {
        let (mut x, mut k, mut more) = (0i64, 0, true);
        while more {
            let c = i64::from(b[i]) - 48;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            i += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    counts
}

/// Box and mask COCO stats of `results` against `gt` by pycocotools (`{"bbox": {"AP": ..}, "segm":
/// {..}}`), the independent COCOeval. The README's test command installs it (tools/test.sh);
/// without it the test fails.
pub fn pycocotools(gt: &std::path::Path, results: &std::path::Path) -> serde_json::Value {
    let script = r#"
import json, sys, io, contextlib
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
names = ["AP","AP50","AP75","APs","APm","APl","AR1","AR10","AR100","ARs","ARm","ARl"]
out = {}
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    dt = gt.loadRes(sys.argv[2])
    for kind in ["bbox", "segm"]:
        e = COCOeval(gt, dt, kind)
        e.evaluate(); e.accumulate(); e.summarize()
        out[kind] = dict(zip(names, [float(v) for v in e.stats]))
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(gt)
        .arg(results)
        .output()
        .expect("python3 runs (the README's test command, tools/test.sh, installs pycocotools)");
    assert!(
        o.status.success(),
        "pycocotools failed (install it with tools/test.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Asserts that `ours` (`{"bbox": {..}, "segm": {..}}` as `yolact eval`, `coco-eval` and the replay
/// report print it) equals pycocotools on the same results within 1e-4 for `keys`: box AP from
/// `dir/results_bbox.json` (YOLACT++ ranks boxes by the class score), mask AP from
/// `dir/results.json`.
pub fn assert_pycocotools_agrees(
    ours: &serde_json::Value,
    gt: &std::path::Path,
    dir: &std::path::Path,
    keys: &[&str],
) {
    let boxes = pycocotools(gt, &dir.join("results_bbox.json"));
    let masks = pycocotools(gt, &dir.join("results.json"));
    for (kind, py) in [("bbox", &boxes), ("segm", &masks)] {
        for k in keys {
            let (a, b) = (
                ours[kind][k].as_f64().unwrap(),
                py[kind][k].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() < 1e-4,
                "{kind} {k}: ours {a}, pycocotools {b}"
            );
        }
    }
}

/// Held by the tests that need several GB each (a whole training step at 550): two of them at
/// once on the test threads would take most of a 24 GB machine.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panicking holder poisons the lock; the next test still runs.
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
