//! YOLACT++ mask-IoU net (spec §2.7): five stride-2 3x3 convs and a 1x1 to 80 classes, every conv
//! unpadded and followed by a ReLU, then a global max pool.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{global_max_pool, Conv2d};

#[derive(Debug, Clone)]
pub struct MaskIouNet {
    convs: Vec<Conv2d>,
}

impl MaskIouNet {
    /// `vb` is the `maskiou_net.maskiou_net` prefix.
    pub fn load(vb: VarBuilder, num_fg_classes: usize) -> Result<Self> {
        let mut convs = Vec::with_capacity(6);
        let mut c_in = 1;
        for (i, c_out) in [8, 16, 32, 64, 128].into_iter().enumerate() {
            convs.push(Conv2d::load(vb.pp(2 * i), c_in, c_out, 3, 2, 0, true)?);
            c_in = c_out;
        }
        convs.push(Conv2d::load(
            vb.pp(10),
            c_in,
            num_fg_classes,
            1,
            1,
            0,
            true,
        )?);
        Ok(Self { convs })
    }

    /// Soft cropped masks (n, 1, Hp, Wp) -> (n, num_fg_classes).
    pub fn forward(&self, masks: &Tensor) -> Result<Tensor> {
        let mut x = masks.clone();
        for conv in &self.convs {
            x = conv.forward(&x)?.relu()?;
        }
        global_max_pool(&x)
    }
}
