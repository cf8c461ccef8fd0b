//! The inference engine: one loaded model and the stages of a frame, in order.
//!
//! image -> [`preprocess`] -> backbone -> FPN -> protonet + heads -> decode -> NMS -> masks.
//! The [`Engine`] (this file) owns the model, its priors and the [`backend::Backend`] chosen once
//! for its device ([`backend_for`]), which runs every device-specific stage around the network.
//! [`Engine::infer_timed`] times each stage for `yolact bench` ([`timing`]);
//! [`graph`] replays the network as one CUDA graph (experimental).
//!
//! Files: `backend.rs` the stage contract, `cpu.rs` its host implementation (the CUDA one is
//! `crate::cuda::backend`), `timing.rs` stage times and clocks, `graph.rs` graph capture and
//! replay, `preprocess.rs` FastBaseTransform, `priors.rs` anchor boxes, `input.rs` the
//! normalisation constants, `jpeg.rs` the JPEG completeness check.

pub mod backend;
pub mod cpu;
pub mod graph;
pub mod input;
pub mod jpeg;
pub mod preprocess;
pub mod priors;
pub mod timing;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::config::YolactConfig;
use crate::engine::backend::Backend;
use crate::engine::priors::priors_tensor;
use crate::engine::timing::Clock;
pub use crate::engine::timing::{ClockKind, StageTimes};
use crate::error::{Error, Result};
use crate::model::{conv_sizes, head, Yolact};
use crate::output::detection::Detections;
use crate::post::fast_nms::{NmsKind, NmsOptions};
use crate::post::masks::{postprocess, MaskIouFn, PostprocessOptions};
use crate::weights::{self, StateDict};

/// The backend of `device`, chosen once per engine: our CUDA kernels on a CUDA device in `cuda`
/// builds, else the host stages.
pub fn backend_for(device: &Device) -> Box<dyn Backend> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return Box::new(crate::cuda::backend::Cuda::new(d));
    }
    // Without the `cuda` feature there is no CUDA device to get here with.
    let _ = device;
    Box::new(cpu::Cpu)
}

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

/// A loaded model with its priors, ready to run frames.
pub struct Engine {
    cfg: YolactConfig,
    /// The config's own class names, shared with every frame's detections.
    class_names: Option<std::sync::Arc<[String]>>,
    model: Yolact,
    priors: Tensor,
    device: Device,
    /// The device-specific stages around the network, for `device`.
    backend: Box<dyn Backend>,
    /// The network's dtype: f32, or f16 with `--half` on CUDA. Decode, NMS and masks are f32.
    dtype: DType,
    clock: ClockKind,
}

impl Engine {
    /// Builds the engine from a state dict in the reference's key layout.
    pub fn from_state_dict(sd: StateDict, cfg: YolactConfig, device: &Device) -> Result<Self> {
        Self::from_state_dict_dtype(sd, cfg, device, DType::F32)
    }

    /// Builds the engine from weights read into host memory; the tensors are shared, not
    /// copied, so the host copy can build again (the node's activate after deactivate).
    pub fn from_host(
        host: &crate::weights::source::HostWeights,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_state_dict_dtype(host.state_dict.clone(), host.config.clone(), device, dtype)
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
        cfg.validate()?;
        let tensors = weights::prepare(sd, &cfg)?;
        // Loaded in f32 as trained, then the inference step (batch norms absorbed in f64, head
        // convs stacked), then cast once to the network's dtype.
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = Yolact::load(vb, &cfg)?.fuse()?.to_dtype(dtype)?;
        let s = cfg.max_size;
        let priors = priors_tensor(&cfg, &conv_sizes(&cfg, s, s), device)?;
        // candle's CUDA device queues on the *calling thread's* default stream, and the node builds
        // the engine on one thread and runs frames on another, whose stream does not wait for this
        // one: finish the uploads and BN folding here.
        device.synchronize()?;
        Ok(Engine {
            class_names: cfg.class_names.as_deref().map(std::sync::Arc::from),
            cfg,
            model,
            priors,
            device: device.clone(),
            backend: backend_for(device),
            dtype,
            clock: ClockKind::default_for(device),
        })
    }

    /// Loads a checkpoint (legacy `.pth`, zip `.pth` or safetensors). The config follows
    /// [`weights::load_for_inference`]: `config` when given, else the one a trained checkpoint
    /// carries, else detected from the keys and the file name.
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
        let (sd, cfg) = weights::load_for_inference(path, config)?;
        Self::from_state_dict_dtype(sd, cfg, device, dtype)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The clock that times [`Engine::infer_timed`]'s stages.
    pub fn clock(&self) -> ClockKind {
        self.clock
    }

