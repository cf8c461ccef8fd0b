//! Our CUDA kernels, run in CI without a GPU: the launch plans of `src/cuda/plan.rs` (the very
//! code the CUDA runtime calls) drive `kernels/*.cu` compiled for the host by the emulator in
//! tests/kernel_emu, and the results are compared with the CPU implementations, which are
//! themselves tested against the reference.
//!
//! What this proves: the kernels' logic (ordering, ties, thresholds, border rules, shared-memory
//! protocol and barriers), the plans' argument lists, grids and zero-fills. What it cannot: PTX
//! code generation, timing, and races that need real concurrency (the emulator interleaves
//! threads only at barriers); tests/cuda_gpu.rs repeats the comparisons on a GPU.
//! Run: `cargo test --release --test it cuda_emu:: -- --nocapture`.

use crate::{kernel_emu, scenes};

use candle_core::{DType, Device, Tensor};
use kernel_emu::EmuHost;
use scenes::{nms_inputs, uniform};
use yolact_ros2::cuda::plan::{self, Arg, DeformDims, DevPtr, KernelHost, Launch};
use yolact_ros2::cuda::sources::{KernelSource, FAST_NMS};
use yolact_ros2::engine::backend::Backend;
use yolact_ros2::engine::cpu::Cpu;
use yolact_ros2::ops::dcn::DeformIm2col;
use yolact_ros2::ops::dcn_bwd::{DeformCol2im, DeformCol2imCoord};
use yolact_ros2::ops::interp::{resize_bilinear, resize_threshold_planes};
use yolact_ros2::post::fast_nms::{self, Kept, NmsKind, NmsOptions};
use yolact_ros2::post::masks::crop_masks;

fn host_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn every_kernel_module_compiles_for_the_emulator() {
    kernel_emu::compile_all().unwrap();
}

/// The emulated selection for one scene and option set (the default, shuffled schedule).
fn emulated_detect(boxes: &Tensor, conf: &Tensor, opts: &NmsOptions) -> Option<Vec<Kept>> {
    emulated_detect_with(EmuHost::new(), boxes, conf, opts)
}

fn emulated_detect_with(
    mut h: EmuHost,
    boxes: &Tensor,
    conf: &Tensor,
    opts: &NmsOptions,
) -> Option<Vec<Kept>> {
    let (p, c1) = conf.dims2().unwrap();
    let conf_p = h.upload(&host_vec(conf));
    let boxes_p = h.upload(&host_vec(boxes));
    plan::fast_nms_detect(&mut h, conf_p, boxes_p, p, c1, opts).unwrap()
}

#[test]
fn fast_nms_kernels_keep_exactly_what_the_host_keeps() {
    for (p, c1, seed) in [
        (2500usize, 81usize, 1u64),
        (700, 5, 3),
        (3, 81, 4),
        (1, 2, 5),
    ] {
        let (boxes, conf, _) = nms_inputs(p, c1, seed);
        // Coefficients that name their prior, so the host's Dets say which priors it kept.
        let ids: Vec<f32> = (0..p).map(|i| i as f32).collect();
        let coefs = Tensor::from_vec(ids, (p, 1), &Device::Cpu).unwrap();
        let all_boxes = host_vec(&boxes);
        for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
            for (conf_thresh, top_k, max_det) in [
                (0.05f32, 200usize, 100usize),
                (0.01, 1000, 1000),
                (0.3, 5, 3),
                (0.99, 200, 100),
            ] {
                let opts = NmsOptions {
                    kind,
                    conf_thresh,
                    top_k,
                    max_num_detections: max_det,
                    ..NmsOptions::default()
                };
                let what = format!(
                    "p={p} c1={c1} {kind:?} thresh={conf_thresh} top_k={top_k} max={max_det}"
                );
                let host = Cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
                let emu = emulated_detect(&boxes, &conf, &opts)
                    .unwrap_or_else(|| panic!("{what}: the kernels declined"));
                let host_priors: Vec<usize> =
                    host_vec(&host.coefs).iter().map(|&v| v as usize).collect();
                let emu_priors: Vec<usize> = emu.iter().map(|k| k.cand).collect();
                assert_eq!(emu_priors, host_priors, "{what}: priors");
                assert_eq!(
                    emu.iter().map(|k| k.class).collect::<Vec<_>>(),
                    host.classes,
                    "{what}: classes"
                );
                assert_eq!(
                    emu.iter().map(|k| k.score.to_bits()).collect::<Vec<_>>(),
                    host.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                    "{what}: scores"
                );
                let kept_boxes: Vec<f32> = emu_priors
                    .iter()
                    .flat_map(|&i| all_boxes[4 * i..4 * i + 4].to_vec())
                    .collect();
                assert_eq!(kept_boxes, host_vec(&host.boxes), "{what}: boxes");
                eprintln!("{what}: {} detections identical", emu.len());
            }
        }
    }
}

