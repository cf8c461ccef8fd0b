//! Checkpoint loading against fixtures written by real torch.save (tools/make_pth_fixtures.py).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use yolact_ros2::config::{YolactConfig, CONFIG_NAMES};
use yolact_ros2::weights::{
    detect_config, expected_shapes, load_checkpoint, load_checkpoint_bytes, prepare,
    save_safetensors, save_torch, sniff_format, CheckpointFormat, StateDict,
};
use yolact_ros2::Error;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pth")
        .join(name)
}

fn expected() -> StateDict {
    load_checkpoint(&fixture("small_expected.safetensors")).unwrap()
}

/// Values as f64 (exact for every dtype the fixtures use), for bit-exact comparison.
fn as_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_same(got: &StateDict, want: &StateDict, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.dtype(), w.dtype(), "{what}: {k}");
        assert_eq!(g.dims(), w.dims(), "{what}: {k}");
        assert_eq!(as_f64(g), as_f64(w), "{what}: {k}");
    }
}

#[test]
fn real_torch_files_load_in_every_format() {
    let want = expected();
    // Sanity on the expectation itself: the views hold what the script put there.
    assert_eq!(want["shared.view"].dims(), &[3, 5]);
    assert_eq!(as_f64(&want["shared.view"])[0], 10.0 * 0.25 - 3.0);
    assert_eq!(want["shared.transposed"].dims(), &[8, 5]);
    assert_eq!(as_f64(&want["shared.transposed"])[1], 8.0 * 0.25 - 3.0);
    assert_eq!(want["half.weight"].dtype(), DType::F16);
    assert_eq!(want["bn.num_batches_tracked"].dtype(), DType::I64);
    assert_eq!(
        want["bn.num_batches_tracked"].to_scalar::<i64>().unwrap(),
        123456789012
    );
    assert_eq!(want["scalar"].dims(), &[] as &[usize]);
    assert_eq!(want["empty"].dims(), &[0, 3]);
    for (k, dt) in [
        ("dtype.f64", DType::F64),
        ("dtype.bf16", DType::BF16),
        ("dtype.i32", DType::I32),
        ("dtype.i16", DType::I16),
        ("dtype.i8", DType::I16),
        ("dtype.u8", DType::U8),
        ("dtype.bool", DType::U8),
    ] {
        assert_eq!(want[k].dtype(), dt, "{k}");
    }
    assert_eq!(as_f64(&want["dtype.i8"]), vec![-128.0, 127.0, -1.0]);
    assert_eq!(as_f64(&want["dtype.bool"]), vec![1.0, 0.0, 1.0]);

    for (name, fmt) in [
        ("small_legacy.pth", CheckpointFormat::TorchLegacy),
        ("small_legacy_cuda.pth", CheckpointFormat::TorchLegacy),
        ("small_zip.pth", CheckpointFormat::TorchZip),
        ("small_zip_renamed.pth", CheckpointFormat::TorchZip),
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        assert_eq!(sniff_format(&bytes), Some(fmt), "{name}");
        let got = load_checkpoint(&fixture(name)).unwrap();
        assert_same(&got, &want, name);
    }
    let st = std::fs::read(fixture("small_expected.safetensors")).unwrap();
    assert_eq!(sniff_format(&st), Some(CheckpointFormat::SafeTensors));
}

fn load_err(name: &str) -> String {
    match load_checkpoint(&fixture(name)) {
        Ok(_) => panic!("{name} loaded but should not"),
        Err(e) => {
            assert!(matches!(e, Error::Checkpoint { .. }), "{name}: {e:?}");
            e.to_string()
        }
    }
}

