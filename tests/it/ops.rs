//! Integration tests for the custom ops: DCNv2 and the half-pixel bilinear resize, against
//! independent float64 loops and against PyTorch / torchvision fixtures
//! (tools/make_ops_fixtures.py; see tests/fixtures/ops/README.md).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use yolact_ros2::ops::dcn::{modulated_deform_conv2d, DeformIm2col};
use yolact_ros2::ops::interp::resize_bilinear;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/ops/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture loads")
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Deterministic uniform values in [lo, hi) (64-bit LCG, high bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

// ------------------------------------------------------------------------------------------------
// DCN

struct DcnCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    s: usize,
    x: Vec<f32>,
    off: Vec<f32>,
    mask: Vec<f32>,
    wt: Vec<f32>,
    bias: Vec<f32>,
}

impl DcnCase {
    fn out_hw(&self) -> (usize, usize) {
        ((self.h - 1) / self.s + 1, (self.w - 1) / self.s + 1)
    }

    fn random(n: usize, c: usize, h: usize, w: usize, o: usize, s: usize, seed: u64) -> Self {
        let mut r = Lcg(seed);
        let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
        let x = r.vec(n * c * h * w, -2.0, 2.0);
        // Offsets up to +-25 px (most land outside), some small, some exact halves / integers
        // to hit the -1 and H-1 borders exactly.
        let off = (0..n * 18 * ho * wo)
            .map(|_| {
                let kind = r.next(0.0, 1.0);
                let v = if kind < 0.4 {
                    r.next(-25.0, 25.0)
                } else {
                    r.next(-3.0, 3.0)
                };
                if kind > 0.8 {
                    (v * 2.0).round() / 2.0
                } else {
                    v
                }
            })
            .collect();
        let mask = r.vec(n * 9 * ho * wo, 0.0, 1.0);
        let wt = r.vec(o * c * 9, -0.5, 0.5);
        let bias = r.vec(o, -1.0, 1.0);
        Self {
            n,
            c,
            h,
            w,
            o,
            s,
            x,
            off,
            mask,
            wt,
            bias,
        }
    }

    fn tensors(&self, dtype: DType) -> [Tensor; 5] {
        let (ho, wo) = self.out_hw();
        let d = Device::Cpu;
        let t = |v: &Vec<f32>, shape: &[usize]| {
            Tensor::from_vec(v.clone(), shape, &d)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        [
            t(&self.x, &[self.n, self.c, self.h, self.w]),
            t(&self.off, &[self.n, 18, ho, wo]),
            t(&self.mask, &[self.n, 9, ho, wo]),
            t(&self.wt, &[self.o, self.c, 3, 3]),
            t(&self.bias, &[self.o]),
        ]
    }

    /// Float64 evaluation of docs/model.md §3: one bilinear sample per (output, channel, tap).
    fn naive(&self) -> Vec<f64> {
        let (ho, wo) = self.out_hw();
        let (h, w) = (self.h as i64, self.w as i64);
        let mut out = vec![0.0f64; self.n * self.o * ho * wo];
        for b in 0..self.n {
            for oc in 0..self.o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = self.bias[oc] as f64;
                        for ci in 0..self.c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let k = i * 3 + j;
                                    let at = |ch: usize, nch: usize, v: &Vec<f32>| {
                                        v[((b * nch + ch) * ho + oy) * wo + ox] as f64
                                    };
                                    let dy = at(2 * k, 18, &self.off);
                                    let dx = at(2 * k + 1, 18, &self.off);
                                    let m = at(k, 9, &self.mask);
                                    let py = (oy * self.s) as f64 - 1.0 + i as f64 + dy;
                                    let px = (ox * self.s) as f64 - 1.0 + j as f64 + dx;
                                    let val = if py <= -1.0
                                        || px <= -1.0
                                        || py >= h as f64
                                        || px >= w as f64
                                    {
                                        0.0
                                    } else {
                                        let (y0, x0) = (py.floor() as i64, px.floor() as i64);
                                        let (ly, lx) = (py - y0 as f64, px - x0 as f64);
                                        let get = |yy: i64, xx: i64| {
                                            if yy < 0 || xx < 0 || yy >= h || xx >= w {
                                                0.0
                                            } else {
                                                self.x[((b * self.c + ci) * self.h + yy as usize)
                                                    * self.w
                                                    + xx as usize]
                                                    as f64
                                            }
                                        };
                                        (1.0 - ly) * (1.0 - lx) * get(y0, x0)
                                            + (1.0 - ly) * lx * get(y0, x0 + 1)
                                            + ly * (1.0 - lx) * get(y0 + 1, x0)
                                            + ly * lx * get(y0 + 1, x0 + 1)
                                    };
                                    let wv = self.wt[((oc * self.c + ci) * 3 + i) * 3 + j] as f64;
                                    acc += wv * m * val;
                                }
                            }
                        }
                        out[((b * self.o + oc) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        out
    }
}

fn check_against_naive(case: &DcnCase, dtype: DType, tol: f64) {
    let [x, off, mask, wt, bias] = case.tensors(dtype);
    let y = modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, case.s).unwrap();
    let (ho, wo) = case.out_hw();
    assert_eq!(y.dims(), &[case.n, case.o, ho, wo]);
    let got = y
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let want = case.naive();
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max <= tol,
        "stride {} {dtype:?}: max |diff| {max} > {tol}",
        case.s
    );
    // The test is only meaningful if offsets push samples both inside and outside.
    let outside = case.off.chunks(1).filter(|v| v[0].abs() > 10.0).count();
    assert!(outside > case.off.len() / 5);
}