#[test]
fn fast_nms_results_do_not_depend_on_how_the_gpu_schedules_threads() {
    // Candidate slots come from atomics, so their order is the schedule's; the keep sets must not
    // be. Shuffled schedules hand the slots out in a different order every time.
    let (boxes, conf, _) = nms_inputs(1500, 21, 31);
    // Many priors share one score row exactly, so only the prior index breaks the ties.
    let rows = host_vec(&conf);
    let tied: Vec<f32> = (0..1500)
        .flat_map(|i| rows[(i % 40) * 21..(i % 40 + 1) * 21].to_vec())
        .collect();
    let conf = Tensor::from_vec(tied, (1500, 21), &Device::Cpu).unwrap();
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
        let opts = NmsOptions {
            kind,
            top_k: 50,
            ..NmsOptions::default()
        };
        let base = emulated_detect(&boxes, &conf, &opts).unwrap();
        assert!(!base.is_empty());
        let ids: Vec<f32> = (0..1500).map(|i| i as f32).collect();
        let coefs = Tensor::from_vec(ids, (1500, 1), &Device::Cpu).unwrap();
        let host = Cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
        let host_priors: Vec<usize> = host_vec(&host.coefs).iter().map(|&v| v as usize).collect();
        assert_eq!(
            base.iter().map(|k| k.cand).collect::<Vec<_>>(),
            host_priors,
            "{kind:?}: tied scores"
        );
        let ordered = emulated_detect_with(EmuHost::ordered(), &boxes, &conf, &opts).unwrap();
        assert_eq!(ordered, base, "{kind:?} in index order");
        for seed in [3u64, 77, 1234] {
            let got = emulated_detect_with(EmuHost::shuffled(seed), &boxes, &conf, &opts).unwrap();
            assert_eq!(got, base, "{kind:?} schedule seed {seed}");
        }
    }
}

#[test]
fn fast_nms_kernels_reject_nan_scores_and_decline_what_they_cannot_hold() {
    let (boxes, conf, coefs) = nms_inputs(300, 5, 9);
    let mut v = host_vec(&conf);
    v[5 * 123 + 3] = f32::NAN;
    let nan_conf = Tensor::from_vec(v, (300, 5), &Device::Cpu).unwrap();
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
        let opts = NmsOptions {
            kind,
            ..NmsOptions::default()
        };
        assert!(Cpu.detect(&boxes, &nan_conf, &coefs, &opts).is_err());
        let mut h = EmuHost::new();
        let (c, b) = (h.upload(&host_vec(&nan_conf)), h.upload(&host_vec(&boxes)));
        let e = plan::fast_nms_detect(&mut h, c, b, 300, 5, &opts).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }
    for opts in [
        NmsOptions {
            top_k: 1025,
            ..NmsOptions::default()
        },
        NmsOptions {
            kind: NmsKind::Traditional,
            ..NmsOptions::default()
        },
    ] {
        assert!(emulated_detect(&boxes, &conf, &opts).is_none());
    }
}

#[test]
fn per_class_fast_nms_kernel_matches_the_host_stage() {
    for (p, c1, seed, top_k) in [
        (3000usize, 81usize, 11u64, 200usize),
        (400, 6, 12, 1000),
        (50, 3, 13, 7),
    ] {
        let (boxes, conf, _) = nms_inputs(p, c1, seed);
        let cands = fast_nms::candidates(&conf, 0.05).unwrap();
        let n = cands.len();
        assert!(n > 0);
        let rows = Tensor::from_vec(cands.priors.clone(), n, &Device::Cpu).unwrap();
        let cand_boxes = host_vec(&boxes.index_select(&rows, 0).unwrap());
        let boxes4: Vec<[f32; 4]> = cand_boxes
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect();
        let host =
            fast_nms::fast_nms_keep(&cands.scores, cands.num_classes, &boxes4, top_k, 0.5).unwrap();
        let mut h = EmuHost::new();
        let (s, b) = (h.upload(&cands.scores), h.upload(&cand_boxes));
        let emu = plan::fast_nms_keep(&mut h, s, b, cands.num_classes, n, top_k, 0.5)
            .unwrap()
            .unwrap();
        assert_eq!(emu, host, "p={p} c1={c1} top_k={top_k}");
        eprintln!(
            "fast_nms_keep p={p} n={n} top_k={top_k}: {} kept, identical",
            host.iter().map(Vec::len).sum::<usize>()
        );
    }
}

/// Inputs of one deformable im2col: x in [-2, 2), offsets up to ± the image size (so samples
/// leave the image on every border) with a few NaNs, mask in [0, 1).
fn dcn_inputs(d: DeformDims, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = uniform(d.n * d.c * d.h * d.w, seed, -2.0, 2.0);
    let mut off = uniform(d.n * 18 * d.ho * d.wo, seed + 1, -(d.h as f32), d.h as f32);
    for i in (0..off.len()).step_by(37) {
        off[i] = f32::NAN;
    }
    let mask = uniform(d.n * 9 * d.ho * d.wo, seed + 2, 0.0, 1.0);
    (x, off, mask)
}

fn dims(n: usize, c: usize, h: usize, w: usize, stride: usize) -> DeformDims {
    DeformDims {
        n,
        c,
        h,
        w,
        ho: (h - 1) / stride + 1,
        wo: (w - 1) / stride + 1,
        stride,
    }
}

