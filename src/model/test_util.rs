//! Float64 loop implementations used as independent references by the model's unit tests.

// Index loops mirror the textbook formulas, which is the point of a naive reference.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// A dense NCHW array in f64.
#[derive(Debug, Clone)]
pub struct Nd {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f64>,
}

impl Nd {
    pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self {
            n,
            c,
            h,
            w,
            data: vec![0.0; n * c * h * w],
        }
    }
    pub fn from_tensor(t: &Tensor) -> Self {
        let (n, c, h, w) = t.dims4().unwrap();
        let data = t
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        Self { n, c, h, w, data }
    }
    pub fn idx(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }
    pub fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f64 {
        self.data[self.idx(n, c, y, x)]
    }
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            data: self.data.iter().map(|&v| f(v)).collect(),
            ..self.clone()
        }
    }
    pub fn add(&self, o: &Nd) -> Self {
        assert_eq!(self.data.len(), o.data.len());
        Self {
            data: self.data.iter().zip(&o.data).map(|(a, b)| a + b).collect(),
            ..self.clone()
        }
    }
    pub fn relu(&self) -> Self {
        self.map(|v| v.max(0.0))
    }
}

pub fn vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Direct convolution, dilation 1, zero padding.
pub fn conv(x: &Nd, w: &Nd, b: Option<&[f64]>, stride: usize, pad: usize) -> Nd {
    let (o, k) = (w.n, w.h);
    assert_eq!(w.c, x.c);
    let ho = (x.h + 2 * pad - k) / stride + 1;
    let wo = (x.w + 2 * pad - k) / stride + 1;
    let mut out = Nd::zeros(x.n, o, ho, wo);
    for n in 0..x.n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b[oc]);
                    for ic in 0..x.c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                acc += x.at(n, ic, iy as usize, ix as usize) * w.at(oc, ic, ky, kx);
                            }
                        }
                    }
                    let i = out.idx(n, oc, oy, ox);
                    out.data[i] = acc;
                }
            }
        }
    }
    out
}

/// Eval-mode batch norm with eps 1e-5; `p` = [weight, bias, mean, var].
pub fn bn(x: &Nd, p: &[Vec<f64>; 4]) -> Nd {
    let mut out = x.clone();
    for n in 0..x.n {
        for c in 0..x.c {
            for y in 0..x.h {
                for xx in 0..x.w {
                    let i = x.idx(n, c, y, xx);
                    out.data[i] =
                        (x.data[i] - p[2][c]) / (p[3][c] + 1e-5).sqrt() * p[0][c] + p[1][c];
                }
            }
        }
    }
    out
}

/// PyTorch bilinear, align_corners=False (docs/model.md §9.3).
pub fn bilinear(x: &Nd, oh: usize, ow: usize) -> Nd {
    let axis = |inp: usize, out: usize, d: usize| -> (usize, usize, f64) {
        let scale = inp as f64 / out as f64;
        let src = (scale * (d as f64 + 0.5) - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
        (i0, i1, src - i0 as f64)
    };
    let mut out = Nd::zeros(x.n, x.c, oh, ow);
    for n in 0..x.n {
        for c in 0..x.c {
            for oy in 0..oh {
                let (y0, y1, ly) = axis(x.h, oh, oy);
                for ox in 0..ow {
                    let (x0, x1, lx) = axis(x.w, ow, ox);
                    let top = (1.0 - lx) * x.at(n, c, y0, x0) + lx * x.at(n, c, y0, x1);
                    let bot = (1.0 - lx) * x.at(n, c, y1, x0) + lx * x.at(n, c, y1, x1);
                    let i = out.idx(n, c, oy, ox);
                    out.data[i] = (1.0 - ly) * top + ly * bot;
                }
            }
        }
    }
    out
}

/// Random tensors registered under names, plus a VarBuilder over them.
#[derive(Default)]
pub struct Weights {
    pub map: HashMap<String, Tensor>,
}

impl Weights {
    pub fn uniform(&mut self, name: &str, dims: &[usize], lo: f32, hi: f32) -> Tensor {
        let t = Tensor::rand(lo, hi, dims, &Device::Cpu).unwrap();
        self.map.insert(name.to_string(), t.clone());
        t
    }
    /// Conv weight with variance ~1/fan_in.
    pub fn conv(&mut self, name: &str, o: usize, i: usize, k: usize) -> Nd {
        let a = (3.0 / (i * k * k) as f64).sqrt() as f32;
        Nd::from_tensor(&self.uniform(&format!("{name}.weight"), &[o, i, k, k], -a, a))
    }
    pub fn bias(&mut self, name: &str, o: usize) -> Vec<f64> {
        vec1(&self.uniform(&format!("{name}.bias"), &[o], -0.5, 0.5))
    }
    pub fn bn(&mut self, name: &str, c: usize) -> [Vec<f64>; 4] {
        [
            vec1(&self.uniform(&format!("{name}.weight"), &[c], 0.5, 1.5)),
            vec1(&self.uniform(&format!("{name}.bias"), &[c], -0.5, 0.5)),
            vec1(&self.uniform(&format!("{name}.running_mean"), &[c], -0.5, 0.5)),
            vec1(&self.uniform(&format!("{name}.running_var"), &[c], 0.2, 2.0)),
        ]
    }
    pub fn vb(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.map.clone(), DType::F32, &Device::Cpu)
    }
}

pub fn rand_input(n: usize, c: usize, h: usize, w: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (n, c, h, w), &Device::Cpu).unwrap()
}

/// Max |a - b| relative to max(1, max |b|).
pub fn rel_err(a: &Tensor, b: &Nd) -> f64 {
    let a = vec1(a);
    assert_eq!(a.len(), b.data.len(), "element count");
    let scale = b.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b.data)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}