#[test]
fn corrupt_files_give_helpful_errors() {
    let e = load_err("bad_magic.pth");
    assert!(e.contains("magic"), "{e}");
    let e = load_err("evil_os_system_legacy.pth");
    assert!(e.contains("os.system") && e.contains("refusing"), "{e}");
    // The offset named is where the GLOBAL opcode sits in the file.
    let raw = std::fs::read(fixture("evil_os_system_legacy.pth")).unwrap();
    let at = raw.windows(11).position(|w| w == b"cos\nsystem\n").unwrap();
    assert!(
        e.contains(&format!("at byte {at} of the file: refusing")),
        "{e}"
    );
    let e = load_err("evil_eval_zip.pth");
    assert!(e.contains("builtins.eval") && e.contains("data.pkl"), "{e}");
    let e = load_err("zip_missing_data.pth");
    assert!(
        e.contains("yolact_base_1_2/data/0") || e.contains("data/0"),
        "{e}"
    );
    assert!(e.contains("missing"), "{e}");
    let e = load_err("truncated_legacy_header.pth");
    assert!(
        e.contains("truncated") && e.contains("after 7 bytes"),
        "{e}"
    );
    let e = load_err("truncated_legacy_main.pth");
    assert!(e.contains("truncated") && e.contains("main pickle"), "{e}");
    assert!(e.contains("of the file"), "{e}");
    let e = load_err("truncated_legacy_end.pth");
    assert!(e.contains("truncated") && e.contains("storage"), "{e}");
    let e = load_err("truncated_zip.pth");
    assert!(e.contains("zip archive") && e.contains("truncated"), "{e}");
    let e = load_checkpoint(&fixture("no_such_file.pth")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let e = load_checkpoint_bytes(b"hello world", Path::new("x.pth")).unwrap_err();
    assert!(e.to_string().contains("unrecognised format"), "{e}");
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for name in [
        "small_legacy_cuda.pth",
        "small_zip.pth",
        "small_expected.safetensors",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in 0..bytes.len() {
            let r = load_checkpoint_bytes(&bytes[..cut], Path::new(name));
            assert!(r.is_err(), "{name} cut at {cut} loaded");
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    // Deterministic corruption: every byte xor-ed with a few masks. Either an error or (for bytes
    // inside tensor data or strings) a successful load; never a panic.
    for name in [
        "small_legacy.pth",
        "small_zip.pth",
        "small_expected.safetensors",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = load_checkpoint_bytes(&b, Path::new(name));
            }
        }
    }
}

fn small_dict() -> StateDict {
    let dev = Device::Cpu;
    let mut sd = StateDict::new();
    let w: Vec<f32> = (0..54).map(|i| (i as f32 - 20.0) * 0.37).collect();
    sd.insert(
        "conv.weight".into(),
        Tensor::from_vec(w, (2, 3, 3, 3), &dev).unwrap(),
    );
    sd.insert(
        "bn.num_batches_tracked".into(),
        Tensor::new(-5i64, &dev).unwrap(),
    );
    sd.insert(
        "half".into(),
        Tensor::new(&[1.5f32, -2.25, 65504.0], &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    );
    sd.insert(
        "f64".into(),
        Tensor::new(&[[1e-300f64, 3.0]], &dev).unwrap(),
    );
    sd.insert(
        "big_i64".into(),
        Tensor::new(&[i64::MAX, i64::MIN], &dev).unwrap(),
    );
    sd.insert("bytes".into(), Tensor::new(&[0u8, 255], &dev).unwrap());
    sd.insert("i32".into(), Tensor::new(&[i32::MIN, 7], &dev).unwrap());
    sd.insert("i16".into(), Tensor::new(&[-3i16, i16::MAX], &dev).unwrap());
    sd.insert(
        "bf16".into(),
        Tensor::new(&[0.5f32, -1e30], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    );
    sd.insert(
        "empty".into(),
        Tensor::zeros((0, 4), DType::F32, &dev).unwrap(),
    );
    sd
}

#[test]
fn save_torch_round_trips_both_formats() {
    let sd = small_dict();
    let dir = tempfile::tempdir().unwrap();
    for fmt in [
        CheckpointFormat::TorchLegacy,
        CheckpointFormat::TorchZip,
        CheckpointFormat::SafeTensors,
    ] {
        let p = dir.path().join(format!("rt_{fmt:?}.pth"));
        save_torch(&sd, &p, fmt).unwrap();
        assert_eq!(sniff_format(&std::fs::read(&p).unwrap()), Some(fmt));
        let back = load_checkpoint(&p).unwrap();
        assert_same(&back, &sd, &format!("{fmt:?}"));
    }
}

/// Our torch writer reproduces, byte for byte, the files in tests/fixtures/pth/ that real
/// `torch.load(weights_only=True)` read back equal to the safetensors beside them
/// (`tools/make_pth_fixtures.py --verify-writer`, see the fixture README). With
/// YOLACT_WRITER_OUT=DIR the files are also left in DIR, to re-verify after a writer change.
#[test]
fn save_torch_output_is_what_torch_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var("YOLACT_WRITER_OUT") {
        Ok(d) => PathBuf::from(d),
        Err(_) => tmp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let sd = small_dict();
    save_safetensors(&sd, &dir.join("expected.safetensors")).unwrap();
    let files = [
        ("written_legacy.pth", CheckpointFormat::TorchLegacy),
        ("written_zip.pth", CheckpointFormat::TorchZip),
    ];
    for (name, fmt) in files {
        save_torch(&sd, &dir.join(name), fmt).unwrap();
    }
    for (name, _) in files {
        let ours = std::fs::read(dir.join(name)).unwrap();
        let verified = std::fs::read(fixture(name)).unwrap();
        assert!(
            ours == verified,
            "{name}: {} bytes differ from the torch-verified fixture ({} vs {} bytes); re-verify \
             with tools/make_pth_fixtures.py --verify-writer and update the fixture",
            ours.iter().zip(&verified).filter(|(a, b)| a != b).count(),
            ours.len(),
            verified.len()
        );
    }
}

fn read_keys_file(cfg: &str) -> Vec<(String, Vec<usize>)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(format!("{cfg}.keys.txt"));
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap();
            let dims = shape
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            (name.to_owned(), dims)
        })
        .collect()
}