#[test]
fn dcn_matches_naive_f64_loop_stride1() {
    let case = DcnCase::random(2, 3, 7, 9, 5, 1, 11);
    check_against_naive(&case, DType::F32, 1e-4);
    check_against_naive(&case, DType::F64, 1e-10);
}

#[test]
fn dcn_matches_naive_f64_loop_stride2() {
    let case = DcnCase::random(2, 3, 7, 9, 5, 2, 12);
    check_against_naive(&case, DType::F32, 1e-4);
    check_against_naive(&case, DType::F64, 1e-10);
    let case = DcnCase::random(1, 4, 10, 6, 3, 2, 13);
    check_against_naive(&case, DType::F32, 1e-4);
}

#[test]
fn dcn_matches_torchvision_fixtures() {
    let fx = fixture("dcn");
    let mut cases: Vec<&str> = fx.keys().filter_map(|k| k.strip_suffix(".out")).collect();
    cases.sort();
    assert_eq!(cases.len(), 4, "fixture cases: {cases:?}");
    for case in cases {
        let g = |k: &str| fx.get(&format!("{case}.{k}")).unwrap();
        let stride = g("stride").to_vec1::<i64>().unwrap()[0] as usize;
        let y = modulated_deform_conv2d(
            g("x"),
            g("offset"),
            g("mask"),
            g("weight"),
            g("bias"),
            stride,
        )
        .unwrap();
        let d = max_abs_diff(&y, g("out"));
        eprintln!("dcn fixture {case}: max |diff| vs torchvision {d:e}");
        assert!(d <= 1e-4, "{case}: max |diff| {d}");
    }
}

#[test]
fn dcn_zero_offset_unit_mask_equals_conv2d() {
    for s in [1, 2] {
        let case = DcnCase::random(2, 6, 9, 7, 4, s, 20 + s as u64);
        let [x, off, mask, wt, bias] = case.tensors(DType::F32);
        let off = off.zeros_like().unwrap();
        let mask = mask.ones_like().unwrap();
        let y = modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, s).unwrap();
        let conv = x
            .conv2d(&wt, 1, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, case.o, 1, 1)).unwrap())
            .unwrap();
        let d = max_abs_diff(&y, &conv);
        assert!(d <= 1e-5, "stride {s}: max |diff| {d}");
    }
}

#[test]
fn dcn_columns_layout_is_channel_major_tap_minor() {
    // With zero offsets and mask 1, column row c*9 + k at pixel p holds x[c] at tap k's position.
    let (c, h, w) = (2usize, 4usize, 5usize);
    let x: Vec<f32> = (0..c * h * w).map(|v| v as f32 + 1.0).collect();
    let xt = Tensor::from_vec(x.clone(), (1, c, h, w), &Device::Cpu).unwrap();
    let off = Tensor::zeros((1, 18, h, w), DType::F32, &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 9, h, w), DType::F32, &Device::Cpu).unwrap();
    let cols = xt
        .apply_op3_no_bwd(&off, &mask, &DeformIm2col { stride: 1 })
        .unwrap();
    assert_eq!(cols.dims(), &[1, c * 9, h * w]);
    let got = flat(&cols);
    for ci in 0..c {
        for k in 0..9 {
            for p in 0..h * w {
                let (y, xx) = (
                    (p / w) as i64 + (k / 3) as i64 - 1,
                    (p % w) as i64 + (k % 3) as i64 - 1,
                );
                let want = if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
                    0.0
                } else {
                    x[(ci * h + y as usize) * w + xx as usize]
                };
                assert_eq!(got[(ci * 9 + k) * h * w + p], want, "c {ci} k {k} p {p}");
            }
        }
    }
}