/// The CPU op's columns for the same inputs, in `dt`.
fn cpu_cols(d: DeformDims, (x, off, mask): (&[f32], &[f32], &[f32]), dt: DType) -> Vec<f64> {
    let cpu = Device::Cpu;
    let t = |v: &[f32], shape: (usize, usize, usize, usize)| {
        Tensor::from_vec(v.to_vec(), shape, &cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap()
    };
    let cols = t(x, (d.n, d.c, d.h, d.w))
        .apply_op3(
            &t(off, (d.n, 18, d.ho, d.wo)),
            &t(mask, (d.n, 9, d.ho, d.wo)),
            DeformIm2col { stride: d.stride },
        )
        .unwrap();
    cols.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn deformable_im2col_kernel_matches_the_cpu_op_in_f32_and_f64() {
    for (n, c, h, w, stride, seed) in [
        (1usize, 16usize, 9usize, 11usize, 1usize, 1u64),
        (2, 20, 7, 6, 2, 2),
        (1, 3, 1, 1, 2, 3),
        (1, 33, 5, 8, 1, 4),
    ] {
        let d = dims(n, c, h, w, stride);
        let (x, off, mask) = dcn_inputs(d, seed);
        let want32 = cpu_cols(d, (&x, &off, &mask), DType::F32);
        let mut hst = EmuHost::new();
        let ptrs = (hst.upload(&x), hst.upload(&off), hst.upload(&mask));
        let out = hst.alloc(d.cols_len() * 4, false).unwrap();
        plan::deform_im2col(&mut hst, "deform_im2col_f32", d, ptrs, out).unwrap();
        let got: Vec<f32> = hst.read_vec(out, d.cols_len());
        let diff32 = got
            .iter()
            .zip(&want32)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        // Same sampling rule and summation order, unfused arithmetic: bit for bit.
        assert_eq!(diff32, 0.0, "f32 {d:?}");

        let want64 = cpu_cols(d, (&x, &off, &mask), DType::F64);
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let mut hst = EmuHost::new();
        let ptrs = (
            hst.upload(&f64s(&x)),
            hst.upload(&f64s(&off)),
            hst.upload(&f64s(&mask)),
        );
        let out = hst.alloc(d.cols_len() * 8, false).unwrap();
        plan::deform_im2col(&mut hst, "deform_im2col_f64", d, ptrs, out).unwrap();
        let got: Vec<f64> = hst.read_vec(out, d.cols_len());
        assert_eq!(got, want64, "f64 {d:?}");
        eprintln!("deform_im2col {d:?}: f32 and f64 identical to the CPU op");
    }
}

/// A 16-bit float format: its name's kernel, encoder and decoder.
type Half16 = (&'static str, fn(f32) -> u16, fn(u16) -> f32);

const HALVES: [Half16; 2] = [
    (
        "deform_im2col_f16",
        |v| half::f16::from_f32(v).to_bits(),
        |b| half::f16::from_bits(b).to_f32(),
    ),
    (
        "deform_im2col_bf16",
        |v| half::bf16::from_f32(v).to_bits(),
        |b| half::bf16::from_bits(b).to_f32(),
    ),
];

#[test]
fn deformable_im2col_kernel_in_16_bit_floats_rounds_the_f32_result_once() {
    let d = dims(1, 20, 9, 7, 1);
    let (x, off, mask) = dcn_inputs(d, 7);
    for (entry, enc, dec) in HALVES {
        // Inputs that the 16-bit format holds exactly, so both sides see the same numbers; the
        // kernel computes in f32 and rounds once on store (NaN offsets stay NaN in both).
        let q = |v: &[f32]| -> Vec<f32> { v.iter().map(|&a| dec(enc(a))).collect() };
        let (xq, offq, maskq) = (q(&x), q(&off), q(&mask));
        let want: Vec<u16> = cpu_cols(d, (&xq, &offq, &maskq), DType::F32)
            .iter()
            .map(|&v| enc(v as f32))
            .collect();
        let enc_all = |v: &[f32]| v.iter().map(|&a| enc(a)).collect::<Vec<u16>>();
        let mut h = EmuHost::new();
        let ptrs = (
            h.upload(&enc_all(&xq)),
            h.upload(&enc_all(&offq)),
            h.upload(&enc_all(&maskq)),
        );
        let out = h.alloc(d.cols_len() * 2, false).unwrap();
        plan::deform_im2col(&mut h, entry, d, ptrs, out).unwrap();
        let got: Vec<u16> = h.read_vec(out, d.cols_len());
        // Equal as numbers (an empty sample is +0 on one side and -0 on the other).
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                dec(g) == dec(w),
                "{entry} element {i}: {} vs {}",
                dec(g),
                dec(w)
            );
        }
        eprintln!(
            "{entry}: {} columns identical to the rounded f32 CPU op",
            got.len()
        );
    }
}

#[test]
fn resize_kernel_is_bitwise_the_cpu_op() {
    for (planes, h, w, oh, ow) in [
        (3usize, 7usize, 5usize, 13usize, 11usize),
        (2, 20, 30, 7, 9),
        (1, 1, 1, 3, 4),
        (4, 18, 18, 35, 35),
    ] {
        let x = uniform(planes * h * w, (h * w) as u64, -2.0, 2.0);
        let t = Tensor::from_vec(x.clone(), (1, planes, h, w), &Device::Cpu).unwrap();
        let want = host_vec(&resize_bilinear(&t, oh, ow).unwrap());
        let mut hst = EmuHost::new();
        let src = hst.upload(&x);
        let dst = hst.alloc(planes * oh * ow * 4, false).unwrap();
        plan::resize_bilinear(
            &mut hst,
            "resize_bilinear_f32",
            (src, dst),
            planes,
            (h, w),
            (oh, ow),
        )
        .unwrap();
        let got: Vec<f32> = hst.read_vec(dst, planes * oh * ow);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{planes}x{h}x{w} -> {oh}x{ow}"
        );
    }
}

