//! The inference engine: one loaded model and the stages of a frame, in order.
//!
//! image -> [`preprocess`] -> backbone -> FPN -> protonet + heads -> decode -> NMS -> masks.
//! [`Engine::infer_timed`] times each stage for `yolact bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::config::YolactConfig;
use crate::decode::decode_boxes;
use crate::detection::Detections;
use crate::error::{Error, Result};
use crate::fast_nms::{detect, NmsKind, NmsOptions};
use crate::model::Yolact;
use crate::postprocess::{postprocess, MaskIouFn, PostprocessOptions};
use crate::preprocess::preprocess;
use crate::priors::{conv_sizes, priors_tensor};
use crate::weights::{self, StateDict};

/// Per-frame options (the `yolact infer` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct InferOptions {
    /// Detections need class score > threshold and final score >= threshold (eval.py --image).
    pub score_threshold: f32,
    /// At most this many detections, best first.
    pub top_k: usize,
    pub nms: NmsKind,
    /// Crop masks to their boxes (the reference default; `--no_crop` there).
    pub crop: bool,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            score_threshold: 0.15,
            top_k: 100,
            nms: NmsKind::Fast,
            crop: true,
        }
    }
}

/// Eval-mode head outputs of one image (batch dimension removed).
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// (P, 4) raw box regressions.
    pub loc: Tensor,
    /// (P, 81) softmax class scores.
    pub conf: Tensor,
    /// (P, 32) tanh mask coefficients.
    pub mask: Tensor,
    /// (P, 4) priors (cx, cy, w, h), relative.
    pub priors: Tensor,
    /// (Hp, Wp, 32) prototypes.
    pub proto: Tensor,
}

/// Wall time of each stage of one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub preprocess: Duration,
    pub backbone: Duration,
    pub fpn: Duration,
    pub protonet: Duration,
    pub heads: Duration,
    pub nms: Duration,
    pub masks: Duration,
}

impl StageTimes {
    pub const NAMES: [&'static str; 7] = [
        "preprocess",
        "backbone",
        "fpn",
        "protonet",
        "heads",
        "nms",
        "masks",
    ];

    pub fn as_array(&self) -> [Duration; 7] {
        [
            self.preprocess,
            self.backbone,
            self.fpn,
            self.protonet,
            self.heads,
            self.nms,
            self.masks,
        ]
    }

    pub fn total(&self) -> Duration {
        self.as_array().iter().sum()
    }
}

/// A loaded model with its priors, ready to run frames.
pub struct Engine {
    cfg: YolactConfig,
    model: Yolact,
    priors: Tensor,
    device: Device,
    /// The network's dtype: f32, or f16 with `--half` on CUDA. Decode, NMS and masks are f32.
    dtype: DType,
}

impl Engine {
    /// Builds the engine from a state dict in the reference's key layout.
    pub fn from_state_dict(sd: StateDict, cfg: YolactConfig, device: &Device) -> Result<Self> {
        Self::from_state_dict_dtype(sd, cfg, device, DType::F32)
    }

    /// [`Engine::from_state_dict`] with the network in `dtype`: F32, or F16 on a CUDA device
    /// (batch norms are folded in full precision, then the weights are cast).
    pub fn from_state_dict_dtype(
        sd: StateDict,
        cfg: YolactConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        match dtype {
            DType::F32 => {}
            DType::F16 if device.is_cuda() => {}
            DType::F16 => {
                return Err(Error::Config(
                    "f16 (--half) needs a CUDA device; the CPU path is f32 only".into(),
                ))
            }
            other => {
                return Err(Error::Config(format!(
                    "the network runs in f32 or f16, not {other:?}"
                )))
            }
        }
        let tensors = weights::prepare(sd, &cfg)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let model = Yolact::load(vb, &cfg)?;
        let priors = priors_tensor(&cfg, &conv_sizes(&cfg), device)?;
        Ok(Engine {
            cfg,
            model,
            priors,
            device: device.clone(),
            dtype,
        })
    }

