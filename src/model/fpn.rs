//! Feature pyramid P3..P7 (spec §2.4, §5.2). The reference stores the lateral and prediction convs
//! top-down (index 0 acts on C5), which the key names below follow.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::Conv2d;
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

    /// `c` = [C3, C4, C5]; returns [P3, P4, P5, P6, P7].
    pub fn forward(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        if c.len() != 3 {
            candle_core::bail!("fpn expects 3 backbone maps (C3, C4, C5), got {}", c.len());
        }
        // Top-down: L5 = lat(C5); L_i = up(L_{i+1} to C_i's size) + lat(C_i).
        let mut laterals: Vec<Tensor> = Vec::with_capacity(3);
        for (i, lat) in self.lat.iter().enumerate() {
            let ci = &c[2 - i];
            let l = lat.forward(ci)?;
            let l = match laterals.last() {
                Some(prev) => {
                    let (_, _, h, w) = ci.dims4()?;
                    (resize_bilinear(prev, h, w)? + l)?
                }
                None => l,
            };
            laterals.push(l);
        }
        // laterals = [L5, L4, L3]; pred_layers[i] pairs with laterals[i].
        let mut p: Vec<Tensor> = laterals
            .iter()
            .zip(&self.pred)
            .map(|(l, conv)| conv.forward(l)?.relu())
            .collect::<Result<Vec<_>>>()?;
        p.reverse(); // [P3, P4, P5]
        let mut x = p[2].clone();
        for conv in &self.down {
            x = conv.forward(&x)?;
            p.push(x.clone());
        }
        Ok(p)
    }
}