#[test]
fn mask_upsample_threshold_kernel_gives_the_cpu_bytes() {
    let (mut ones, mut total) = (0, 0);
    for (planes, h, w, oh, ow) in [
        (3usize, 138usize, 138usize, 48usize, 64usize),
        (2, 9, 7, 31, 17),
        (1, 1, 1, 2, 3),
    ] {
        // Soft masks in [0, 1) with exact 0.5s, where the strict threshold decides.
        let mut x = uniform(planes * h * w, (oh * ow) as u64, 0.0, 1.0);
        for v in x.iter_mut().step_by(5) {
            *v = 0.5;
        }
        let want = resize_threshold_planes(&x, h, w, oh, ow, 0.5).unwrap();
        let mut hst = EmuHost::new();
        let src = hst.upload(&x);
        let dst = hst.alloc(want.len(), false).unwrap();
        plan::resize_threshold(&mut hst, (src, dst), planes, (h, w), (oh, ow), 0.5).unwrap();
        let got: Vec<u8> = hst.read_vec(dst, want.len());
        assert_eq!(got, want, "{planes}x{h}x{w} -> {oh}x{ow}");
        ones += got.iter().filter(|&&b| b == 1).count();
        total += got.len();
    }
    assert!(
        ones > 0 && ones < total,
        "a test with only one value proves little"
    );
}

/// A test image with every byte value and edges in all three channels.
fn test_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 37 + y * 11) % 256) as u8,
            ((x * x + 3 * y) % 256) as u8,
            if (x / 4 + y / 3) % 2 == 0 { 255 } else { 0 },
        ])
    })
}

#[test]
fn preprocess_kernel_is_bitwise_the_cpu_transform() {
    for (name, size, (w, h)) in [
        ("yolact_resnet50", 550usize, (64u32, 48u32)),
        ("yolact_resnet50", 97, (31, 45)),
        ("yolact_darknet53", 97, (50, 21)),
        ("yolact_plus_resnet50", 61, (7, 5)),
    ] {
        let mut cfg = yolact_ros2::YolactConfig::by_name(name).unwrap();
        cfg.max_size = size;
        let img = test_image(w, h);
        let want = Cpu
            .preprocess(&img, &cfg, &Device::Cpu, DType::F32)
            .unwrap();
        let norm = plan::Normalize::for_transform(cfg.transform);
        for (entry, dt, bytes) in [
            ("preprocess_rgb_f32", DType::F32, 4usize),
            ("preprocess_rgb_f16", DType::F16, 2),
            ("preprocess_rgb_bf16", DType::BF16, 2),
        ] {
            let n = 3 * size * size;
            let mut hst = EmuHost::new();
            let src = hst.upload(img.as_raw());
            let dst = hst.alloc(n * bytes, false).unwrap();
            plan::preprocess_image(
                &mut hst,
                entry,
                (src, dst),
                (h as usize, w as usize),
                (size, size),
                norm,
            )
            .unwrap();
            // The CPU transform in f32, then candle's conversion to the network's dtype.
            let want_bits: Vec<u32> = match dt {
                DType::F32 => host_vec(&want).iter().map(|v| v.to_bits()).collect(),
                DType::F16 => want
                    .to_dtype(dt)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::f16>()
                    .unwrap()
                    .iter()
                    .map(|v| u32::from(v.to_bits()))
                    .collect(),
                _ => want
                    .to_dtype(dt)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::bf16>()
                    .unwrap()
                    .iter()
                    .map(|v| u32::from(v.to_bits()))
                    .collect(),
            };
            let got_bits: Vec<u32> = if bytes == 4 {
                hst.read_vec::<u32>(dst, n)
            } else {
                hst.read_vec::<u16>(dst, n)
                    .into_iter()
                    .map(u32::from)
                    .collect()
            };
            assert_eq!(got_bits.len(), want_bits.len());
            let bad = got_bits.iter().zip(&want_bits).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "{name} {w}x{h} -> {size} {entry}: first difference at {bad:?}"
            );
        }
    }
}

#[test]
fn mask_assembly_kernel_matches_sigmoid_and_crop_on_the_cpu() {
    let (n, hp, wp) = (7usize, 23usize, 29usize);
    let lin = uniform(hp * wp * n, 77, -8.0, 8.0);
    // Ordinary, inverted, out-of-range, degenerate and NaN boxes.
    let boxes: Vec<f32> = vec![
        0.1,
        0.2,
        0.6,
        0.7, //
        0.8,
        0.9,
        0.3,
        0.1, //
        -0.5,
        -0.2,
        1.4,
        0.5, //
        0.5,
        0.5,
        0.5,
        0.5, //
        0.0,
        0.0,
        1.0,
        1.0, //
        0.33,
        0.01,
        0.34,
        0.99, //
        f32::NAN,
        0.2,
        0.5,
        0.6,
    ];
    let cpu = Device::Cpu;
    let lin_t = Tensor::from_vec(lin.clone(), (hp * wp, n), &cpu).unwrap();
    let soft = candle_nn::ops::sigmoid(&lin_t)
        .unwrap()
        .t()
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((n, hp, wp))
        .unwrap();
    let boxes_t = Tensor::from_vec(boxes.clone(), (n, 4), &cpu).unwrap();
    for crop in [true, false] {
        let want = if crop {
            host_vec(&crop_masks(&soft, &boxes_t).unwrap())
        } else {
            host_vec(&soft)
        };
        let mut h = EmuHost::new();
        let ptrs = (
            h.upload(&lin),
            h.upload(&boxes),
            h.alloc(n * hp * wp * 4, false).unwrap(),
        );
        plan::mask_sigmoid_crop(&mut h, ptrs, n, (hp, wp), crop).unwrap();
        let got: Vec<f32> = h.read_vec(ptrs.2, n * hp * wp);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "crop={crop}");
    }
}

