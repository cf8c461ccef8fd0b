//! `yolact bench` on the CPU: the stage clock it names and the `--cuda-graph` fallback.
//! (The CUDA side, event timing, peak memory and graph replay, is in tests/cuda_gpu.rs.)

use crate::support::yolact_cmd;

#[test]
fn cpu_bench_json_says_wall_clock_and_cuda_graph_falls_back_with_one_warning() {
    let img = crate::support::fixture("parity/test_image.png");
    let o = yolact_cmd()
        .args([
            "bench",
            "--weights",
            "synthetic",
            "--config",
            "yolact_resnet50",
            "--device",
            "cpu",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--cuda-graph",
            "--json",
        ])
        .arg(&img)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run yolact");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["clock"], "wall");
    assert_eq!(v["cuda_graph"], false);
    let why = v["cuda_graph_error"]
        .as_str()
        .expect("the fallback's reason");
    assert!(why.contains("CUDA"), "{why}");
    assert_eq!(
        stderr.matches("--cuda-graph").count(),
        1,
        "one log line expected: {stderr}"
    );
    assert!(v["peak_gpu_mem_mib"].is_null() && v["gpu_mem_source"].is_null());
    // Eager on the CPU: every stage of the network is reported, and the frame is their sum.
    let stages = v["stages"].as_object().unwrap();
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    for s in [
        "preprocess",
        "backbone",
        "fpn",
        "protonet",
        "heads",
        "nms",
        "masks",
    ] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    let sum: f64 = stages.values().map(|s| s["median"].as_f64().unwrap()).sum();
    let frame = v["frame_ms"]["median"].as_f64().unwrap();
    assert!(
        (sum - frame).abs() <= 1e-6 * frame.max(1.0),
        "{sum} vs {frame}"
    );
    assert!(v["fps"].as_f64().unwrap() > 0.0);
}