#[test]
fn expected_shapes_match_the_generated_key_lists() {
    for name in CONFIG_NAMES {
        let cfg = YolactConfig::by_name(name).unwrap();
        let want: Vec<_> = read_keys_file(name)
            .into_iter()
            .filter(|(k, _)| {
                !k.ends_with(".num_batches_tracked") && !k.starts_with("semantic_seg_conv.")
            })
            .collect();
        let got = expected_shapes(&cfg);
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{name}");
        }
    }
}

/// A full-size synthetic state dict with every key of the reference key list (incl. the
/// training-only ones), as zeros.
fn synthetic(cfg: &str) -> StateDict {
    read_keys_file(cfg)
        .into_iter()
        .map(|(k, s)| {
            let dt = if k.ends_with("num_batches_tracked") {
                DType::I64
            } else {
                DType::F32
            };
            let t = Tensor::zeros(s, dt, &Device::Cpu).unwrap();
            (k, t)
        })
        .collect()
}

#[test]
fn detect_config_and_prepare_on_all_six_key_sets() {
    for name in CONFIG_NAMES {
        let sd = synthetic(name);
        let cfg = detect_config(&sd, None).unwrap();
        let want = if name == "yolact_im700" {
            "yolact_base" // keys cannot tell im700 from base
        } else {
            name
        };
        assert_eq!(cfg.name, want);
        // The file name decides between base and im700; elsewhere the keys win.
        let p = PathBuf::from(format!("weights/{name}_54_800000.pth"));
        assert_eq!(detect_config(&sd, Some(&p)).unwrap().name, name);
        let liar = PathBuf::from("yolact_darknet53_1_2.pth");
        let c = detect_config(&sd, Some(&liar)).unwrap();
        assert_eq!(c.name, want, "keys beat a contradicting file name");

        let cfg = YolactConfig::by_name(name).unwrap();
        let n_expected = expected_shapes(&cfg).len();
        let prepared = prepare(sd, &cfg).unwrap();
        assert_eq!(prepared.len(), n_expected, "{name}");
        assert!(prepared.values().all(|t| t.dtype() == DType::F32));
        assert!(!prepared
            .keys()
            .any(|k| k.contains("num_batches") || k.contains("semantic")));
    }
}

fn mismatch_msg(r: yolact_ros2::Result<std::collections::HashMap<String, Tensor>>) -> String {
    match r {
        Err(e @ Error::WeightsMismatch { .. }) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e:?}"),
        Ok(_) => panic!("prepare accepted a bad state dict"),
    }
}