#[test]
fn decode_kernel_is_bitwise_the_cpu_decode() {
    let cfg = yolact_ros2::YolactConfig::by_name("yolact_resnet50").unwrap();
    let sizes = yolact_ros2::model::conv_sizes(&cfg, cfg.max_size, cfg.max_size);
    let priors = yolact_ros2::engine::priors::priors_tensor(&cfg, &sizes, &Device::Cpu).unwrap();
    let p = priors.dim(0).unwrap();
    let mut loc = uniform(p * 4, 5, -4.0, 4.0);
    loc[7] = f32::NAN;
    loc[9] = 80.0; // exp overflows to inf
    let loc_t = Tensor::from_vec(loc.clone(), (p, 4), &Device::Cpu).unwrap();
    let want = host_vec(&Cpu.decode_boxes(&loc_t, &priors).unwrap());
    let mut h = EmuHost::new();
    let ptrs = (
        h.upload(&loc),
        h.upload(&host_vec(&priors)),
        h.alloc(p * 16, false).unwrap(),
    );
    plan::decode_boxes(&mut h, ptrs, p).unwrap();
    let got: Vec<f32> = h.read_vec(ptrs.2, 4 * p);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "{p} priors");
}

// ---- the emulator's own checks: each must catch what it claims to ---------------------------

const SELFTEST: KernelSource = KernelSource {
    module: "emu_selftest",
    source: r#"
extern "C" __global__ void write_n(int* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = i;
}
extern "C" __global__ void early_exit_barrier(int* out) {
  if (threadIdx.x == 3) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
extern "C" __global__ void racy_neighbour(int* out, int salt) {
  __shared__ int s[64];
  s[threadIdx.x] = (int)threadIdx.x + salt;
  // Missing __syncthreads(): the neighbour may not have written yet.
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
  __syncthreads();
}
extern "C" __global__ void shared_reverse(const int* in, int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = in[blockIdx.x * 64 + threadIdx.x];
  __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];
}
"#,
    entries: &[
        "write_n",
        "early_exit_barrier",
        "racy_neighbour",
        "shared_reverse",
    ],
};

