//! Feature pyramid P3..P7 (docs/model.md §2.4, §5.2). The reference stores the lateral and
//! prediction convs top-down (index 0 acts on C5), which the key names below follow.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Conv2d, Mode};
use crate::ops::interp::resize_bilinear;

#[derive(Debug, Clone)]
pub struct Fpn {
    /// Applied to C5, C4, C3.
    lat: Vec<Conv2d>,
    /// Applied to L5, L4, L3; ReLU follows.
    pred: Vec<Conv2d>,
    /// P5 -> P6 -> P7, stride 2, no ReLU.
    down: Vec<Conv2d>,
}

impl Fpn {
    /// `vb` is the `fpn` prefix; `c_in` the channels of (C3, C4, C5).
    pub fn load(vb: VarBuilder, c_in: [usize; 3], f: usize) -> Result<Self> {
        let lat = (0..3)
            .map(|i| Conv2d::load(vb.pp("lat_layers").pp(i), c_in[2 - i], f, 1, 1, 0, true))
            .collect::<Result<Vec<_>>>()?;
        let pred = (0..3)
            .map(|i| Conv2d::load(vb.pp("pred_layers").pp(i), f, f, 3, 1, 1, true))
            .collect::<Result<Vec<_>>>()?;
        let down = (0..2)
            .map(|i| Conv2d::load(vb.pp("downsample_layers").pp(i), f, f, 3, 2, 1, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { lat, pred, down })
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let cast = |v: &[Conv2d]| {
            v.iter()
                .map(|c| c.to_dtype(dtype))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            lat: cast(&self.lat)?,
            pred: cast(&self.pred)?,
            down: cast(&self.down)?,
        })
    }

    /// `c` = [C3, C4, C5]; returns [P3, P4, P5, P6, P7].
    pub fn forward(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        self.forward_t(c, Mode::Eval)
    }

    pub fn forward_t(&self, c: &[Tensor], mode: Mode) -> Result<Vec<Tensor>> {
        if c.len() != 3 {
            candle_core::bail!("fpn expects 3 backbone maps (C3, C4, C5), got {}", c.len());
        }
        // Top-down: L5 = lat(C5); L_i = up(L_{i+1} to C_i's size) + lat(C_i).
        let mut laterals: Vec<Tensor> = Vec::with_capacity(3);
        for (i, lat) in self.lat.iter().enumerate() {
            let ci = &c[2 - i];
            let up = match laterals.last() {
                Some(prev) => {
                    let (_, _, h, w) = ci.dims4()?;
                    Some(resize_bilinear(prev, h, w)?)
                }
                None => None,
            };
            let l = lat.forward_fused_t(ci, up.as_ref(), false, mode)?;
            laterals.push(l);
        }
        // laterals = [L5, L4, L3]; pred_layers[i] pairs with laterals[i].
        let mut p: Vec<Tensor> = laterals
            .iter()
            .zip(&self.pred)
            .map(|(l, conv)| conv.forward_fused_t(l, None, true, mode))
            .collect::<Result<Vec<_>>>()?;
        p.reverse(); // [P3, P4, P5]
        let mut x = p[2].clone();
        for conv in &self.down {
            x = conv.forward_t(&x, mode)?;
            p.push(x.clone());
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn fpn_matches_naive_top_down_composition() {
        let f = 4;
        let c_ch = [6, 8, 10]; // C3, C4, C5
        let mut w = Weights::default();
        let lat: Vec<_> = (0..3)
            .map(|i| {
                let name = format!("lat_layers.{i}");
                (w.conv(&name, f, c_ch[2 - i], 1), w.bias(&name, f))
            })
            .collect();
        let pred: Vec<_> = (0..3)
            .map(|i| {
                let name = format!("pred_layers.{i}");
                (w.conv(&name, f, f, 3), w.bias(&name, f))
            })
            .collect();
        let down: Vec<_> = (0..2)
            .map(|i| {
                let name = format!("downsample_layers.{i}");
                (w.conv(&name, f, f, 3), w.bias(&name, f))
            })
            .collect();
        let fpn = Fpn::load(w.vb(), c_ch, f).unwrap();
        // Non-integer ratios (3 -> 5 -> 9), as at 550 (18 -> 35 -> 69).
        let c: Vec<Tensor> = [(6, 9, 10), (8, 5, 5), (10, 3, 3)]
            .iter()
            .map(|&(ch, h, wd)| tu::rand_input(1, ch, h, wd))
            .collect();
        let got = fpn.forward(&c).unwrap();

        let cn: Vec<Nd> = c.iter().map(Nd::from_tensor).collect();
        let l5 = tu::conv(&cn[2], &lat[0].0, Some(&lat[0].1), 1, 0);
        let l4 = tu::bilinear(&l5, 5, 5).add(&tu::conv(&cn[1], &lat[1].0, Some(&lat[1].1), 1, 0));
        let l3 = tu::bilinear(&l4, 9, 10).add(&tu::conv(&cn[0], &lat[2].0, Some(&lat[2].1), 1, 0));
        let p5 = tu::conv(&l5, &pred[0].0, Some(&pred[0].1), 1, 1).relu();
        let p4 = tu::conv(&l4, &pred[1].0, Some(&pred[1].1), 1, 1).relu();
        let p3 = tu::conv(&l3, &pred[2].0, Some(&pred[2].1), 1, 1).relu();
        let p6 = tu::conv(&p5, &down[0].0, Some(&down[0].1), 2, 1);
        let p7 = tu::conv(&p6, &down[1].0, Some(&down[1].1), 2, 1);
        // P6/P7 carry no ReLU.
        assert!(p6.data.iter().chain(&p7.data).any(|&v| v < 0.0));
        for (i, (g, wnt)) in got.iter().zip([p3, p4, p5, p6, p7]).enumerate() {
            assert_eq!(g.dims(), &[1, f, wnt.h, wnt.w], "P{}", i + 3);
            let err = tu::rel_err(g, &wnt);
            assert!(err < 1e-5, "P{}: {err}", i + 3);
        }
        assert!(fpn.forward(&c[..2]).is_err());
    }
}