#[test]
fn prepare_drops_ignored_keys_and_reports_the_first_problem() {
    let cfg = YolactConfig::by_name("yolact_resnet50").unwrap();
    let dev = Device::Cpu;
    let mut sd = synthetic("yolact_resnet50");
    // Keys load_weights deletes, plus f16 storage that must come back as f32.
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
    sd.insert("backbone.layer1.0.conv1.weight".into(), z(&[64, 64, 1, 1]));
    sd.insert(
        "fpn.downsample_layers.2.weight".into(),
        z(&[256, 256, 3, 3]),
    );
    sd.insert("fpn.downsample_layers.2.bias".into(), z(&[256]));
    sd.insert(
        "proto_net.10.bias".into(),
        Tensor::ones(32, DType::F16, &dev).unwrap(),
    );
    let ok = prepare(sd.clone(), &cfg).unwrap();
    assert_eq!(ok["proto_net.10.bias"].dtype(), DType::F32);
    assert_eq!(as_f64(&ok["proto_net.10.bias"]), vec![1.0; 32]);
    assert!(!ok.contains_key("backbone.layer1.0.conv1.weight"));
    assert!(!ok.contains_key("fpn.downsample_layers.2.weight"));

    // Missing key: named with its expected shape.
    let mut bad = sd.clone();
    bad.remove("fpn.lat_layers.1.weight");
    let e = mismatch_msg(prepare(bad, &cfg));
    assert!(
        e.contains("fpn.lat_layers.1.weight") && e.contains("missing"),
        "{e}"
    );
    assert!(
        e.contains("[256, 1024, 1, 1]") && e.contains("yolact_resnet50"),
        "{e}"
    );

    // Wrong shapes in two places: the first in expected order is reported.
    let mut bad = sd.clone();
    bad.insert("prediction_layers.0.conf_layer.bias".into(), z(&[729]));
    bad.insert("backbone.layers.3.2.bn3.running_var".into(), z(&[2047]));
    let e = mismatch_msg(prepare(bad, &cfg));
    assert!(e.contains("backbone.layers.3.2.bn3.running_var"), "{e}");
    assert!(e.contains("[2048]") && e.contains("[2047]"), "{e}");

    // A key of another config (a DCN offset) is unexpected.
    let mut bad = sd.clone();
    bad.insert(
        "backbone.layers.1.0.conv2.conv_offset_mask.weight".into(),
        z(&[27, 128, 3, 3]),
    );
    let e = mismatch_msg(prepare(bad, &cfg));
    assert!(
        e.contains("unexpected key `backbone.layers.1.0.conv2.conv_offset_mask.weight`"),
        "{e}"
    );

    // fpn.downsample_layers.1 is needed; only indices >= 2 are dropped.
    let mut bad = sd;
    bad.remove("fpn.downsample_layers.1.bias");
    let e = mismatch_msg(prepare(bad, &cfg));
    assert!(e.contains("fpn.downsample_layers.1.bias"), "{e}");
}

