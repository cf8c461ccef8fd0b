//! Gradients through every layer of the training pass (issue 12): the custom backward rules
//! (DCNv2 input / offset / mask, the half-pixel bilinear resize, the first-maximum pools, ReLU)
//! against float64 finite differences and against PyTorch autograd fixtures
//! (tools/make_grad_fixtures.py, tests/fixtures/ops/README.md), and a synthetic YOLACT / YOLACT++
//! whose every trainable tensor must receive a non-zero gradient, in the counts a reference
//! training step gives (140 for YOLACT++ R50 and 89 for YOLACT R50 with frozen BN).
//! Run: `cargo test --release --test it train_grad::`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use yolact_ros2::config::YolactConfig;
use yolact_ros2::model::{TrainBn, Yolact};
use yolact_ros2::ops::dcn::modulated_deform_conv2d;
use yolact_ros2::ops::interp::resize_bilinear;
use yolact_ros2::ops::{pool, relu};
use yolact_ros2::weights::{synth, WeightStore};

fn dev() -> Device {
    Device::Cpu
}

fn vec64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// max |a − b| / max |b| (a norm-wise relative error; `b` is the reference).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(scale > 0.0, "reference gradient is all zero");
    d / scale
}

/// Deterministic uniform values in [lo, hi) (64-bit LCG, high bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

/// An f64 leaf tensor.
fn leaf(v: &[f64], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(v, shape, &dev()).unwrap()).unwrap()
}