    /// Loads a checkpoint (legacy `.pth`, zip `.pth` or safetensors). The config is `config` when
    /// given, else detected from the keys and the file name.
    pub fn load(path: &Path, config: Option<&str>, device: &Device) -> Result<Self> {
        Self::load_dtype(path, config, device, DType::F32)
    }

    /// [`Engine::load`] with the network in `dtype` (see [`Engine::from_state_dict_dtype`]).
    pub fn load_dtype(
        path: &Path,
        config: Option<&str>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let sd = weights::load_checkpoint(path)?;
        let cfg = match config {
            Some(name) => YolactConfig::by_name(name)?,
            None => weights::detect_config(&sd, Some(path))?,
        };
        Self::from_state_dict_dtype(sd, cfg, device, dtype)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The preprocessed image in the network's dtype.
    fn input(&self, img: &RgbImage) -> Result<Tensor> {
        // On CUDA one kernel does the whole transform and writes the network's dtype directly.
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() {
            return crate::cuda::fused::preprocess(img, &self.cfg, &self.device, self.dtype);
        }
        let x = preprocess(img, &self.cfg, &self.device)?;
        Ok(if self.dtype == DType::F32 {
            x
        } else {
            x.to_dtype(self.dtype)?
        })
    }

    pub fn config(&self) -> &YolactConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn model(&self) -> &Yolact {
        &self.model
    }

    /// The eval-mode head outputs for one image (what `--dump-raw` writes).
    pub fn raw(&self, img: &RgbImage) -> Result<RawFrame> {
        let x = self.input(img)?;
        let out = self.model.forward(&x)?;
        Ok(RawFrame {
            loc: f32_of(&out.loc.get(0)?)?,
            conf: f32_of(&out.conf.get(0)?)?,
            mask: f32_of(&out.mask.get(0)?)?,
            priors: self.priors.clone(),
            proto: f32_of(&out.proto.get(0)?)?,
        })
    }

    pub fn infer(&self, img: &RgbImage, opts: &InferOptions) -> Result<Detections> {
        Ok(self.infer_timed(img, opts)?.0)
    }

    /// Runs one frame and returns its detections and the time of each stage.
    pub fn infer_timed(
        &self,
        img: &RgbImage,
        opts: &InferOptions,
    ) -> Result<(Detections, StageTimes)> {
        let mut out = self.infer_batch(std::slice::from_ref(img), opts)?;
        out.pop()
            .ok_or_else(|| Error::Invalid("a batch of one image returned nothing".into()))
    }

    /// Runs several frames (of any sizes) through ONE forward pass and post-processes each, so
    /// N cameras cost one network launch. Results are in input order. The shared stages
    /// (preprocess .. heads) report the whole batch's time in every frame's [`StageTimes`]; nms and
    /// masks are per frame.
    pub fn infer_batch(
        &self,
        imgs: &[RgbImage],
        opts: &InferOptions,
    ) -> Result<Vec<(Detections, StageTimes)>> {
        if imgs.is_empty() {
            return Ok(Vec::new());
        }
        let mut t = StageTimes::default();
        let mut clock = Clock::new(&self.device);

        let inputs = imgs
            .iter()
            .map(|img| self.input(img))
            .collect::<Result<Vec<_>>>()?;
        let x = if inputs.len() == 1 {
            inputs[0].clone()
        } else {
            Tensor::cat(&inputs, 0)?
        };
        t.preprocess = clock.lap()?;
        let c = self.model.backbone(&x)?;
        t.backbone = clock.lap()?;
        let p = self.model.fpn(&c)?;
        t.fpn = clock.lap()?;
        let proto = self.model.protonet(&p[0])?;
        t.protonet = clock.lap()?;
        let (loc, conf, coef) = self.model.heads(&p)?;
        // Decode, NMS and mask assembly always run in f32.
        let (loc, conf, coef, proto) = (
            f32_of(&loc)?,
            f32_of(&conf)?,
            f32_of(&coef)?,
            f32_of(&proto)?,
        );
        t.heads = clock.lap()?;

        let mut out = Vec::with_capacity(imgs.len());
        for (i, img) in imgs.iter().enumerate() {
            let mut ti = t;
            let dets = self.finish_one(
                img,
                &loc.get(i)?,
                &conf.get(i)?,
                &coef.get(i)?,
                &proto.get(i)?,
                opts,
                &mut ti,
                &mut clock,
            )?;
            out.push((dets, ti));
        }
        Ok(out)
    }

    /// Decode, NMS and masks of one image of a batch.
    #[allow(clippy::too_many_arguments)]
    fn finish_one(
        &self,
        img: &RgbImage,
        loc: &Tensor,
        conf: &Tensor,
        coef: &Tensor,
        proto: &Tensor,
        opts: &InferOptions,
        t: &mut StageTimes,
        clock: &mut Clock,
    ) -> Result<Detections> {
        let boxes = decode_boxes(loc, &self.priors)?;
        let nms = NmsOptions {
            kind: opts.nms,
            ..NmsOptions::from_config(&self.cfg)
        };
        let dets = detect(&boxes, conf, coef, &nms)?;
        t.nms = clock.lap()?;

        let (w, h) = img.dimensions();
        let maskiou = |m: &Tensor| {
            if self.dtype == DType::F32 {
                self.model.maskiou(m)
            } else {
                self.model
                    .maskiou(&m.to_dtype(self.dtype)?)?
                    .to_dtype(DType::F32)
            }
        };
        let maskiou_fn: Option<MaskIouFn> = if self.cfg.use_maskiou {
            Some(&maskiou)
        } else {
            None
        };
        let popts = PostprocessOptions {
            score_threshold: opts.score_threshold,
            top_k: opts.top_k,
            crop: opts.crop,
        };
        let items = postprocess(&dets, proto, maskiou_fn, w as usize, h as usize, &popts)?;
        t.masks = clock.lap()?;

        if items
            .iter()
            .any(|d| !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()))
        {
            return Err(Error::Invalid(
                "the network produced NaN or infinite scores or boxes; the weights are probably corrupt".into(),
            ));
        }
        Ok(Detections {
            width: w as usize,
            height: h as usize,
            config: self.cfg.name.to_string(),
            items,
        })
    }
}