#[test]
fn detect_config_refuses_unknown_backbones() {
    let mut sd = StateDict::new();
    sd.insert(
        "proto_net.0.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = detect_config(&sd, None).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    sd.insert(
        "backbone.layers.2.9.conv1.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = detect_config(&sd, None).unwrap_err().to_string();
    assert!(e.contains("10 blocks"), "{e}");
}

#[test]
fn full_size_synthetic_weights_round_trip_through_both_torch_formats() {
    // The plus R50 key set exercises DCN keys; random-ish values so a misplaced storage shows.
    let name = "yolact_plus_resnet50";
    let sd: StateDict = read_keys_file(name)
        .into_iter()
        .enumerate()
        .map(|(i, (k, s))| {
            let n: usize = s.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|j| ((i * 7919 + j) % 1000) as f32 * 1e-3)
                .collect();
            (k, Tensor::from_vec(v, s, &Device::Cpu).unwrap())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for fmt in [CheckpointFormat::TorchLegacy, CheckpointFormat::TorchZip] {
        let p = dir.path().join(format!("{name}_1_2.pth"));
        save_torch(&sd, &p, fmt).unwrap();
        let back = load_checkpoint(&p).unwrap();
        assert_eq!(detect_config(&back, Some(&p)).unwrap().name, name);
        assert_same(&back, &sd, &format!("{fmt:?}"));
        let cfg = YolactConfig::by_name(name).unwrap();
        assert_eq!(
            prepare(back, &cfg).unwrap().len(),
            expected_shapes(&cfg).len()
        );
    }
}

/// Loads YOLACT_CHECKPOINT (a released .pth, or one from
/// `tools/make_pth_fixtures.py --full-size CFG OUT`), detects its config and prepares it. If
/// `<path>.expected.safetensors` exists, every tensor must equal it exactly.
/// Run: `YOLACT_CHECKPOINT=... cargo test --release --test it weights::external -- --ignored --nocapture`
#[test]
#[ignore = "needs YOLACT_CHECKPOINT, a released checkpoint (not downloadable here)"]
fn external_checkpoint() {
    let path = PathBuf::from(std::env::var("YOLACT_CHECKPOINT").expect("set YOLACT_CHECKPOINT"));
    let t0 = std::time::Instant::now();
    let sd = load_checkpoint(&path).unwrap();
    let load_s = t0.elapsed().as_secs_f64();
    let cfg = detect_config(&sd, Some(&path)).unwrap();
    eprintln!(
        "{}: {} tensors, loaded in {load_s:.2}s, config {}",
        path.display(),
        sd.len(),
        cfg.name
    );
    let exp_path = PathBuf::from(format!("{}.expected.safetensors", path.display()));
    if exp_path.exists() {
        let want = load_checkpoint(&exp_path).unwrap();
        assert_same(&sd, &want, "external");
    }
    let prepared = prepare(sd, &cfg).unwrap();
    assert_eq!(prepared.len(), expected_shapes(&cfg).len());
    eprintln!("prepared in {:.2}s total", t0.elapsed().as_secs_f64());
}

/// One tensor under a real key with a single non-finite element at `at`, in `dtype`.
fn poisoned(key: &str, dims: &[usize], at: usize, bad: f32, dtype: DType) -> StateDict {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| if i == at { bad } else { 0.01 * i as f32 })
        .collect();
    let t = Tensor::from_vec(v, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let mut sd = StateDict::new();
    sd.insert(
        "proto_net.0.bias".into(),
        Tensor::ones(256, DType::F32, &Device::Cpu).unwrap(),
    );
    sd.insert(key.into(), t);
    sd
}

#[test]
fn non_finite_tensors_are_refused_at_load_naming_the_key_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "backbone.layers.0.0.conv1.weight",
            vec![64, 64, 1, 1],
            4095,
            f32::NAN,
            DType::F32,
        ),
        (
            "prediction_layers.0.bbox_layer.bias",
            vec![36],
            0,
            f32::INFINITY,
            DType::F32,
        ),
        (
            "maskiou_net.maskiou_net.0.weight",
            vec![8, 1, 3, 3],
            17,
            f32::NEG_INFINITY,
            DType::F16,
        ),
        (
            "prediction_layers.0.bbox_layer.weight",
            vec![36, 256, 3, 3],
            9000,
            f32::NAN,
            DType::BF16,
        ),
        (
            "maskiou_net.maskiou_net.8.bias",
            vec![128],
            127,
            f32::NAN,
            DType::F64,
        ),
    ];
    for (key, dims, at, bad, dtype) in cases {
        let sd = poisoned(key, &dims, at, bad, dtype);
        for fmt in [
            CheckpointFormat::TorchLegacy,
            CheckpointFormat::TorchZip,
            CheckpointFormat::SafeTensors,
        ] {
            let p = dir.path().join(format!("poisoned_{fmt:?}.pth"));
            save_torch(&sd, &p, fmt).unwrap();
            let e = load_checkpoint(&p).expect_err(&format!("{key} {fmt:?} {dtype:?} loaded"));
            assert!(matches!(e, Error::Checkpoint { .. }), "{e:?}");
            let e = e.to_string();
            assert!(e.contains(&format!("`{key}`")), "{fmt:?}: {e}");
            assert!(e.contains(&format!("flat index {at} of")), "{fmt:?}: {e}");
            assert!(e.contains("non-finite"), "{e}");
        }
    }
    // The same tensors with the bad element made finite load.
    let sd = poisoned(
        "prediction_layers.0.bbox_layer.bias",
        &[36],
        0,
        1e30,
        DType::F32,
    );
    let p = dir.path().join("fine.safetensors");
    save_torch(&sd, &p, CheckpointFormat::SafeTensors).unwrap();
    assert_eq!(load_checkpoint(&p).unwrap().len(), 2);
}

#[test]
fn a_non_finite_weight_that_bypasses_the_loader_fails_the_frame_not_a_detection() {
    // An in-memory state dict (not read from a file) with NaN in the box regressor: every box
    // would be NaN; the frame must fail rather than publish them.
    use yolact_ros2::engine::{Engine, InferOptions};
    let cfg = YolactConfig::by_name("yolact_resnet50").unwrap();
    let mut sd = yolact_ros2::weights::synth::synth_state_dict(&cfg, 1).unwrap();
    let key = "prediction_layers.0.bbox_layer.bias";
    let n = sd[key].elem_count();
    sd.insert(key.into(), Tensor::full(f32::NAN, n, &Device::Cpu).unwrap());
    let engine = Engine::from_state_dict(sd, cfg, &Device::Cpu).unwrap();
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
    let opts = InferOptions {
        score_threshold: 0.0,
        ..InferOptions::default()
    };
    let e = engine
        .infer(&img, &opts)
        .expect_err("NaN boxes were returned");
    assert!(e.to_string().contains("NaN or infinite"), "{e}");
}
