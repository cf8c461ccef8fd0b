//! `yolact bench-ops` (DCN vs plain conv per backbone DCN shape) through the release binary, and
//! its PyTorch counterpart `tools/bench_reference.py --ops` reading the same shapes.
//!
//! The expected shapes are derived here from the reference's backbone rule (dbolya/yolact
//! backbone.py `_make_layer` and data/config.py), not from our config code.
//!
//! The PyTorch test skips with a printed reason when python3 cannot import torch and torchvision,
//! and fails instead when `YOLACT_REQUIRE_TORCH` is set.

use crate::support::{text, yolact};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// (channels, height, width, stride, count, out_height, out_width)
type Shape = (u64, u64, u64, u64, u64, u64, u64);

/// The reference's rule: ResNet `layers` with `dcn_layers[s]` and `dcn_interval`: block 0 of a
/// stage is deformable iff dcn_layers >= blocks, block i > 0 iff i + dcn_layers >= blocks and
/// i % interval == 0. Stem 7x7/2 pad 3, max pool 3x3/2 pad 1, stride 2 on block 0 of stages 1..3,
/// floor((h + 2p - k) / s) + 1 throughout. Distinct shapes in network order, with counts.
fn reference_dcn_shapes(
    layers: [u64; 4],
    dcn_layers: [u64; 4],
    interval: u64,
    size: u64,
) -> Vec<Shape> {
    let out = |h: u64, k: u64, s: u64, p: u64| (h + 2 * p - k) / s + 1;
    let mut h = out(out(size, 7, 2, 3), 3, 2, 1);
    let mut shapes: Vec<Shape> = Vec::new();
    for s in 0..4 {
        let planes = 64u64 << s;
        for i in 0..layers[s] {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let dcn = if i == 0 {
                dcn_layers[s] >= layers[s]
            } else {
                i + dcn_layers[s] >= layers[s] && i % interval == 0
            };
            let ho = out(h, 3, stride, 1);
            if dcn {
                match shapes
                    .iter_mut()
                    .find(|e| (e.0, e.1, e.3) == (planes, h, stride))
                {
                    Some(e) => e.4 += 1,
                    None => shapes.push((planes, h, h, stride, 1, ho, ho)),
                }
            }
            h = ho;
        }
    }
    shapes
}

fn expected(config: &str, size: u64) -> Vec<Shape> {
    match config {
        // resnet50_dcnv2_backbone: ([3, 4, 6, 3], [0, 4, 6, 3]), interval 1 (the default).
        "yolact_plus_resnet50" => reference_dcn_shapes([3, 4, 6, 3], [0, 4, 6, 3], 1, size),
        // resnet101_dcn_inter3_backbone: ([3, 4, 23, 3], [0, 4, 23, 3], 3).
        "yolact_plus_base" => reference_dcn_shapes([3, 4, 23, 3], [0, 4, 23, 3], 3, size),
        other => panic!("no reference rule for {other}"),
    }
}

fn shapes_of(v: &Value) -> Vec<Shape> {
    let u = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    v["shapes"]
        .as_array()
        .expect("shapes")
        .iter()
        .map(|s| {
            (
                u(s, "channels"),
                u(s, "height"),
                u(s, "width"),
                u(s, "stride"),
                u(s, "count"),
                u(s, "out_height"),
                u(s, "out_width"),
            )
        })
        .collect()
}

const OPS: [&str; 3] = ["conv", "dcn", "dcn_layer"];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Spreads positive, finite and ordered; ratios and count-weighted totals follow the medians.
fn check_timings(v: &Value, iters: u64, warmup: u64) {
    assert_eq!(v["iters"].as_u64(), Some(iters), "{v}");
    assert_eq!(v["warmup"].as_u64(), Some(warmup), "{v}");
    let mut totals = [0.0f64; 3];
    for s in v["shapes"].as_array().unwrap() {
        let count = s["count"].as_f64().unwrap();
        let med = |op: &str| s["ops"][op]["median"].as_f64().unwrap();
        for (i, op) in OPS.iter().enumerate() {
            let sp = &s["ops"][*op];
            let (md, mn, mx) = (
                sp["median"].as_f64().unwrap(),
                sp["min"].as_f64().unwrap(),
                sp["max"].as_f64().unwrap(),
            );
            for x in [md, mn, mx] {
                assert!(x.is_finite() && x > 0.0, "{op} in {s}");
            }
            assert!(mn <= md && md <= mx, "{op} in {s}");
            totals[i] += count * md;
        }
        let r = s["ratio_dcn_conv"].as_f64().unwrap();
        assert!(close(r, med("dcn") / med("conv")), "{s}");
        let r = s["ratio_dcn_layer_conv"].as_f64().unwrap();
        assert!(close(r, med("dcn_layer") / med("conv")), "{s}");
    }
    for (i, op) in OPS.iter().enumerate() {
        let t = v["total_ms"][*op].as_f64().unwrap();
        assert!(close(t, totals[i]), "total {op}: {t} vs {}", totals[i]);
    }
    assert!(close(
        v["ratio_dcn_conv"].as_f64().unwrap(),
        totals[1] / totals[0]
    ));
    assert!(close(
        v["ratio_dcn_layer_conv"].as_f64().unwrap(),
        totals[2] / totals[0]
    ));
}

