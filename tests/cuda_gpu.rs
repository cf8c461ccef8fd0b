//! GPU parity tests (feature `cuda`): our CUDA kernels and the whole network on CUDA against the
//! CPU implementations, which are themselves tested against the reference.
//!
//! Every test skips with a printed reason when no CUDA device is usable, unless
//! YOLACT_REQUIRE_GPU=1 (set it on the GPU machine so a broken driver setup fails loudly).
//! Run: `cargo test --release --features cuda --test cuda_gpu -- --nocapture --test-threads 1`.
//!
//! Tolerances: the kernels use unfused f32 arithmetic in the host's order, so most comparisons
//! are exact; the exception is `expf`, which CUDA documents as accurate to 2 ulp (CUDA C++
//! Programming Guide, "Mathematical Functions", single precision) where the host's libm is
//! within 1 ulp. Decode (`w = prior_w · expf(·)`) and the mask sigmoid (`1 / (expf(-v) + 1)`)
//! therefore agree with the CPU to a few ulp on a GPU, not bitwise as on the emulator
//! (tests/it/cuda_emu.rs, which runs the kernels with the host's expf): see [`EXPF_ULP`].
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use yolact_ros2::cuda::{select_device, DeviceChoice};
use yolact_ros2::engine::backend::Backend;
use yolact_ros2::engine::{backend_for, Engine, InferOptions};
use yolact_ros2::ops::dcn::modulated_deform_conv2d;
use yolact_ros2::ops::interp::resize_bilinear;
use yolact_ros2::post::fast_nms::{NmsKind, NmsOptions};

#[path = "kernel_emu/scenes.rs"]
mod scenes;
use scenes::{nms_inputs, uniform};