#[test]
fn dcn_rejects_bad_shapes_with_errors() {
    let d = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &d).unwrap();
    let (x, off, mask, wt, bias) = (
        z(&[1, 3, 7, 9]),
        z(&[1, 18, 7, 9]),
        z(&[1, 9, 7, 9]),
        z(&[4, 3, 3, 3]),
        z(&[4]),
    );
    assert!(modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, 1).is_ok());
    let bad = [
        modulated_deform_conv2d(&x, &z(&[1, 17, 7, 9]), &mask, &wt, &bias, 1),
        modulated_deform_conv2d(&x, &off, &z(&[1, 8, 7, 9]), &wt, &bias, 1),
        modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, 0),
        modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, 2),
        modulated_deform_conv2d(&z(&[3, 7, 9]), &off, &mask, &wt, &bias, 1),
        modulated_deform_conv2d(&x, &z(&[1, 18, 7]), &mask, &wt, &bias, 1),
        modulated_deform_conv2d(&x, &z(&[2, 18, 7, 9]), &mask, &wt, &bias, 1),
        modulated_deform_conv2d(&x, &off, &mask, &z(&[4, 2, 3, 3]), &bias, 1),
        modulated_deform_conv2d(&x, &off, &mask, &z(&[4, 3, 1, 1]), &bias, 1),
        modulated_deform_conv2d(&x, &off, &mask, &wt, &z(&[5]), 1),
        modulated_deform_conv2d(&x, &off.to_dtype(DType::F64).unwrap(), &mask, &wt, &bias, 1),
        modulated_deform_conv2d(&z(&[1, 3, 0, 9]), &off, &mask, &wt, &bias, 1),
    ];
    for (i, r) in bad.iter().enumerate() {
        assert!(r.is_err(), "case {i} should be an error");
    }
}

#[test]
fn dcn_strided_inputs_match_contiguous() {
    let case = DcnCase::random(1, 3, 8, 8, 2, 1, 31);
    let [x, off, mask, wt, bias] = case.tensors(DType::F32);
    let a = modulated_deform_conv2d(&x, &off, &mask, &wt, &bias, 1).unwrap();
    // Same values through transposed (non-contiguous) views.
    let xt = x
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    let ot = off
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    let mt = mask
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert!(!xt.is_contiguous());
    let b = modulated_deform_conv2d(&xt, &ot, &mt, &wt, &bias, 1).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Bilinear resize

/// The generator of tools/make_ops_fixtures.py: exact in f32.
fn gen_input(n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = i.wrapping_mul(2654435761) & 0xFFFF_FFFF;
            ((h >> 8) as f64 / (1u64 << 24) as f64 * 4.0 - 2.0) as f32
        })
        .collect()
}

#[test]
fn resize_matches_torch_fixtures() {
    let fx = fixture("interp");
    let mut cases: Vec<&str> = fx.keys().filter_map(|k| k.strip_suffix(".shape")).collect();
    cases.sort();
    assert_eq!(cases.len(), 9, "fixture cases: {cases:?}");
    for case in cases {
        let g = |k: &str| fx.get(&format!("{case}.{k}")).unwrap();
        let s: Vec<usize> = g("shape")
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect();
        let (n, c, h, w, oh, ow) = (s[0], s[1], s[2], s[3], s[4], s[5]);
        let data = gen_input(n * c * h * w);
        assert_eq!(
            &data[..64.min(data.len())],
            &flat(g("x_head"))[..],
            "{case}"
        );
        let x = Tensor::from_vec(data, (n, c, h, w), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, oh, ow).unwrap();
        assert_eq!(y.dims(), &[n, c, oh, ow]);
        let y = y
            .index_select(g("rows"), 2)
            .unwrap()
            .index_select(g("cols"), 3)
            .unwrap();
        let want = g("y");
        let range = want.max_all().unwrap().to_scalar::<f32>().unwrap()
            - want.min_all().unwrap().to_scalar::<f32>().unwrap();
        let d = max_abs_diff(&y, want);
        eprintln!("resize fixture {case}: max |diff| vs torch {d:e}");
        assert!(
            d <= 1e-5 * range.max(1.0),
            "{case}: max |diff| {d} (range {range})"
        );
    }
}

/// Real-size cases against torchvision (too large to commit); see tools/make_ops_fixtures.py
/// `--big`. Skips when YOLACT_OPS_BIG is unset.
#[test]
#[ignore = "needs YOLACT_OPS_BIG, a real-size fixture made by tools/make_ops_fixtures.py --big"]
fn dcn_matches_torchvision_big() {
    let Ok(path) = std::env::var("YOLACT_OPS_BIG") else {
        eprintln!("YOLACT_OPS_BIG not set; skipping");
        return;
    };
    let fx = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut cases: Vec<&str> = fx.keys().filter_map(|k| k.strip_suffix(".out")).collect();
    cases.sort();
    assert!(!cases.is_empty());
    for case in cases {
        let g = |k: &str| fx.get(&format!("{case}.{k}")).unwrap();
        let stride = g("stride").to_vec1::<i64>().unwrap()[0] as usize;
        let y = modulated_deform_conv2d(
            g("x"),
            g("offset"),
            g("mask"),
            g("weight"),
            g("bias"),
            stride,
        )
        .unwrap();
        let want = g("out");
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_abs_diff(&y, want);
        eprintln!("dcn big {case}: max |diff| {d:e}, max |out| {scale}");
        assert!(d <= 1e-5 * scale.max(1.0) * 10.0, "{case}: {d}");
    }
}