/// `t` in f32 (a no-op for f32 tensors).
fn f32_of(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.dtype() == DType::F32 {
        Ok(t.clone())
    } else {
        t.to_dtype(DType::F32)
    }
}

/// Wall-clock laps that wait for queued device work, so a lap is the stage's time and not its launch.
struct Clock<'a> {
    device: &'a Device,
    last: Instant,
}

impl<'a> Clock<'a> {
    fn new(device: &'a Device) -> Self {
        Clock {
            device,
            last: Instant::now(),
        }
    }

    fn lap(&mut self) -> Result<Duration> {
        self.device.synchronize()?;
        let now = Instant::now();
        let d = now - self.last;
        self.last = now;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_and_other_dtypes_are_refused_on_the_cpu_before_any_loading() {
        let cfg = YolactConfig::by_name("yolact_resnet50").unwrap();
        for dt in [DType::F16, DType::BF16, DType::F64] {
            let e = Engine::from_state_dict_dtype(StateDict::new(), cfg.clone(), &Device::Cpu, dt)
                .err()
                .unwrap_or_else(|| panic!("{dt:?} accepted on the CPU"))
                .to_string();
            assert!(e.contains("f32"), "{dt:?}: {e}");
        }
        // f32 gets past the dtype check and fails on the (empty) weights instead.
        let e = Engine::from_state_dict_dtype(StateDict::new(), cfg, &Device::Cpu, DType::F32)
            .err()
            .expect("empty weights accepted")
            .to_string();
        assert!(!e.contains("needs a CUDA device"), "{e}");
    }
}