fn bench_ops_json(config: &str, size: u64) -> Value {
    let size_s = size.to_string();
    let o = yolact(&[
        "bench-ops",
        "--config",
        config,
        "--device",
        "cpu",
        "--size",
        &size_s,
        "--iters",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

#[test]
fn bench_ops_times_every_dcn_shape_of_the_config() {
    for (config, size) in [
        ("yolact_plus_resnet50", 64),
        ("yolact_plus_base", 64),
        ("yolact_plus_resnet50", 70),
    ] {
        let v = bench_ops_json(config, size);
        let want = expected(config, size);
        assert_eq!(shapes_of(&v), want, "{config} at {size}");
        let blocks: u64 = want.iter().map(|s| s.4).sum();
        // ++R50 deforms all 13 blocks of stages 1..3, ++R101 every third one: 2 + 8 + 1.
        let n = if config == "yolact_plus_base" { 11 } else { 13 };
        assert_eq!(blocks, n, "{config}");
        assert_eq!(v["config"], config);
        assert_eq!(v["size"].as_u64(), Some(size));
        assert_eq!(
            (&v["device"], &v["dtype"], &v["clock"]),
            (
                &Value::from("cpu"),
                &Value::from("f32"),
                &Value::from("wall")
            )
        );
        check_timings(&v, 2, 1);
    }
}

#[test]
fn bench_ops_prints_a_table_by_default() {
    let o = yolact(&[
        "bench-ops",
        "--device",
        "cpu",
        "--size",
        "48",
        "--iters",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for (c, h, _, s, _, _, _) in expected("yolact_plus_resnet50", 48) {
        let row = format!("{c}, {h}x{h}, /{s}");
        assert!(out.contains(&row), "{row} missing in\n{out}");
    }
    assert!(out.contains("total (count x median)"), "{out}");
    assert!(out.contains("timing: wall clock"), "{out}");
    let help = yolact(&["bench-ops", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for op in OPS {
        assert!(help.contains(op), "{op} not explained in\n{help}");
    }
}

#[test]
fn bench_ops_refuses_bad_flags_with_exit_code_2() {
    for (args, needle) in [
        (vec!["--iters", "0"], "--iters must be at least 1"),
        (
            vec!["--config", "yolact_tiny"],
            "invalid value 'yolact_tiny'",
        ),
        (vec!["--config", "yolact_resnet50"], "no deformable convs"),
        (vec!["--size", "0"], "--size must be at least 1"),
        (vec!["--half"], "--half"),
        (vec!["--iters", "x"], "invalid value 'x'"),
    ] {
        let mut all = vec!["bench-ops", "--device", "cpu"];
        all.extend(&args);
        let o = yolact(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn the_pytorch_side_times_the_same_shapes() {
    let required = std::env::var_os("YOLACT_REQUIRE_TORCH").is_some();
    let probe = Command::new("python3")
        .args(["-c", "import torch, torchvision"])
        .output();
    match probe {
        Ok(p) if p.status.success() => {}
        Ok(p) => {
            let why = String::from_utf8_lossy(&p.stderr).to_string();
            assert!(!required, "YOLACT_REQUIRE_TORCH set but: {why}");
            eprintln!("SKIPPED: python3 cannot import torch and torchvision: {why}");
            return;
        }
        Err(e) => {
            assert!(
                !required,
                "YOLACT_REQUIRE_TORCH set but python3 cannot run: {e}"
            );
            eprintln!("SKIPPED: cannot run python3: {e}");
            return;
        }
    }
    let ours = bench_ops_json("yolact_plus_base", 64);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops.json");
    std::fs::write(&path, ours.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_reference.py");
    let o = Command::new("python3")
        .arg(&script)
        .args(["--ops", "--shapes"])
        .arg(&path)
        .args([
            "--device",
            "cpu",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--json",
            "--threads",
            "1",
        ])
        .output()
        .expect("run bench_reference.py");
    assert!(o.status.success(), "{}", text(&o));
    let theirs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shapes_of(&theirs), shapes_of(&ours));
    assert_eq!(theirs["config"], "yolact_plus_base");
    assert_eq!(
        (&theirs["clock"], &theirs["dtype"]),
        (&Value::from("wall"), &Value::from("f32"))
    );
    check_timings(&theirs, 1, 0);

    // BENCHMARKS.md's rows from the two reports: one per shape plus the total, and a refusal when
    // the reports disagree on the shapes.
    let ref_path = dir.path().join("ref.json");
    std::fs::write(&ref_path, &o.stdout).unwrap();
    let table = |ours: &Path| {
        Command::new("python3")
            .arg(&script)
            .arg("--ops-table")
            .args([ours, ref_path.as_path()])
            .output()
            .expect("run bench_reference.py --ops-table")
    };
    let t = table(&path);
    assert!(t.status.success(), "{}", text(&t));
    let out = String::from_utf8_lossy(&t.stdout);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
    let n = shapes_of(&ours).len();
    assert_eq!(rows.len(), n + 2, "{out}");
    assert!(
        rows[n + 1].starts_with("| total (count x median) | 11 |"),
        "{out}"
    );
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        bench_ops_json("yolact_plus_resnet50", 64).to_string(),
    )
    .unwrap();
    let t = table(&other);
    assert!(!t.status.success(), "{}", text(&t));
    assert!(text(&t).contains("different shapes"), "{}", text(&t));
}