#[test]
fn emulator_catches_wrong_arguments_overruns_and_divergent_barriers() {
    let mut h = EmuHost::new();
    let buf = h.alloc(10 * 4, false).unwrap();
    // The plan-side argument list is checked against the kernel's C signature.
    let e = h
        .launch(
            &SELFTEST,
            "write_n",
            Launch::covering(10),
            &[Arg::Ptr(buf), Arg::I64(10)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("takes (pi)"), "{e}");
    let e = h
        .launch(
            &FAST_NMS,
            "fast_nms_keys",
            Launch::covering(1),
            &[Arg::Ptr(buf)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("fast_nms_keys takes"), "{e}");
    // Exactly the allocation: fine. One element more: caught.
    h.launch(
        &SELFTEST,
        "write_n",
        Launch::covering(10),
        &[Arg::Ptr(buf), Arg::I32(10)],
    )
    .unwrap();
    assert_eq!(h.read_vec::<i32>(buf, 10), (0..10).collect::<Vec<_>>());
    let e = h
        .launch(
            &SELFTEST,
            "write_n",
            Launch::covering(11),
            &[Arg::Ptr(buf), Arg::I32(11)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");

    let mut h = EmuHost::new();
    let out = h.alloc(32 * 4, true).unwrap();
    let e = h
        .launch(
            &SELFTEST,
            "early_exit_barrier",
            Launch { grid: 1, block: 32 },
            &[Arg::Ptr(out)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("waited at __syncthreads"), "{e}");
}

#[test]
fn emulator_barriers_order_shared_memory_like_a_gpu() {
    let mut h = EmuHost::new();
    let input: Vec<i32> = (0..128).collect();
    let src = h.upload(&input);
    let dst = h.alloc(128 * 4, false).unwrap();
    h.launch(
        &SELFTEST,
        "shared_reverse",
        Launch { grid: 2, block: 64 },
        &[Arg::Ptr(src), Arg::Ptr(dst)],
    )
    .unwrap();
    let got: Vec<i32> = h.read_vec(dst, 128);
    let want: Vec<i32> = (0..2)
        .flat_map(|b| (0..64).map(move |t| b * 64 + 63 - t))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn shuffled_schedules_expose_a_missing_barrier() {
    // Each launch writes values no earlier launch wrote (the salt), so a thread that reads its
    // neighbour's slot before the neighbour ran sees a stale value. Under a shuffled schedule some
    // thread always runs before its neighbour.
    let mut results = Vec::new();
    for (k, seed) in [1u64, 2, 3, 4].into_iter().enumerate() {
        let salt = 1000 * (k as i32 + 1);
        let mut h = EmuHost::shuffled(seed);
        let out = h.alloc(64 * 4, true).unwrap();
        h.launch(
            &SELFTEST,
            "racy_neighbour",
            Launch { grid: 1, block: 64 },
            &[Arg::Ptr(out), Arg::I32(salt)],
        )
        .unwrap();
        let got = h.read_vec::<i32>(out, 64);
        let correct: Vec<i32> = (0..64).map(|t| (t + 1) % 64 + salt).collect();
        results.push(got != correct);
    }
    assert!(results.iter().all(|&raced| raced), "{results:?}");
}

#[test]
fn uninitialised_device_memory_is_not_zero_in_the_emulator() {
    // Plans must ask for zeroed memory where a kernel relies on it; the emulator makes a missing
    // zero-fill visible.
    let mut h = EmuHost::new();
    let p = h.alloc(16, false).unwrap();
    assert!(h.read_vec::<u32>(p, 4).iter().all(|&v| v == u32::MAX));
    let z = h.alloc(16, true).unwrap();
    assert!(h.read_vec::<u32>(z, 4).iter().all(|&v| v == 0));
}

// ---- empty frames, grids smaller than their input, device indices (issue 16) -----------------

#[test]
fn zero_byte_allocations_are_errors_in_the_emulator_as_on_a_gpu() {
    let mut h = EmuHost::new();
    for zeroed in [false, true] {
        let e = h.alloc(0, zeroed).unwrap_err().to_string();
        assert!(e.contains("0-byte"), "{e}");
    }
}

#[test]
fn empty_inputs_go_through_every_plan_without_an_allocation_or_a_launch() {
    // Null inputs: a plan that launched or read anything for an empty input would fail here (or
    // read nothing sensible); one that allocated would hit the 0-byte error.
    let null = DevPtr::NULL;
    let mut h = EmuHost::new();
    for (nc, n) in [(80usize, 0usize), (0, 12), (0, 0)] {
        let kept = plan::fast_nms_keep(&mut h, null, null, nc, n, 200, 0.5)
            .unwrap()
            .expect("an empty input is not declined");
        assert_eq!(kept.len(), nc);
        assert!(kept.iter().all(Vec::is_empty));
    }
    // top_k = 0 keeps nothing, without touching the inputs either.
    let kept = plan::fast_nms_keep(&mut h, null, null, 3, 50, 0, 0.5).unwrap();
    assert_eq!(kept, Some(vec![Vec::new(); 3]));
    plan::decode_boxes(&mut h, (null, null, null), 0).unwrap();
    plan::mask_sigmoid_crop(&mut h, (null, null, null), 0, (138, 138), true).unwrap();
    plan::resize_threshold(&mut h, (null, null), 0, (138, 138), (480, 640), 0.5).unwrap();
    plan::resize_threshold(&mut h, (null, null), 4, (138, 138), (0, 640), 0.5).unwrap();
    plan::resize_bilinear(
        &mut h,
        "resize_bilinear_f32",
        (null, null),
        0,
        (9, 9),
        (18, 18),
    )
    .unwrap();
    let d = dims(0, 64, 9, 9, 1);
    plan::deform_im2col(&mut h, "deform_im2col_f32", d, (null, null, null), null).unwrap();
    // No priors: the device declines and the host path (which returns early) takes over.
    assert!(
        plan::fast_nms_detect(&mut h, null, null, 0, 81, &NmsOptions::default())
            .unwrap()
            .is_none()
    );
    assert!(h.launched.is_empty(), "launched {:?}", h.launched);
}

#[test]
fn a_frame_without_candidates_allocates_only_non_empty_buffers_and_keeps_nothing() {
    let (boxes, conf, coefs) = nms_inputs(500, 81, 21);
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
        // Softmax scores never reach 1, so no prior passes.
        let opts = NmsOptions {
            kind,
            conf_thresh: 1.0,
            ..NmsOptions::default()
        };
        let mut h = EmuHost::new();
        let (c, b) = (h.upload(&host_vec(&conf)), h.upload(&host_vec(&boxes)));
        let kept = plan::fast_nms_detect(&mut h, c, b, 500, 81, &opts).unwrap();
        assert_eq!(kept, Some(Vec::new()), "{kind:?}");
        assert!(h.launched.len() >= 2, "{kind:?}: {:?}", h.launched);
        // The host stage's empty result lives on the host, whatever the frame's device.
        let host = Cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
        assert!(host.is_empty() && host.boxes.device().is_cpu());
        assert_eq!(host.coefs.dims(), [0, 8]);
    }
    // top_k = 0 on the host path: no detections, no row tensor.
    let opts = NmsOptions {
        top_k: 0,
        ..NmsOptions::default()
    };
    let none = Cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
    assert!(none.is_empty());
    assert!(none.select(&[]).unwrap().is_empty());
}

#[test]
fn grid_stride_kernels_cover_inputs_larger_than_their_grid() {
    // One block of 256 threads for 2500 priors: without the stride loop in fast_nms_prepare,
    // priors past the first 256 would never become candidates.
    let (boxes, conf, _) = nms_inputs(2500, 21, 41);
    let ids: Vec<f32> = (0..2500).map(|i| i as f32).collect();
    let coefs = Tensor::from_vec(ids, (2500, 1), &Device::Cpu).unwrap();
    for kind in [NmsKind::Fast, NmsKind::FastCrossClass] {
        let opts = NmsOptions {
            kind,
            ..NmsOptions::default()
        };
        let host = Cpu.detect(&boxes, &conf, &coefs, &opts).unwrap();
        let host_priors: Vec<usize> = host_vec(&host.coefs).iter().map(|&v| v as usize).collect();
        assert!(host_priors.iter().any(|&i| i >= 256), "{host_priors:?}");
        let mut one_block = EmuHost::new();
        one_block.max_grid = Some((1, &["fast_nms_prepare"]));
        let got = emulated_detect_with(one_block, &boxes, &conf, &opts).unwrap();
        assert_eq!(
            got.iter().map(|k| k.cand).collect::<Vec<_>>(),
            host_priors,
            "{kind:?} on one block"
        );
    }
    // The box decoder and the mask kernel stride the same way.
    let p = 3000;
    let loc = uniform(p * 4, 8, -2.0, 2.0);
    let pri = uniform(p * 4, 9, 0.1, 0.9);
    let decode = |max_grid: Option<(u32, &'static [&'static str])>| {
        let mut h = EmuHost::new();
        h.max_grid = max_grid;
        let ptrs = (
            h.upload(&loc),
            h.upload(&pri),
            h.alloc(p * 16, false).unwrap(),
        );
        plan::decode_boxes(&mut h, ptrs, p).unwrap();
        h.read_vec::<u32>(ptrs.2, 4 * p)
    };
    assert_eq!(decode(Some((1, &["decode_boxes"]))), decode(None));
}

/// The emulator with one device read corrupted: `bad` replaces the i32 at `index` of the
/// `nth` read (0-based), as a kernel bug would.
struct CorruptRead {
    inner: EmuHost,
    nth: usize,
    index: usize,
    bad: i32,
    reads: usize,
}

impl KernelHost for CorruptRead {
    fn alloc(&mut self, bytes: usize, zeroed: bool) -> yolact_ros2::error::Result<DevPtr> {
        self.inner.alloc(bytes, zeroed)
    }
    fn launch(
        &mut self,
        src: &KernelSource,
        entry: &str,
        launch: Launch,
        args: &[Arg],
    ) -> yolact_ros2::error::Result<()> {
        self.inner.launch(src, entry, launch, args)
    }
    fn read(&mut self, ptr: DevPtr, bytes: usize) -> yolact_ros2::error::Result<Vec<u8>> {
        let mut b = self.inner.read(ptr, bytes)?;
        if self.reads == self.nth {
            b[4 * self.index..4 * self.index + 4].copy_from_slice(&self.bad.to_ne_bytes());
        }
        self.reads += 1;
        Ok(b)
    }
}

#[test]
fn device_nms_indices_out_of_range_are_errors_not_gathers() {
    let (boxes, conf, _) = nms_inputs(700, 5, 3);
    let (p, nc) = (700usize, 4usize);
    let opts = NmsOptions::default();
    let run = |index: usize, bad: i32| {
        let mut h = CorruptRead {
            inner: EmuHost::new(),
            nth: 0,
            index,
            bad,
            reads: 0,
        };
        let (c, b) = (
            h.inner.upload(&host_vec(&conf)),
            h.inner.upload(&host_vec(&boxes)),
        );
        plan::fast_nms_detect(&mut h, c, b, p, 5, &opts)
    };
    // The result block is [count, nan, idx[M], cls[M], score[M]]; M = max_num_detections.
    let m = opts.max_num_detections;
    let clean = run(1, 0).unwrap().unwrap();
    assert!(!clean.is_empty());
    for (index, bad, what) in [
        (2, p as i32, "prior index 700"),
        (2, -3, "prior index -3"),
        (2 + m, nc as i32, "class 4"),
    ] {
        let e = run(index, bad).unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("not in 0.."), "{e}");
    }
    // The per-class seam: its first read is the kept indices.
    let cands = fast_nms::candidates(&conf, 0.05).unwrap();
    let n = cands.len();
    let rows = Tensor::from_vec(cands.priors.clone(), n, &Device::Cpu).unwrap();
    let cand_boxes = host_vec(&boxes.index_select(&rows, 0).unwrap());
    let mut h = CorruptRead {
        inner: EmuHost::new(),
        nth: 0,
        index: 0,
        bad: n as i32,
        reads: 0,
    };
    let (s, b) = (h.inner.upload(&cands.scores), h.inner.upload(&cand_boxes));
    let e = plan::fast_nms_keep(&mut h, s, b, cands.num_classes, n, 200, 0.5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("candidate index") && e.contains("not in 0.."),
        "{e}"
    );
}

/// The CPU backward ops' gradients for the same inputs, in `dt`: (∂x, ∂offset‖∂mask).
fn cpu_dcn_grads(
    d: DeformDims,
    (x, off, mask, gcol): (&[f32], &[f32], &[f32], &[f32]),
    dt: DType,
) -> (Vec<f64>, Vec<f64>) {
    let cpu = Device::Cpu;
    let t = |v: &[f32], shape: &[usize]| {
        Tensor::from_vec(v.to_vec(), shape, &cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap()
    };
    let (p, c9) = (d.ho * d.wo, d.c * 9);
    let gcol = t(gcol, &[d.n, c9, p]);
    let offset = t(off, &[d.n, 18, d.ho, d.wo]);
    let mask = t(mask, &[d.n, 9, d.ho, d.wo]);
    let col2im = DeformCol2im {
        stride: d.stride,
        h: d.h,
        w: d.w,
    };
    let gx = gcol.apply_op3_no_bwd(&offset, &mask, &col2im).unwrap();
    let offmask = Tensor::cat(&[&offset, &mask], 1).unwrap();
    let coord = DeformCol2imCoord { stride: d.stride };
    let gom = t(x, &[d.n, d.c, d.h, d.w])
        .apply_op3_no_bwd(&offmask, &gcol, &coord)
        .unwrap();
    let v = |t: Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (v(gx), v(gom))
}

/// Runs both backward kernels on `h` in f32 or f64 (`wide`) and returns (∂x, ∂offset‖∂mask).
fn emu_dcn_grads(
    mut h: EmuHost,
    d: DeformDims,
    (x, off, mask, gcol): (&[f32], &[f32], &[f32], &[f32]),
    wide: bool,
) -> (Vec<f64>, Vec<f64>) {
    let offmask: Vec<f32> = (0..d.n)
        .flat_map(|b| {
            let p = d.ho * d.wo;
            off[b * 18 * p..(b + 1) * 18 * p]
                .iter()
                .chain(&mask[b * 9 * p..(b + 1) * 9 * p])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let (gx_len, gom_len) = (d.n * d.c * d.h * d.w, d.n * 27 * d.ho * d.wo);
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    if wide {
        let (pg, po, pm) = (
            h.upload(&f64s(gcol)),
            h.upload(&f64s(off)),
            h.upload(&f64s(mask)),
        );
        let gx = h.alloc(gx_len * 8, true).unwrap();
        plan::deform_col2im(&mut h, "deform_col2im_f64", d, (pg, po, pm), gx).unwrap();
        let (px, pom) = (h.upload(&f64s(x)), h.upload(&f64s(&offmask)));
        let gom = h.alloc(gom_len * 8, false).unwrap();
        plan::deform_col2im_coord(&mut h, "deform_col2im_coord_f64", d, (px, pom, pg), gom)
            .unwrap();
        (h.read_vec(gx, gx_len), h.read_vec(gom, gom_len))
    } else {
        let (pg, po, pm) = (h.upload(gcol), h.upload(off), h.upload(mask));
        let gx = h.alloc(gx_len * 4, true).unwrap();
        plan::deform_col2im(&mut h, "deform_col2im_f32", d, (pg, po, pm), gx).unwrap();
        let (px, pom) = (h.upload(x), h.upload(&offmask));
        let gom = h.alloc(gom_len * 4, false).unwrap();
        plan::deform_col2im_coord(&mut h, "deform_col2im_coord_f32", d, (px, pom, pg), gom)
            .unwrap();
        let up = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        (up(h.read_vec(gx, gx_len)), up(h.read_vec(gom, gom_len)))
    }
}

const DCN_BWD_ENTRIES: [&str; 4] = [
    "deform_col2im_f32",
    "deform_col2im_f64",
    "deform_col2im_coord_f32",
    "deform_col2im_coord_f64",
];

/// The DCN backward kernels against the CPU backward ops. The offset/mask kernel sums in the CPU's
/// order: bit for bit. The input gradient uses atomic adds: bit for bit when the threads run in
/// index order (the CPU's order per channel), within rounding under a shuffled schedule.
#[test]
fn deformable_backward_kernels_match_the_cpu_ops() {
    for (n, c, h, w, stride, seed, snap) in [
        (1usize, 16usize, 9usize, 11usize, 1usize, 1u64, false),
        (2, 20, 7, 6, 2, 2, false),
        (1, 3, 5, 5, 1, 3, true),
        (1, 33, 5, 8, 1, 4, true),
    ] {
        let d = dims(n, c, h, w, stride);
        let (x, mut off, mask) = dcn_inputs(d, seed);
        if snap {
            // Integers and halves: samples exactly on -1, on H - 1 and on integer positions.
            for v in off.iter_mut() {
                *v = (*v * 2.0 / d.h as f32 * 3.0).round() / 2.0;
            }
        }
        let gcol = uniform(d.cols_len(), seed + 9, -1.0, 1.0);
        let ins = (&x[..], &off[..], &mask[..], &gcol[..]);
        for wide in [false, true] {
            let dt = if wide { DType::F64 } else { DType::F32 };
            let (want_gx, want_gom) = cpu_dcn_grads(d, ins, dt);
            let (gx, gom) = emu_dcn_grads(EmuHost::ordered(), d, ins, wide);
            assert_eq!(gom, want_gom, "offset/mask {d:?} {dt:?}");
            assert_eq!(gx, want_gx, "input, ordered schedule {d:?} {dt:?}");
            // A single block strides over all items: the grid-stride loops must cover them.
            let mut one_block = EmuHost::new();
            one_block.max_grid = Some((1, &DCN_BWD_ENTRIES));
            for (sched, host) in [("shuffled", EmuHost::new()), ("one block", one_block)] {
                let (gx, gom) = emu_dcn_grads(host, d, ins, wide);
                assert_eq!(gom, want_gom, "offset/mask, {sched} {d:?} {dt:?}");
                let scale = want_gx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = gx
                    .iter()
                    .zip(&want_gx)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                    / scale;
                let tol = if wide { 1e-13 } else { 1e-5 };
                assert!(
                    err < tol,
                    "input, {sched} {d:?} {dt:?}: relative error {err}"
                );
                assert!(gom.iter().any(|&v| v != 0.0) && scale > 0.0);
            }
        }
        eprintln!("deform backward {d:?}: offset/mask identical, input identical in index order");
    }
}

#[test]
fn bce_kernel_matches_the_cpu_loss_op() {
    use yolact_ros2::train::loss::bce::binary_cross_entropy;
    // Probabilities over (0, 1) plus the saturated and floor cases: exactly 0 and 1 (the -100
    // floor on either log), denormal-small, one ulp below 1; soft and hard targets.
    let mut p = uniform(997, 31, 0.0, 1.0);
    p.extend([0.0, 1.0, 1e-40, 1.0 - f32::EPSILON / 2.0, 0.5, 1e-7]);
    let n = p.len();
    let t: Vec<f32> = (0..n)
        .map(|i| match i % 3 {
            0 => 0.0,
            1 => 1.0,
            _ => 0.3,
        })
        .collect();
    let cpu = Device::Cpu;
    let want = host_vec(
        &binary_cross_entropy(
            &Tensor::from_vec(p.clone(), n, &cpu).unwrap(),
            &Tensor::from_vec(t.clone(), n, &cpu).unwrap(),
        )
        .unwrap(),
    );
    let mut h = EmuHost::new();
    let ptrs = (h.upload(&p), h.upload(&t), h.alloc(n * 4, false).unwrap());
    plan::bce(&mut h, ptrs, n).unwrap();
    let got: Vec<f32> = h.read_vec(ptrs.2, n);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // The same libm on both sides here; a GPU's logf may differ in the last bits.
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "element {i}: p {} t {}: kernel {g}, cpu {w}",
            p[i],
            t[i]
        );
    }
    assert!(want.contains(&100.0), "the floor case is covered");
    // Nothing to compute: no launch.
    let mut h = EmuHost::new();
    plan::bce(&mut h, (DevPtr::NULL, DevPtr::NULL, DevPtr::NULL), 0).unwrap();
}