    /// Chooses the stage clock: the wall clock always works, CUDA events need a CUDA device.
    pub fn set_clock(&mut self, clock: ClockKind) -> Result<()> {
        if clock == ClockKind::CudaEvents && ClockKind::default_for(&self.device) != clock {
            return Err(Error::Config(
                "CUDA event timing needs a CUDA device and a build with the `cuda` feature".into(),
            ));
        }
        self.clock = clock;
        Ok(())
    }

    /// The preprocessed image in the network's dtype.
    fn input(&self, img: &RgbImage) -> Result<Tensor> {
        self.backend
            .preprocess(img, &self.cfg, &self.device, self.dtype)
    }

    /// The backend that runs the stages around the network.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
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
        // The frame runs on a worker of rayon's pool: each parallel op then splits onto the local
        // queue with one sibling to wake, instead of the caller blocking while every op's work is
        // injected from outside (a wake-up round trip per op, and a frame has a hundred of them).
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.infer_batch(imgs, opts));
        }
        if imgs.is_empty() {
            return Ok(Vec::new());
        }
        let mut clock = Clock::start(&self.device, self.clock)?;

        let inputs = imgs
            .iter()
            .map(|img| self.input(img))
            .collect::<Result<Vec<_>>>()?;
        let x = if inputs.len() == 1 {
            inputs[0].clone()
        } else {
            Tensor::cat(&inputs, 0)?
        };
        clock.mark()?;
        let c = self.model.backbone(&x)?;
        clock.mark()?;
        let p = self.model.fpn(&c)?;
        clock.mark()?;
        let proto = self.model.protonet(&p[0])?;
        clock.mark()?;
        let (loc, conf, coef) = self.model.heads(&p)?;
        let conf = head::class_scores(&conf)?;
        // Decode, NMS and mask assembly always run in f32.
        let (loc, conf, coef, proto) = (
            f32_of(&loc)?,
            f32_of(&conf)?,
            f32_of(&coef)?,
            f32_of(&proto)?,
        );
        clock.mark()?;

        let mut dets = Vec::with_capacity(imgs.len());
        for (i, img) in imgs.iter().enumerate() {
            dets.push(self.finish_one(
                img,
                &loc.get(i)?,
                &conf.get(i)?,
                &coef.get(i)?,
                &proto.get(i)?,
                opts,
                &mut clock,
            )?);
        }
        let times = StageTimes::from_marks(&clock.finish()?, imgs.len(), false)?;
        Ok(dets.into_iter().zip(times).collect())
    }

    /// Decode, NMS and masks of one image of a batch. `coef` holds the mask coefficients before
    /// their tanh, which is taken here for the rows NMS keeps ([`head::class_scores`]).
    #[allow(clippy::too_many_arguments)]
    fn finish_one(
        &self,
        img: &RgbImage,
        loc: &Tensor,
        conf: &Tensor,
        coef: &Tensor,
        proto: &Tensor,
        opts: &InferOptions,
        clock: &mut Clock,
    ) -> Result<Detections> {
        let boxes = self.backend.decode_boxes(loc, &self.priors)?;
        let nms = NmsOptions {
            kind: opts.nms,
            ..NmsOptions::from_config(&self.cfg)
        };
        let mut dets = self.backend.detect(&boxes, conf, coef, &nms)?;
        dets.coefs = dets.coefs.tanh()?;
        clock.mark()?;

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
        let items = postprocess(
            self.backend.as_ref(),
            &dets,
            proto,
            maskiou_fn,
            w as usize,
            h as usize,
            &popts,
        )?;
        clock.mark()?;

        // The whole frame fails rather than dropping the bad detections: a non-finite value here
        // means broken weights or input, and the remaining detections would not be trustworthy
        // either. Checkpoints are checked at load (weights::finite); this also covers synthetic or
        // in-memory state dicts and overflow inside the network.
        let finite = |d: &crate::output::detection::Detection| {
            d.score.is_finite()
                && d.class_score.is_finite()
                && d.mask_iou.is_none_or(f32::is_finite)
                && d.bbox.iter().all(|v| v.is_finite())
        };
        if !items.iter().all(finite) {
            return Err(Error::Invalid(
                "the network produced NaN or infinite scores, mask IoUs or boxes; the weights are \
                 probably corrupt"
                    .into(),
            ));
        }
        Ok(Detections {
            width: w as usize,
            height: h as usize,
            config: self.cfg.name.to_string(),
            class_names: self.class_names.clone(),
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