/// Autograd gradients of `loss(inputs)` for every input, and the finite-difference gradients of
/// the same scalar: central with step `h` when `forward_only` is false, else one-sided
/// (f(x + h) − f(x)) / h, the right derivative.
fn check_grads(
    inputs: &[(Vec<f64>, Vec<usize>)],
    loss: impl Fn(&[Tensor]) -> Tensor,
    h: f64,
    forward_only: &[bool],
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let vars: Vec<Var> = inputs.iter().map(|(v, s)| leaf(v, s)).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&ts).backward().unwrap();
    let eval = |i: usize, j: usize, delta: f64| -> f64 {
        let ts: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(k, (v, s))| {
                let mut v = v.clone();
                if k == i {
                    v[j] += delta;
                }
                Tensor::from_slice(&v, s.as_slice(), &dev()).unwrap()
            })
            .collect();
        loss(&ts).to_scalar::<f64>().unwrap()
    };
    let base = loss(&ts).to_scalar::<f64>().unwrap();
    inputs
        .iter()
        .enumerate()
        .map(|(i, (v, _))| {
            let got = vec64(grads.get(vars[i].as_tensor()).expect("a gradient"));
            let fd = (0..v.len())
                .map(|j| {
                    if forward_only[i] {
                        (eval(i, j, h) - base) / h
                    } else {
                        (eval(i, j, h) - eval(i, j, -h)) / (2.0 * h)
                    }
                })
                .collect();
            (got, fd)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// DCN

struct Dcn {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    s: usize,
}

impl Dcn {
    fn out_hw(&self) -> (usize, usize) {
        ((self.h - 1) / self.s + 1, (self.w - 1) / self.s + 1)
    }
    fn shapes(&self) -> [Vec<usize>; 5] {
        let (ho, wo) = self.out_hw();
        [
            vec![self.n, self.c, self.h, self.w],
            vec![self.n, 18, ho, wo],
            vec![self.n, 9, ho, wo],
            vec![self.o, self.c, 3, 3],
            vec![self.o],
        ]
    }
    /// sum(r · dcn(x, offset, mask, weight, bias)).
    fn loss(&self, r: &Tensor) -> impl Fn(&[Tensor]) -> Tensor + '_ {
        let r = r.clone();
        move |t: &[Tensor]| {
            modulated_deform_conv2d(&t[0], &t[1], &t[2], &t[3], &t[4], self.s)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
        }
    }
}

/// Random offsets in [-3, 3) plus some far outside: every sample at a non-integer position, where
/// the op is smooth in every input, so central differences are exact up to rounding (it is
/// bilinear within a cell).
#[test]
fn dcn_gradients_match_central_differences_at_fractional_positions() {
    for (case, seed) in [
        (
            Dcn {
                n: 2,
                c: 3,
                h: 5,
                w: 6,
                o: 2,
                s: 1,
            },
            1u64,
        ),
        (
            Dcn {
                n: 1,
                c: 2,
                h: 7,
                w: 6,
                o: 3,
                s: 2,
            },
            2,
        ),
    ] {
        let mut g = Lcg(seed);
        let shapes = case.shapes();
        let len = |s: &[usize]| s.iter().product::<usize>();
        let mut off = g.vec(len(&shapes[1]), -3.0, 3.0);
        for v in off.iter_mut().step_by(11) {
            *v *= 4.0;
        }
        let inputs = vec![
            (g.vec(len(&shapes[0]), -2.0, 2.0), shapes[0].clone()),
            (off, shapes[1].clone()),
            (g.vec(len(&shapes[2]), 0.0, 1.0), shapes[2].clone()),
            (g.vec(len(&shapes[3]), -1.0, 1.0), shapes[3].clone()),
            (g.vec(len(&shapes[4]), -1.0, 1.0), shapes[4].clone()),
        ];
        let (ho, wo) = case.out_hw();
        let r = Tensor::from_vec(
            g.vec(case.n * case.o * ho * wo, -1.0, 1.0),
            (case.n, case.o, ho, wo),
            &dev(),
        )
        .unwrap();
        let res = check_grads(&inputs, case.loss(&r), 1e-6, &[false; 5]);
        for (name, (got, fd)) in ["x", "offset", "mask", "weight", "bias"].iter().zip(res) {
            let e = rel_err(&got, &fd);
            assert!(e < 1e-7, "stride {}: d{name} relative error {e}", case.s);
        }
    }
}

/// Zero and integer offsets put every sample on an integer position (the top row and left column
/// exactly on -1). There the offset gradient is the floor-based forward difference, i.e. the
/// right derivative, which a one-sided difference measures; x and mask enter linearly.
#[test]
fn dcn_offset_gradient_at_integer_positions_is_the_right_derivative() {
    for (case, seed, integer) in [
        (
            Dcn {
                n: 1,
                c: 3,
                h: 5,
                w: 5,
                o: 2,
                s: 1,
            },
            3u64,
            false,
        ),
        (
            Dcn {
                n: 2,
                c: 2,
                h: 6,
                w: 5,
                o: 2,
                s: 2,
            },
            4,
            true,
        ),
    ] {
        let mut g = Lcg(seed);
        let shapes = case.shapes();
        let len = |s: &[usize]| s.iter().product::<usize>();
        let off: Vec<f64> = if integer {
            g.vec(len(&shapes[1]), -3.0, 4.0)
                .into_iter()
                .map(f64::floor)
                .collect()
        } else {
            vec![0.0; len(&shapes[1])]
        };
        let inputs = vec![
            (g.vec(len(&shapes[0]), -2.0, 2.0), shapes[0].clone()),
            (off, shapes[1].clone()),
            (g.vec(len(&shapes[2]), 0.0, 1.0), shapes[2].clone()),
            (g.vec(len(&shapes[3]), -1.0, 1.0), shapes[3].clone()),
            (g.vec(len(&shapes[4]), -1.0, 1.0), shapes[4].clone()),
        ];
        let (ho, wo) = case.out_hw();
        let r = Tensor::from_vec(
            g.vec(case.n * case.o * ho * wo, -1.0, 1.0),
            (case.n, case.o, ho, wo),
            &dev(),
        )
        .unwrap();
        let res = check_grads(
            &inputs,
            case.loss(&r),
            1e-7,
            &[false, true, false, false, false],
        );
        for (name, (got, fd)) in ["x", "offset", "mask", "weight", "bias"].iter().zip(&res) {
            let e = rel_err(got, fd);
            assert!(e < 1e-6, "integer={integer}: d{name} relative error {e}");
        }
        if !integer {
            // Tap 0 (i = j = 0) of output row 0 samples y = -1: its dy gradient is v(0, x)·m·w·r,
            // non-zero wherever x is inside (torchvision), not 0 as in DCNv2's CUDA code.
            let goff = &res[1].0;
            assert!(goff[1..wo].iter().all(|&v| v != 0.0), "{:?}", &goff[..wo]);
            assert_eq!(goff[0], 0.0, "a sample at (-1, -1) has no gradient");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Resize, pools, ReLU

#[test]
fn resize_gradient_matches_central_differences() {
    for (shape, oh, ow) in [
        ([1usize, 2, 5, 5], 9usize, 9usize),
        ([2, 1, 4, 6], 7, 11),
        ([1, 2, 9, 7], 4, 3),
    ] {
        let mut g = Lcg(oh as u64);
        let n: usize = shape.iter().product();
        let r = Tensor::from_vec(
            g.vec(shape[0] * shape[1] * oh * ow, -1.0, 1.0),
            (shape[0], shape[1], oh, ow),
            &dev(),
        )
        .unwrap();
        let loss = |t: &[Tensor]| {
            resize_bilinear(&t[0], oh, ow)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let res = check_grads(
            &[(g.vec(n, -2.0, 2.0), shape.to_vec())],
            loss,
            1e-6,
            &[false],
        );
        let e = rel_err(&res[0].0, &res[0].1);
        assert!(e < 1e-8, "{shape:?} -> {oh}x{ow}: relative error {e}");
    }
}

/// A scalar function of the inputs.
type ScalarOf<'a> = dyn Fn(&[Tensor]) -> Tensor + 'a;

#[test]
fn pool_and_relu_gradients_match_central_differences_away_from_ties_and_zeros() {
    let mut g = Lcg(9);
    let shape = vec![2usize, 2, 7, 6];
    let n: usize = shape.iter().product();
    // Distinct values almost surely; the smallest gap is far above the step.
    let x = g.vec(n, -2.0, 2.0);
    let r_pool = Tensor::from_vec(g.vec(2 * 2 * 4 * 3, -1.0, 1.0), (2, 2, 4, 3), &dev()).unwrap();
    let r_glob = Tensor::from_vec(g.vec(4, -1.0, 1.0), (2, 2), &dev()).unwrap();
    let r_relu = Tensor::from_vec(g.vec(n, -1.0, 1.0), shape.as_slice(), &dev()).unwrap();
    let losses: [(&str, Box<ScalarOf>); 3] = [
        (
            "max_pool2d 3/2/1",
            Box::new(|t: &[Tensor]| {
                pool::max_pool2d(&t[0], 3, 2, 1)
                    .unwrap()
                    .mul(&r_pool)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            }),
        ),
        (
            "global max pool",
            Box::new(|t: &[Tensor]| {
                pool::global_max_pool(&t[0])
                    .unwrap()
                    .mul(&r_glob)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            }),
        ),
        (
            "relu",
            Box::new(|t: &[Tensor]| {
                relu::relu(&t[0])
                    .unwrap()
                    .mul(&r_relu)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            }),
        ),
    ];
    for (name, loss) in losses {
        let res = check_grads(&[(x.clone(), shape.clone())], loss, 1e-7, &[false]);
        let e = rel_err(&res[0].0, &res[0].1);
        assert!(e < 1e-7, "{name}: relative error {e}");
    }
}

/// At exact zeros and ties finite differences are undefined; the rules are PyTorch's (ReLU: no
/// gradient at 0; pools: the first maximum in scan order only), checked on hand-made inputs, and
/// the values are bit-identical to the inference ops'.
#[test]
fn relu_and_pools_follow_pytorch_at_zeros_and_ties() {
    let x = Tensor::new(&[-1.0f32, 0.0, 2.0, 0.0], &dev()).unwrap();
    let v = Var::from_tensor(&x).unwrap();
    let y = relu::relu(v.as_tensor()).unwrap();
    assert_eq!(vec64(&y), vec64(&x.relu().unwrap()));
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(vec64(g.get(v.as_tensor()).unwrap()), [0.0, 0.0, 1.0, 0.0]);

    // One 3x3 map of ties: 1 at (0, 1), (1, 0), (2, 2); the first in row-major order is (0, 1).
    let m = Tensor::new(
        &[[0f32, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        &dev(),
    )
    .unwrap()
    .reshape((1, 1, 3, 3))
    .unwrap();
    let v = Var::from_tensor(&m).unwrap();
    let y = pool::global_max_pool(v.as_tensor()).unwrap();
    assert_eq!(vec64(&y), [1.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let want = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(vec64(g.get(v.as_tensor()).unwrap()), want);
    // All zeros: the gradient goes to element 0 only.
    let z = Var::from_tensor(&m.zeros_like().unwrap()).unwrap();
    let g = pool::global_max_pool(z.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut want = [0.0; 9];
    want[0] = 1.0;
    assert_eq!(vec64(g.get(z.as_tensor()).unwrap()), want);

    // The stem pool on the same map (windows at stride 2 with -inf padding): output (0, 0) covers
    // rows/cols -1..=1, first maximum (0, 1); (0, 1) covers cols 1..=3, first maximum (0, 1) again;
    // (1, 0) rows 1..=3 -> (1, 0); (1, 1) -> (2, 2).
    let v = Var::from_tensor(&m).unwrap();
    let y = pool::max_pool2d(v.as_tensor(), 3, 2, 1).unwrap();
    let eval = m
        .pad_with_zeros(2, 1, 1)
        .unwrap()
        .pad_with_zeros(3, 1, 1)
        .unwrap()
        .max_pool2d_with_stride(3, 2)
        .unwrap();
    assert_eq!(vec64(&y), vec64(&eval));
    let g = y.sum_all().unwrap().backward().unwrap();
    let want = [0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    assert_eq!(vec64(g.get(v.as_tensor()).unwrap()), want);
}

// ------------------------------------------------------------------------------------------------
// PyTorch autograd fixtures

fn fixture() -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/ops/grad.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &dev()).expect("fixture loads")
}

/// Runs `op` on the fixture's inputs in `dt`, backpropagates sum(r · op), and returns the
/// gradients of the inputs.
fn grads_in(
    dt: DType,
    inputs: &[&Tensor],
    r: &Tensor,
    op: impl Fn(&[Tensor]) -> Tensor,
) -> Vec<Vec<f64>> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dt).unwrap()).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = op(&ts)
        .mul(&r.to_dtype(dt).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|v| vec64(g.get(v.as_tensor()).expect("a gradient")))
        .collect()
}

/// Compares f32 (within 1e-5 relative) and f64 (within 1e-10) against the fixture's gradients.
fn check_fixture(
    what: &str,
    t: &HashMap<String, Tensor>,
    inputs: &[&str],
    grads: &[&str],
    op: impl Fn(&[Tensor]) -> Tensor,
) {
    let ins: Vec<&Tensor> = inputs.iter().map(|k| &t[*k]).collect();
    let r = &t[&format!("{what}r")];
    for (dt, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
        let got = grads_in(dt, &ins, r, &op);
        for (g, k) in got.iter().zip(grads) {
            let want = vec64(&t[*k]);
            let e = rel_err(g, &want);
            assert!(e < tol, "{k} in {dt:?}: relative error {e}");
        }
    }
}

#[test]
fn dcn_gradients_match_torchvision() {
    let t = fixture();
    for case in ["zero", "int", "frac_s1", "frac_s2"] {
        let p = format!("dcn.{case}.");
        let k = |s: &str| format!("{p}{s}");
        let stride = t[&k("stride")].to_vec1::<i64>().unwrap()[0] as usize;
        let inputs = ["x", "offset", "mask", "weight", "bias"].map(k);
        let grads = ["gx", "goffset", "gmask", "gweight", "gbias"].map(k);
        let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let gs: Vec<&str> = grads.iter().map(String::as_str).collect();
        check_fixture(&p, &t, &ins, &gs, |x| {
            modulated_deform_conv2d(&x[0], &x[1], &x[2], &x[3], &x[4], stride).unwrap()
        });
    }
}

#[test]
fn resize_pool_and_relu_gradients_match_pytorch() {
    let t = fixture();
    for case in ["fpn_18_35", "fpn_35_69", "proto_69_138", "odd_9x7_4x11"] {
        let p = format!("interp.{case}.");
        let (_, _, oh, ow) = t[&format!("{p}r")].dims4().unwrap();
        check_fixture(&p, &t, &[&format!("{p}x")], &[&format!("{p}gx")], |x| {
            resize_bilinear(&x[0], oh, ow).unwrap()
        });
    }
    check_fixture(
        "maxpool.stem.",
        &t,
        &["maxpool.stem.x"],
        &["maxpool.stem.gx"],
        |x| pool::max_pool2d(&x[0], 3, 2, 1).unwrap(),
    );
    check_fixture(
        "maxpool.global.",
        &t,
        &["maxpool.global.x"],
        &["maxpool.global.gx"],
        |x| pool::global_max_pool(&x[0]).unwrap(),
    );
    check_fixture("relu.", &t, &["relu.x"], &["relu.gx"], |x| {
        relu::relu(&x[0]).unwrap()
    });
}

// ------------------------------------------------------------------------------------------------
// The whole network

/// A synthetic model on a trainable store, one training pass at 128x128 (plus the mask-IoU net on
/// soft masks with cropped-out zeros), a scalar of every output, backward; returns the trainable
/// tensors without a gradient (or with an all-zero one) and their number.
fn untouched_params(name: &str, bn: TrainBn) -> (Vec<String>, usize) {
    let cfg = YolactConfig::by_name(name).unwrap();
    let store =
        WeightStore::from_state_dict(synth::synth_state_dict(&cfg, 11).unwrap(), &cfg, &dev())
            .unwrap();
    let mut model = Yolact::load_train(store.vb(), &cfg).unwrap();
    model.set_train_bn(bn);
    let mut g = Lcg(17);
    let x = Tensor::from_vec(
        g.vec(2 * 3 * 128 * 128, -2.0, 2.0),
        (2, 3, 128, 128),
        &dev(),
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap();
    let out = model.forward_t(&x, true).unwrap();
    // Random weights for every output, so no sum cancels by symmetry.
    let weighted = |t: &Tensor, seed: u64| -> Tensor {
        let mut g = Lcg(seed);
        let r = Tensor::from_vec(g.vec(t.elem_count(), -1.0, 1.0), t.shape(), &dev())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        t.mul(&r).unwrap().sum_all().unwrap()
    };
    let segm = out.segm.as_ref().expect("segmentation logits");
    let mut loss = (weighted(&out.loc, 1)
        + weighted(&out.conf, 2)
        + weighted(&out.coef.tanh().unwrap(), 3)
        + weighted(&out.proto, 4)
        + weighted(segm, 5))
    .unwrap();
    if cfg.use_maskiou {
        // Soft masks with a zero border, as the cropped masks the mask-IoU loss feeds it. 72x72
        // keeps five stride-2 convs above 1x1 (the proto map of a 128 input is only 32x32).
        let s = 72;
        let soft = Tensor::from_vec(g.vec(3 * s * s, -4.0, 4.0), (3, 1, s, s), &dev())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let soft = candle_nn::ops::sigmoid(&soft).unwrap();
        let soft = soft
            .narrow(2, 8, s - 16)
            .unwrap()
            .narrow(3, 8, s - 16)
            .unwrap()
            .pad_with_zeros(2, 8, 8)
            .unwrap()
            .pad_with_zeros(3, 8, 8)
            .unwrap();
        let iou = model.maskiou_t(&soft, true).unwrap();
        loss = (loss + weighted(&iou, 6)).unwrap();
    }
    let grads = loss.backward().unwrap();
    let trainable = store.trainable(bn == TrainBn::Frozen).unwrap();
    let missing = trainable
        .iter()
        .filter(|(_, v)| match grads.get(v.as_tensor()) {
            None => true,
            Some(g) => {
                let n = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                !(n > 0.0 && n.is_finite())
            }
        })
        .map(|(k, _)| k.clone())
        .collect();
    (missing, trainable.len())
}

#[test]
fn every_trainable_tensor_of_yolact_plus_gets_a_gradient_with_frozen_and_batch_bn() {
    let (missing, n) = untouched_params("yolact_plus_resnet50", TrainBn::Frozen);
    assert_eq!(
        n, 140,
        "the reference step gives 140 gradient tensors with BN frozen"
    );
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    let (missing, n) = untouched_params("yolact_plus_resnet50", TrainBn::Batch);
    assert_eq!(n, 246, "246 parameters train without frozen BN");
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

#[test]
fn every_trainable_tensor_of_yolact_gets_a_gradient_with_frozen_and_batch_bn() {
    let (missing, n) = untouched_params("yolact_resnet50", TrainBn::Frozen);
    assert_eq!(
        n, 89,
        "the reference step gives 89 gradient tensors with BN frozen"
    );
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    let (missing, n) = untouched_params("yolact_resnet50", TrainBn::Batch);
    assert_eq!(n, 195, "195 parameters train without frozen BN");
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}