fn gpu(test: &str) -> Option<Device> {
    match select_device(DeviceChoice::Cuda(0), false) {
        Ok(s) => Some(s.device),
        Err(e) => {
            if std::env::var("YOLACT_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: YOLACT_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// The host stages and the device's, each through the backend the engine would choose.
fn backends(dev: &Device) -> (Box<dyn Backend>, Box<dyn Backend>) {
    let (cpu, cuda) = (backend_for(&Device::Cpu), backend_for(dev));
    assert_eq!((cpu.name(), cuda.name()), ("cpu", "cuda"));
    (cpu, cuda)
}

/// CUDA's documented maximum error of `expf`, in ulp.
const EXPF_ULP: f32 = 2.0;

/// The spacing of f32 values at |x| (the size of one ulp there).
fn ulp(x: f32) -> f32 {
    let a = x.abs();
    f32::from_bits(a.to_bits() + 1) - a
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The runtime's own NVRTC path (cudarc, the options and names it uses) needs no GPU, only
/// libnvrtc, which the `cuda` build links anyway.
#[test]
fn the_runtime_compiles_every_module_without_a_device() {
    for k in yolact_ros2::cuda::sources::ALL {
        for cc in [(9, 0), (8, 7)] {
            let ptx = yolact_ros2::cuda::runtime::compile(&k, cc)
                .unwrap_or_else(|e| panic!("{} for {cc:?}: {e}", k.module));
            for e in k.entries {
                assert!(ptx.contains(&format!(".entry {e}(")), "{}: {e}", k.module);
            }
        }
    }
}

#[test]
fn fast_nms_on_the_device_keeps_exactly_what_the_host_keeps() {
    let Some(dev) = gpu("fast_nms_on_the_device_keeps_exactly_what_the_host_keeps") else {
        return;
    };
    let (cpu, cuda) = backends(&dev);
    for (p, c1, seed) in [
        (19248usize, 81usize, 1u64),
        (5000, 81, 2),
        (700, 5, 3),
        (3, 81, 4),
    ] {
        let (boxes, conf, coefs) = nms_inputs(p, c1, seed);
        for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
            for (conf_thresh, top_k, max_det) in [
                (0.05f32, 200usize, 100usize),
                (0.01, 1000, 1000),
                (0.3, 5, 3),
            ] {
                let opts = NmsOptions {
                    kind,
                    conf_thresh,
                    top_k,
                    max_num_detections: max_det,
                    ..NmsOptions::default()
                };
                let host = cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
                let t = std::time::Instant::now();
                let on_dev = cuda
                    .detect(
                        &boxes.to_device(&dev).unwrap(),
                        &conf.to_device(&dev).unwrap(),
                        &coefs.to_device(&dev).unwrap(),
                        &opts,
                    )
                    .unwrap();
                let el = t.elapsed();
                let what = format!(
                    "p={p} c1={c1} {kind:?} thresh={conf_thresh} top_k={top_k} max={max_det}"
                );
                assert_eq!(host.classes, on_dev.classes, "{what}: classes");
                assert_eq!(
                    host.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                    on_dev
                        .scores
                        .iter()
                        .map(|s| s.to_bits())
                        .collect::<Vec<_>>(),
                    "{what}: scores"
                );
                assert_eq!(
                    max_abs_diff(&host.boxes, &on_dev.boxes),
                    0.0,
                    "{what}: boxes"
                );
                assert_eq!(
                    max_abs_diff(&host.coefs, &on_dev.coefs),
                    0.0,
                    "{what}: coefs"
                );
                eprintln!(
                    "{what}: {} detections identical ({el:?} incl. upload)",
                    host.len()
                );
            }
        }
        // The per-class seam on its own.
        let cands = yolact_ros2::post::fast_nms::candidates(&conf, 0.05).unwrap();
        let n = cands.len();
        if n == 0 {
            continue;
        }
        let scores =
            Tensor::from_vec(cands.scores.clone(), (cands.num_classes, n), &Device::Cpu).unwrap();
        let rows = Tensor::from_vec(cands.priors.clone(), n, &Device::Cpu).unwrap();
        let cb = boxes.index_select(&rows, 0).unwrap();
        let host = cpu.fast_nms_keep(&scores, &cb, 200, 0.5).unwrap();
        let on_dev = cuda
            .fast_nms_keep(
                &scores.to_device(&dev).unwrap(),
                &cb.to_device(&dev).unwrap(),
                200,
                0.5,
            )
            .unwrap();
        assert_eq!(host, on_dev, "fast_nms_keep_tensor p={p}");
    }
}

/// One DCN shape: returns (f32 max |diff|, f16 max |diff|, max |CPU output|).
fn dcn_case(
    dev: &Device,
    (n, c, o, h, w, stride, seed): (usize, usize, usize, usize, usize, usize, u64),
) -> (f32, f32, f32) {
    let ho = (h - 1) / stride + 1;
    let wo = (w - 1) / stride + 1;
    let cpu = Device::Cpu;
    let x = Tensor::from_vec(uniform(n * c * h * w, seed, -2.0, 2.0), (n, c, h, w), &cpu).unwrap();
    // Offsets up to ±(size) so that samples fall outside the image on every border too.
    let off = Tensor::from_vec(
        uniform(n * 18 * ho * wo, seed + 1, -(h as f32), h as f32),
        (n, 18, ho, wo),
        &cpu,
    )
    .unwrap();
    let mask = Tensor::from_vec(
        uniform(n * 9 * ho * wo, seed + 2, 0.0, 1.0),
        (n, 9, ho, wo),
        &cpu,
    )
    .unwrap();
    let wt = Tensor::from_vec(uniform(o * c * 9, seed + 3, -0.2, 0.2), (o, c, 3, 3), &cpu).unwrap();
    let b = Tensor::from_vec(uniform(o, seed + 4, -1.0, 1.0), o, &cpu).unwrap();
    let want = modulated_deform_conv2d(&x, &off, &mask, &wt, &b, stride).unwrap();
    let to = |t: &Tensor, dt: DType| t.to_dtype(dt).unwrap().to_device(dev).unwrap();
    let got = modulated_deform_conv2d(
        &to(&x, DType::F32),
        &to(&off, DType::F32),
        &to(&mask, DType::F32),
        &to(&wt, DType::F32),
        &to(&b, DType::F32),
        stride,
    )
    .unwrap();
    assert_eq!(got.dims(), want.dims());
    let d32 = max_abs_diff(&got, &want);
    let got16 = modulated_deform_conv2d(
        &to(&x, DType::F16),
        &to(&off, DType::F16),
        &to(&mask, DType::F16),
        &to(&wt, DType::F16),
        &to(&b, DType::F16),
        stride,
    )
    .unwrap();
    assert_eq!(got16.dtype(), DType::F16);
    let d16 = max_abs_diff(&got16, &want);
    let scale = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (d32, d16, scale)
}

#[test]
fn dcn_on_the_device_matches_the_cpu_op() {
    let Some(dev) = gpu("dcn_on_the_device_matches_the_cpu_op") else {
        return;
    };
    for (n, c, o, h, w, stride, seed) in [
        (1usize, 64usize, 64usize, 69usize, 69usize, 1usize, 1u64),
        (1, 128, 128, 35, 35, 2, 2),
        (2, 20, 7, 13, 9, 1, 3),
        (1, 3, 5, 1, 1, 2, 4),
        (1, 17, 3, 8, 11, 2, 5),
    ] {
        let (d32, d16, scale) = dcn_case(&dev, (n, c, o, h, w, stride, seed));
        eprintln!("dcn n={n} c={c} o={o} {h}x{w} s={stride}: f32 max|diff| {d32:.2e}, f16 max|diff| {d16:.2e} (max |out| {scale:.2})");
        assert!(d32 <= 1e-4, "f32 DCN differs from the CPU by {d32}");
        // f16 has an 11-bit significand; C·9 products accumulate in cuBLAS.
        assert!(
            d16 <= 2e-2 * scale.max(1.0),
            "f16 DCN differs from the CPU by {d16}"
        );
    }
}

#[test]
fn resize_on_the_device_matches_the_cpu_op() {
    let Some(dev) = gpu("resize_on_the_device_matches_the_cpu_op") else {
        return;
    };
    for (n, c, h, w, oh, ow) in [
        (1usize, 3usize, 480usize, 640usize, 550usize, 550usize),
        (2, 4, 18, 18, 35, 35),
        (1, 32, 138, 138, 480, 640),
        (1, 1, 7, 9, 13, 4),
        (1, 2, 1, 1, 3, 5),
    ] {
        let x = Tensor::from_vec(
            uniform(n * c * h * w, (h * w) as u64, -2.0, 2.0),
            (n, c, h, w),
            &Device::Cpu,
        )
        .unwrap();
        let want = resize_bilinear(&x, oh, ow).unwrap();
        let got = resize_bilinear(&x.to_device(&dev).unwrap(), oh, ow).unwrap();
        let d = max_abs_diff(&got, &want);
        // Strided input on the device goes through the contiguous copy.
        let xt = x.transpose(2, 3).unwrap();
        let dt = max_abs_diff(
            &resize_bilinear(&xt.to_device(&dev).unwrap(), oh, ow).unwrap(),
            &resize_bilinear(&xt, oh, ow).unwrap(),
        );
        let d16 = max_abs_diff(
            &resize_bilinear(
                &x.to_dtype(DType::F16).unwrap().to_device(&dev).unwrap(),
                oh,
                ow,
            )
            .unwrap(),
            &resize_bilinear(&x.to_dtype(DType::F16).unwrap(), oh, ow).unwrap(),
        );
        eprintln!(
            "resize {h}x{w}->{oh}x{ow}: f32 {d:.2e}, strided {dt:.2e}, f16 vs CPU f16 {d16:.2e}"
        );
        // Same formula, unfused arithmetic: equal up to the last bit.
        assert!(
            d <= 1e-6 && dt <= 1e-6,
            "resize differs from the CPU by {d} / {dt}"
        );
        assert!(
            d16 <= 2e-3,
            "f16 resize differs from the CPU f16 op by {d16}"
        );
    }
}

#[test]
fn bce_on_the_device_matches_the_cpu_loss_and_its_gradient() {
    use candle_core::Var;
    use yolact_ros2::train::loss::bce::binary_cross_entropy;
    let Some(dev) = gpu("bce_on_the_device_matches_the_cpu_loss_and_its_gradient") else {
        return;
    };
    let n = 4099;
    let mut p = uniform(n, 3, 0.0, 1.0);
    p[0] = 0.0;
    p[1] = 1.0;
    let t: Vec<f32> = (0..n).map(|i| (i % 3) as f32 / 2.0).collect();
    let run = |d: &Device| {
        let pv = Var::from_vec(p.clone(), n, d).unwrap();
        let tt = Tensor::from_vec(t.clone(), n, d).unwrap();
        let l = binary_cross_entropy(pv.as_tensor(), &tt).unwrap();
        let g = l.sum_all().unwrap().backward().unwrap();
        (l, g.get(pv.as_tensor()).unwrap().clone())
    };
    let ((lc, gc), (lg, gg)) = (run(&Device::Cpu), run(&dev));
    let (dl, dg) = (max_abs_diff(&lg, &lc), max_abs_diff(&gg, &gc));
    eprintln!("bce on the device vs the CPU: loss {dl:.2e}, gradient {dg:.2e}");
    // logf / log1pf on the device are within 2 ulp of the host's; the values reach 100.
    assert!(dl <= 1e-4, "loss differs by {dl}");
    assert!(
        dg <= 1e-3 * max_abs_diff(&gc, &gc.zeros_like().unwrap()),
        "gradient differs by {dg}"
    );
    assert!(
        lg.device().same_device(&dev),
        "the loss stays on the device"
    );
}

#[test]
fn fused_preprocess_on_the_device_is_the_cpu_transform() {
    let Some(dev) = gpu("fused_preprocess_on_the_device_is_the_cpu_transform") else {
        return;
    };
    let (cpu, cuda) = backends(&dev);
    let img = test_image();
    for name in ["yolact_plus_resnet50", "yolact_darknet53"] {
        let cfg = yolact_ros2::YolactConfig::by_name(name).unwrap();
        let want = cpu
            .preprocess(&img, &cfg, &Device::Cpu, DType::F32)
            .unwrap();
        for dt in [DType::F32, DType::F16] {
            let got = cuda.preprocess(&img, &cfg, &dev, dt).unwrap();
            assert_eq!(got.dtype(), dt);
            let d = max_abs_diff(&got, &want.to_dtype(dt).unwrap());
            eprintln!("fused preprocess {name} {dt:?}: max |diff| {d:.2e} against the CPU");
            // Unfused f32 arithmetic in the same order: identical on the device too.
            assert_eq!(d, 0.0, "{name} {dt:?}");
        }
    }
}

#[test]
fn fused_mask_stages_on_the_device_match_the_cpu() {
    let Some(dev) = gpu("fused_mask_stages_on_the_device_match_the_cpu") else {
        return;
    };
    let (host, cuda) = backends(&dev);
    let (hp, wp, d, n) = (138usize, 138usize, 32usize, 20usize);
    let cpu = Device::Cpu;
    let proto = Tensor::from_vec(uniform(hp * wp * d, 1, -1.0, 1.0), (hp, wp, d), &cpu).unwrap();
    let coefs = Tensor::from_vec(uniform(n * d, 2, -1.0, 1.0), (n, d), &cpu).unwrap();
    let mut b = uniform(n * 4, 3, 0.0, 1.0);
    b[0] = f32::NAN; // the crop of a NaN box must agree too
    let boxes = Tensor::from_vec(b, (n, 4), &cpu).unwrap();
    for crop in [true, false] {
        let want = host.assemble_crop(&proto, &coefs, &boxes, crop).unwrap();
        let on = |t: &Tensor| t.to_device(&dev).unwrap();
        let got = cuda
            .assemble_crop(&on(&proto), &on(&coefs), &on(&boxes), crop)
            .unwrap();
        // Two sources of difference: cuBLAS and the CPU GEMM sum the 32 products in different
        // orders (the logits differ by ~1e-6 here, and sigmoid's slope is at most 1/4), and the
        // device's expf is within EXPF_ULP ulp where the host's is within 1, which moves a
        // sigmoid in (0, 1) by at most (EXPF_ULP + 1) ulp of 1 plus the division's rounding.
        let dm = max_abs_diff(&got, &want);
        let expf_part = (EXPF_ULP + 2.0) * ulp(1.0);
        eprintln!(
            "fused mask assembly crop={crop}: max |diff| {dm:.2e} (expf's share at most {expf_part:.1e})"
        );
        assert!(dm <= 1e-5 + expf_part, "crop={crop}: {dm}");
        let (ih, iw) = (480usize, 640usize);
        let want_m = host.upsample_threshold(&want, ih, iw).unwrap();
        // The device's bytes from the CPU's soft masks: the resize itself must be exact.
        let got_m = cuda.upsample_threshold(&on(&want), ih, iw).unwrap();
        assert_eq!(got_m.len(), want_m.len());
        for (g, w) in got_m.iter().zip(&want_m) {
            assert_eq!(g, w, "upsample crop={crop}");
        }
    }
}

#[test]
fn decode_on_the_device_matches_the_cpu_within_the_expf_tolerance() {
    let Some(dev) = gpu("decode_on_the_device_matches_the_cpu_within_the_expf_tolerance") else {
        return;
    };
    let (cpu, cuda) = backends(&dev);
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_plus_resnet50").unwrap();
    let sizes = yolact_ros2::model::conv_sizes(&cfg, cfg.max_size, cfg.max_size);
    let priors = yolact_ros2::engine::priors::priors_tensor(&cfg, &sizes, &Device::Cpu).unwrap();
    let p = priors.dim(0).unwrap();
    let mut loc = uniform(p * 4, 5, -4.0, 4.0);
    loc[7] = f32::NAN;
    let loc = Tensor::from_vec(loc, (p, 4), &Device::Cpu).unwrap();
    let want = cpu
        .decode_boxes(&loc, &priors)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let got = cuda
        .decode_boxes(
            &loc.to_device(&dev).unwrap(),
            &priors.to_device(&dev).unwrap(),
        )
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // w and h carry expf's error (EXPF_ULP against the host's 1, one more rounding in the
    // product); x1 = cx - w/2 and x2 = x1 + w add at most that again plus their own rounding.
    let allowed_ulp = 2.0 * (EXPF_ULP + 2.0);
    let (mut worst, mut exact) = (0f32, 0usize);
    for (w, g) in want.iter().zip(&got) {
        let scale = w
            .iter()
            .fold((w[2] - w[0]).abs().max((w[3] - w[1]).abs()), |m, v| {
                m.max(v.abs())
            });
        for q in 0..4 {
            if w[q].is_nan() || g[q].is_nan() {
                assert!(w[q].is_nan() && g[q].is_nan(), "{w:?} vs {g:?}");
                continue;
            }
            let d = (w[q] - g[q]).abs() / ulp(scale);
            worst = worst.max(d);
            exact += usize::from(d == 0.0);
            assert!(d <= allowed_ulp, "{w:?} vs {g:?}: {d} ulp");
        }
    }
    eprintln!(
        "decode: {p} priors, worst {worst:.1} ulp of the box scale (allowed {allowed_ulp}), \
         {exact} of {} coordinates exact",
        4 * p
    );
}

#[test]
fn frames_without_detections_never_allocate_zero_bytes_on_the_device() {
    let Some(dev) = gpu("frames_without_detections_never_allocate_zero_bytes_on_the_device") else {
        return;
    };
    use yolact_ros2::post::masks::{postprocess, PostprocessOptions};
    let (_, cuda) = backends(&dev);
    let (boxes, conf, coefs) = nms_inputs(5000, 81, 7);
    let on = |t: &Tensor| t.to_device(&dev).unwrap();
    let proto = on(&Tensor::from_vec(
        uniform(138 * 138 * 8, 1, -1.0, 1.0),
        (138, 138, 8),
        &Device::Cpu,
    )
    .unwrap());
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass, NmsKind::Traditional] {
        for (conf_thresh, top_k) in [(1.0f32, 200usize), (0.05, 0)] {
            let opts = NmsOptions {
                kind,
                conf_thresh,
                top_k,
                ..NmsOptions::default()
            };
            let what = format!("{kind:?} thresh={conf_thresh} top_k={top_k}");
            let dets = cuda
                .detect(&on(&boxes), &on(&conf), &on(&coefs), &opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if kind == NmsKind::Traditional && top_k == 0 {
                continue; // traditional NMS has no top-k: it keeps detections here
            }
            assert!(dets.is_empty(), "{what}");
            assert!(
                dets.boxes.device().is_cpu() && dets.coefs.device().is_cpu(),
                "{what}"
            );
            let out = postprocess(
                cuda.as_ref(),
                &dets,
                &proto,
                None,
                640,
                480,
                &PostprocessOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{what}: postprocess: {e}"));
            assert!(out.is_empty(), "{what}");
            // The mask stages on their own, with the (host) empty coefficients and the device's
            // prototypes, as a caller without postprocess's early return would run them.
            let masks = cuda
                .assemble_crop(&proto, &dets.coefs, &dets.boxes, true)
                .unwrap_or_else(|e| panic!("{what}: assemble_crop: {e}"));
            assert_eq!(masks.dims(), [0, 138, 138], "{what}");
            assert!(cuda
                .upsample_threshold(&masks, 480, 640)
                .unwrap()
                .is_empty());
            assert!(dets.select(&[]).unwrap().is_empty());
        }
    }
    // The device is still healthy: no error was recorded by a failed 0-byte allocation.
    let t = on(&Tensor::ones(4, DType::F32, &Device::Cpu).unwrap());
    assert_eq!(t.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4.0);
}

fn engine(config: &str, dev: &Device, dtype: DType) -> Engine {
    let cfg = yolact_ros2::YolactConfig::by_name(config).unwrap();
    let sd = yolact_ros2::weights::synth::synth_state_dict(
        &cfg,
        yolact_ros2::weights::synth::DEFAULT_SEED,
    )
    .unwrap();
    Engine::from_state_dict_dtype(sd, cfg, dev, dtype).unwrap()
}

fn test_image() -> image::RgbImage {
    // The binary is built here and run from the repository root on the GPU machine, where the
    // build's absolute path does not exist.
    let rel = "tests/fixtures/parity/test_image.png";
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let p = if built.exists() { built } else { rel.into() };
    image::open(&p).unwrap().to_rgb8()
}

#[test]
fn the_network_on_the_gpu_matches_the_cpu_f32_and_reports_f16() {
    let Some(dev) = gpu("the_network_on_the_gpu_matches_the_cpu_f32_and_reports_f16") else {
        return;
    };
    let img = test_image();
    for config in ["yolact_plus_resnet50", "yolact_resnet50"] {
        let cpu = engine(config, &Device::Cpu, DType::F32);
        let g32 = engine(config, &dev, DType::F32);
        let g16 = engine(config, &dev, DType::F16);
        let (rc, r32, r16) = (
            cpu.raw(&img).unwrap(),
            g32.raw(&img).unwrap(),
            g16.raw(&img).unwrap(),
        );
        let mut worst = 0f32;
        for (name, a, b, h) in [
            ("loc", &rc.loc, &r32.loc, &r16.loc),
            ("conf", &rc.conf, &r32.conf, &r16.conf),
            ("mask", &rc.mask, &r32.mask, &r16.mask),
            ("proto", &rc.proto, &r32.proto, &r16.proto),
        ] {
            let (d32, d16) = (max_abs_diff(a, b), max_abs_diff(a, h));
            eprintln!("{config} raw {name}: f32 GPU vs CPU {d32:.2e}, f16 GPU vs CPU {d16:.2e}");
            worst = worst.max(d32);
        }
        assert!(worst <= 1e-3, "{config}: raw outputs differ by {worst}");

        let opts = InferOptions::default();
        let dc = cpu.infer(&img, &opts).unwrap();
        let d32 = g32.infer(&img, &opts).unwrap();
        assert_eq!(dc.items.len(), d32.items.len(), "{config}: detection count");
        for (a, b) in dc.items.iter().zip(&d32.items) {
            assert_eq!(a.class_id, b.class_id, "{config}: classes");
            assert!(
                (a.score - b.score).abs() <= 1e-3,
                "{config}: score {} vs {}",
                a.score,
                b.score
            );
            for q in 0..4 {
                assert!(
                    (a.bbox[q] - b.bbox[q]).abs() <= 0.5,
                    "{config}: box {:?} vs {:?}",
                    a.bbox,
                    b.bbox
                );
            }
        }
        // f16 is reported, not asserted: its agreement is a measurement for BENCHMARKS.md.
        match g16.infer(&img, &opts) {
            Ok(d16) => {
                let same_class = dc
                    .items
                    .iter()
                    .zip(&d16.items)
                    .filter(|(a, b)| a.class_id == b.class_id)
                    .count();
                let dscore = dc
                    .items
                    .iter()
                    .zip(&d16.items)
                    .map(|(a, b)| (a.score - b.score).abs())
                    .fold(0f32, f32::max);
                eprintln!(
                    "{config}: {} detections; f16: {} detections, {same_class} same class in rank \
                     order, max |score diff| {dscore:.2e}",
                    dc.items.len(),
                    d16.items.len()
                );
            }
            Err(e) => eprintln!("{config}: f16 inference failed: {e}"),
        }
    }
}

// ---- stage timing, peak memory and CUDA graph replay (`yolact bench`) -------------------------

/// A second, different frame of the same size: the parity image mirrored.
fn other_image() -> image::RgbImage {
    image::imageops::flip_horizontal(&test_image())
}

#[test]
fn event_timed_stages_are_positive_and_add_up_to_the_wall_time() {
    let Some(dev) = gpu("event_timed_stages_are_positive_and_add_up_to_the_wall_time") else {
        return;
    };
    use std::time::{Duration, Instant};
    use yolact_ros2::engine::{ClockKind, StageTimes};
    let img = test_image();
    let opts = InferOptions::default();
    for config in ["yolact_plus_resnet50", "yolact_resnet50"] {
        let mut e = engine(config, &dev, DType::F32);
        assert_eq!(e.clock(), ClockKind::CudaEvents, "{config}");
        for _ in 0..3 {
            e.infer_timed(&img, &opts).unwrap();
        }
        dev.synchronize().unwrap();
        let n = 30;
        let t0 = Instant::now();
        let mut staged = Duration::ZERO;
        for _ in 0..n {
            let (_, t) = e.infer_timed(&img, &opts).unwrap();
            for (name, d) in StageTimes::NAMES.iter().zip(t.as_array()) {
                assert!(d > Duration::ZERO, "{config}: {name} took {d:?}: {t:?}");
            }
            staged += t.total();
        }
        let wall = t0.elapsed();
        let rel = (staged.as_secs_f64() - wall.as_secs_f64()).abs() / wall.as_secs_f64();
        // The same frames timed with a synchronize per stage, for the record.
        e.set_clock(ClockKind::Wall).unwrap();
        let t1 = Instant::now();
        for _ in 0..n {
            e.infer_timed(&img, &opts).unwrap();
        }
        let synced = t1.elapsed();
        eprintln!(
            "{config}: {n} frames, event stages sum {:.2} ms/frame, wall {:.2} ms/frame \
             (|diff| {:.1}%); with a synchronize per stage: {:.2} ms/frame",
            staged.as_secs_f64() * 1e3 / n as f64,
            wall.as_secs_f64() * 1e3 / n as f64,
            rel * 100.0,
            synced.as_secs_f64() * 1e3 / n as f64
        );
        assert!(
            rel <= 0.2,
            "{config}: event-timed stages sum to {staged:?}, wall time {wall:?}"
        );
    }
}

#[test]
fn peak_gpu_memory_is_reported_for_eager_and_graph_frames() {
    let Some(dev) = gpu("peak_gpu_memory_is_reported_for_eager_and_graph_frames") else {
        return;
    };
    use yolact_ros2::cuda::timing::{mib, GpuMemMeter};
    let img = test_image();
    let opts = InferOptions::default();
    let e = engine("yolact_plus_resnet50", &dev, DType::F32);
    e.infer_timed(&img, &opts).unwrap();
    let mut m = GpuMemMeter::for_device(&dev)
        .unwrap()
        .expect("a meter on CUDA");
    for _ in 0..3 {
        e.infer_timed(&img, &opts).unwrap();
        m.sample().unwrap();
    }
    let r = m.report().unwrap();
    eprintln!(
        "eager: peak {:.1} MiB ({:?}), device in use max {:.1} MiB",
        mib(r.peak_bytes),
        r.source,
        mib(r.device_used_max_bytes)
    );
    assert!(r.peak_bytes > 0 && r.device_used_max_bytes > 0, "{r:?}");
    // The synthetic ++R50 weights alone are over 100 MiB of f32, and they stay allocated.
    assert!(mib(r.peak_bytes) > 100.0, "{r:?}");
    match e.capture_network() {
        Ok(g) => {
            let mut m = GpuMemMeter::for_device(&dev).unwrap().unwrap();
            for _ in 0..3 {
                e.infer_timed_graph(&g, &img, &opts).unwrap();
                m.sample().unwrap();
            }
            let r = m.report().unwrap();
            eprintln!(
                "graph: peak {:.1} MiB ({:?}), device in use max {:.1} MiB",
                mib(r.peak_bytes),
                r.source,
                mib(r.device_used_max_bytes)
            );
            assert!(mib(r.peak_bytes) > 100.0, "{r:?}");
        }
        Err(err) => eprintln!("graph capture failed (its own test asserts it): {err}"),
    }
}

#[test]
fn a_small_graph_replays_like_eager_and_a_failed_capture_leaves_the_device_usable() {
    let Some(dev) =
        gpu("a_small_graph_replays_like_eager_and_a_failed_capture_leaves_the_device_usable")
    else {
        return;
    };
    use yolact_ros2::cuda::graph::{capture, CaptureMode};
    // select_device turned cudarc's per-buffer event tracking off (src/cuda/device.rs).
    let Device::Cuda(cd) = &dev else {
        panic!("gpu() gave {dev:?}")
    };
    assert!(!cd.is_event_tracking());
    let shape = (2usize, 3usize, 5usize, 7usize);
    let n = 2 * 3 * 5 * 7;
    let f = |x: &Tensor| -> candle_core::Result<Vec<Tensor>> {
        // A non-contiguous step too, so candle uploads layout parameters (from its cache).
        let y = x.transpose(2, 3)?.exp()?.affine(0.5, 1.0)?;
        Ok(vec![y.sum_keepdim(3)?, (x * 2.0)?])
    };
    // A device-to-host read inside the capture must fail cleanly.
    let e = capture(&dev, shape, DType::F32, 1, CaptureMode::ThreadLocal, |x| {
        let s = x.sum_all()?.to_scalar::<f32>()?;
        Ok(vec![(x + f64::from(s))?])
    })
    .err()
    .expect("a capture that reads the device back succeeded");
    eprintln!("failed capture, as expected: {e}");
    assert!(e.to_string().contains("CUDA graph"), "{e}");
    // The device still works eagerly.
    let a = Tensor::from_vec(uniform(n, 11, -1.0, 1.0), shape, &Device::Cpu).unwrap();
    let eager = f(&a.to_device(&dev).unwrap()).unwrap();
    let cpu = f(&a).unwrap();
    assert!(max_abs_diff(&eager[1], &cpu[1]) == 0.0);

    let g = capture(&dev, shape, DType::F32, 1, CaptureMode::ThreadLocal, f)
        .unwrap_or_else(|e| panic!("capture failed: {e}"));
    for seed in [11u64, 12, 11] {
        let x = Tensor::from_vec(uniform(n, seed, -1.0, 1.0), shape, &Device::Cpu).unwrap();
        let want = f(&x.to_device(&dev).unwrap()).unwrap();
        let got = g.run(&x.to_device(&dev).unwrap()).unwrap();
        for (w, o) in want.iter().zip(got) {
            assert_eq!(max_abs_diff(w, o), 0.0, "seed {seed}");
        }
    }
    // A wrong input shape is an error, not a corrupted replay.
    let bad = Tensor::zeros((1, 3, 5, 7), DType::F32, &dev).unwrap();
    assert!(g.run(&bad).is_err());
}

#[test]
fn graph_replay_gives_the_eager_raw_outputs_and_detections_on_two_images() {
    let Some(dev) = gpu("graph_replay_gives_the_eager_raw_outputs_and_detections_on_two_images")
    else {
        return;
    };
    let Device::Cuda(cd) = &dev else {
        panic!("gpu() gave {dev:?}")
    };
    let imgs = [test_image(), other_image()];
    let opts = InferOptions::default();
    for (config, dtype) in [
        ("yolact_plus_resnet50", DType::F32),
        ("yolact_resnet50", DType::F32),
        ("yolact_plus_resnet50", DType::F16),
    ] {
        let e = engine(config, &dev, dtype);
        let g = e
            .capture_network()
            .unwrap_or_else(|err| panic!("{config} {dtype:?}: capture failed: {err}"));
        // Graph A, graph B, graph A again: each replay must give that frame's own outputs.
        let mut graph_raw = Vec::new();
        for img in imgs.iter().chain(std::iter::once(&imgs[0])) {
            graph_raw.push(e.raw_graph(&g, img).unwrap());
        }
        for (i, gr) in graph_raw.iter().enumerate() {
            let er = e.raw(&imgs[i % 2]).unwrap();
            for (name, a, b) in [
                ("loc", &er.loc, &gr.loc),
                ("conf", &er.conf, &gr.conf),
                ("mask", &er.mask, &gr.mask),
                ("proto", &er.proto, &gr.proto),
            ] {
                let d = max_abs_diff(a, b);
                eprintln!("{config} {dtype:?} frame {i} {name}: graph vs eager max|diff| {d:.2e}");
                assert_eq!(d, 0.0, "{config} {dtype:?} frame {i} {name}");
            }
        }
        assert!(
            max_abs_diff(&graph_raw[0].conf, &graph_raw[1].conf) > 0.0,
            "the two images gave the same outputs"
        );
        for img in &imgs {
            let (de, _) = e.infer_timed(img, &opts).unwrap();
            let (dg, t) = e.infer_timed_graph(&g, img, &opts).unwrap();
            assert_eq!(de.items.len(), dg.items.len(), "{config}: detection count");
            for (a, b) in de.items.iter().zip(&dg.items) {
                assert_eq!(
                    (a.class_id, a.score.to_bits(), a.bbox.map(f32::to_bits)),
                    (b.class_id, b.score.to_bits(), b.bbox.map(f32::to_bits)),
                    "{config}: detections"
                );
            }
            assert!(t.backbone > std::time::Duration::ZERO, "{t:?}");
            assert_eq!(t.fpn + t.protonet + t.heads, std::time::Duration::ZERO);
        }
        // The last frame was a graph frame: drop the graph (its outputs, the graph-owned
        // allocations) and then the engine (its weights) with no eager frame in between, so any
        // event or free tied to the capture surfaces here, as a recorded error or a failure of the
        // next eager call, rather than being masked by one.
        drop(g);
        drop(e);
        dev.synchronize().unwrap_or_else(|err| {
            panic!("{config} {dtype:?}: after dropping graph and engine: {err}")
        });
        cd.cuda_stream()
            .context()
            .check_err()
            .unwrap_or_else(|err| panic!("{config} {dtype:?}: error recorded by a drop: {err}"));
        let fresh = engine(config, &dev, dtype);
        fresh
            .raw(&imgs[0])
            .unwrap_or_else(|err| panic!("{config} {dtype:?}: eager frame after the drops: {err}"));
    }
}
