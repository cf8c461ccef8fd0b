//! The inference engine: one loaded model and the stages of a frame, in order.
//!
//! image -> [`preprocess`] -> backbone -> FPN -> protonet + heads -> decode -> NMS -> masks.
//! [`Engine::infer_timed`] times each stage for `yolact bench`: on a CUDA device with CUDA events
//! on candle's stream (one host wait per frame; see [`crate::cuda::timing`] for what the numbers
//! mean), elsewhere with a wall clock that synchronises the device at each stage boundary.
//! [`Engine::capture_network`] and [`Engine::infer_timed_graph`] replay the network as one CUDA
//! graph (experimental, see [`crate::cuda::graph`]).

pub mod input;
pub mod jpeg;
pub mod preprocess;
pub mod priors;

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::config::YolactConfig;
use crate::engine::preprocess::preprocess;
use crate::engine::priors::{conv_sizes, priors_tensor};
use crate::error::{Error, Result};
use crate::model::{head, Yolact};
use crate::output::detection::Detections;
use crate::post::decode::decode_boxes;
use crate::post::fast_nms::{detect, NmsKind, NmsOptions};
use crate::post::masks::{postprocess, MaskIouFn, PostprocessOptions};
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

/// Time of each stage of one frame (see [`ClockKind`] for how it was measured). With a captured
/// CUDA graph the network is one launch: its time is in `backbone`, and `fpn`, `protonet` and
/// `heads` are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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

    /// The stage times of the `images` frames of one batch from the times of its stage boundaries
    /// since the batch started: first the shared stages (preprocess, backbone, fpn, protonet,
    /// heads; or preprocess and the whole network for a graph replay, `network_as_one`), then nms
    /// and masks of each image in turn. Each stage is the difference of consecutive boundaries
    /// (clamped at zero); the shared stages are repeated in every frame.
    pub fn from_marks(
        marks: &[Duration],
        images: usize,
        network_as_one: bool,
    ) -> Result<Vec<StageTimes>> {
        let shared = if network_as_one { 2 } else { 5 };
        if marks.len() != shared + 2 * images {
            return Err(Error::Invalid(format!(
                "{} stage boundaries for {images} image(s), expected {}",
                marks.len(),
                shared + 2 * images
            )));
        }
        let laps: Vec<Duration> = marks
            .iter()
            .scan(Duration::ZERO, |prev, &m| {
                let d = m.saturating_sub(*prev);
                *prev = m;
                Some(d)
            })
            .collect();
        let mut t = StageTimes {
            preprocess: laps[0],
            backbone: laps[1],
            ..StageTimes::default()
        };
        if !network_as_one {
            (t.fpn, t.protonet, t.heads) = (laps[2], laps[3], laps[4]);
        }
        Ok(laps[shared..]
            .chunks_exact(2)
            .map(|nm| StageTimes {
                nms: nm[0],
                masks: nm[1],
                ..t
            })
            .collect())
    }
}

/// How stage times are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// Host wall clock; the device is synchronised at each stage boundary, so a stage's queued
    /// device work is counted in it.
    Wall,
    /// CUDA timing events recorded on candle's stream at each boundary, no host wait between
    /// stages; one wait at the end of the frame (CUDA devices, `cuda` feature).
    CudaEvents,
}

impl ClockKind {
    /// The default for `device`: CUDA events on a CUDA device, else the wall clock.
    pub fn default_for(device: &Device) -> ClockKind {
        if cfg!(feature = "cuda") && device.is_cuda() {
            ClockKind::CudaEvents
        } else {
            ClockKind::Wall
        }
    }

    /// Stable name for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::Wall => "wall",
            ClockKind::CudaEvents => "cuda_events",
        }
    }

    /// Words for tables.
    pub fn describe(self) -> &'static str {
        match self {
            ClockKind::Wall => "wall clock",
            ClockKind::CudaEvents => "cuda events",
        }
    }
}

/// The network (backbone .. heads, outputs in f32) captured as a CUDA graph for this engine's
/// input size, batch 1. Made by [`Engine::capture_network`]; only exists in `cuda` builds.
pub struct NetworkGraph {
    #[cfg(feature = "cuda")]
    inner: crate::cuda::graph::GraphForward,
    #[cfg(not(feature = "cuda"))]
    _never: std::convert::Infallible,
}

/// A loaded model with its priors, ready to run frames.
pub struct Engine {
    cfg: YolactConfig,
    /// The config's own class names, shared with every frame's detections.
    class_names: Option<std::sync::Arc<[String]>>,
    model: Yolact,
    priors: Tensor,
    device: Device,
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
        let priors = priors_tensor(&cfg, &conv_sizes(&cfg), device)?;
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
        let (conf, coef) = head::activate(&conf, &coef)?;
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

    /// Captures the network (backbone .. heads, outputs cast to f32) as a CUDA graph for this
    /// engine's input size at batch 1, after two eager warm-up passes. Experimental, unverified on
    /// a GPU. Errors (never panics) when the build or device cannot do it or the capture fails;
    /// the engine stays usable for eager frames. The capture mode is read from
    /// `YOLACT_CUDA_GRAPH_MODE` (see [`crate::cuda::graph::CaptureMode`]).
    pub fn capture_network(&self) -> Result<NetworkGraph> {
        #[cfg(feature = "cuda")]
        {
            let s = self.cfg.max_size;
            let mode = crate::cuda::graph::CaptureMode::from_env()?;
            let inner = crate::cuda::graph::capture(
                &self.device,
                (1, 3, s, s),
                self.dtype,
                2,
                mode,
                |x| {
                    let out = self.model.forward(x)?;
                    Ok(vec![
                        f32_of(&out.loc)?,
                        f32_of(&out.conf)?,
                        f32_of(&out.mask)?,
                        f32_of(&out.proto)?,
                    ])
                },
            )?;
            Ok(NetworkGraph { inner })
        }
        #[cfg(not(feature = "cuda"))]
        Err(Error::Config(
            "CUDA graphs need a build with the `cuda` feature and a CUDA device".into(),
        ))
    }

    /// The graph's (loc, conf, mask coefficients, proto) for `img`, batch dimension kept. They
    /// live in the graph's memory: valid until its next launch.
    #[cfg(feature = "cuda")]
    fn graph_outputs(
        &self,
        g: &NetworkGraph,
        img: &RgbImage,
        clock: &mut Clock,
    ) -> Result<[Tensor; 4]> {
        g.inner.set_input(&self.input(img)?)?;
        clock.mark()?;
        let outs = g.inner.launch()?;
        clock.mark()?;
        match outs {
            [loc, conf, coef, proto] => {
                Ok([loc.clone(), conf.clone(), coef.clone(), proto.clone()])
            }
            _ => Err(Error::Invalid(format!(
                "the captured network returned {} tensors, expected 4",
                outs.len()
            ))),
        }
    }

    /// [`Engine::infer_timed`] with the network replayed from `g` (see [`StageTimes`] for how
    /// the network's time is reported).
    pub fn infer_timed_graph(
        &self,
        g: &NetworkGraph,
        img: &RgbImage,
        opts: &InferOptions,
    ) -> Result<(Detections, StageTimes)> {
        #[cfg(feature = "cuda")]
        {
            let mut clock = Clock::start(&self.device, self.clock)?;
            let [loc, conf, coef, proto] = self.graph_outputs(g, img, &mut clock)?;
            let dets = self.finish_one(
                img,
                &loc.get(0)?,
                &conf.get(0)?,
                &coef.get(0)?,
                &proto.get(0)?,
                opts,
                &mut clock,
            )?;
            let mut times = StageTimes::from_marks(&clock.finish()?, 1, true)?;
            let t = times
                .pop()
                .ok_or_else(|| Error::Invalid("no stage times for one frame".into()))?;
            Ok((dets, t))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (img, opts);
            match g._never {}
        }
    }

    /// [`Engine::raw`] through the captured graph; the outputs are copied out of the graph's
    /// memory, so they stay valid.
    pub fn raw_graph(&self, g: &NetworkGraph, img: &RgbImage) -> Result<RawFrame> {
        #[cfg(feature = "cuda")]
        {
            let mut clock = Clock::start(&self.device, ClockKind::Wall)?;
            let [loc, conf, coef, proto] = self.graph_outputs(g, img, &mut clock)?;
            Ok(RawFrame {
                loc: loc.get(0)?.copy()?,
                conf: conf.get(0)?.copy()?,
                mask: coef.get(0)?.copy()?,
                priors: self.priors.clone(),
                proto: proto.get(0)?.copy()?,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = img;
            match g._never {}
        }
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
        clock: &mut Clock,
    ) -> Result<Detections> {
        let boxes = decode_boxes(loc, &self.priors)?;
        let nms = NmsOptions {
            kind: opts.nms,
            ..NmsOptions::from_config(&self.cfg)
        };
        let dets = detect(&boxes, conf, coef, &nms)?;
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
        let items = postprocess(&dets, proto, maskiou_fn, w as usize, h as usize, &popts)?;
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

/// Stage boundaries of one frame; [`Clock::finish`] gives each boundary's time since the start.
enum Clock<'a> {
    /// Waits for queued device work at each boundary, so a stage is its time and not its launch.
    Wall {
        device: &'a Device,
        start: Instant,
        marks: Vec<Duration>,
    },
    #[cfg(feature = "cuda")]
    Events(crate::cuda::timing::EventClock),
}

impl<'a> Clock<'a> {
    fn start(device: &'a Device, kind: ClockKind) -> Result<Self> {
        match kind {
            #[cfg(feature = "cuda")]
            ClockKind::CudaEvents => match device {
                Device::Cuda(d) => Ok(Clock::Events(crate::cuda::timing::EventClock::start(d)?)),
                _ => Err(Error::Config(
                    "CUDA event timing needs a CUDA device".into(),
                )),
            },
            #[cfg(not(feature = "cuda"))]
            ClockKind::CudaEvents => Err(Error::Config(
                "CUDA event timing needs a build with the `cuda` feature".into(),
            )),
            ClockKind::Wall => {
                // Work queued before the frame is not the first stage's.
                device.synchronize()?;
                Ok(Clock::Wall {
                    device,
                    start: Instant::now(),
                    marks: Vec::with_capacity(12),
                })
            }
        }
    }

    fn mark(&mut self) -> Result<()> {
        match self {
            Clock::Wall {
                device,
                start,
                marks,
            } => {
                device.synchronize()?;
                marks.push(start.elapsed());
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Clock::Events(e) => e.mark(),
        }
    }

    fn finish(self) -> Result<Vec<Duration>> {
        match self {
            Clock::Wall { marks, .. } => Ok(marks),
            #[cfg(feature = "cuda")]
            Clock::Events(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn stage_times_are_differences_of_consecutive_boundaries() {
        // preprocess 2, backbone 10, fpn 3, protonet 4, heads 1, then (nms, masks) per image.
        let marks = ms(&[2, 12, 15, 19, 20, 25, 32, 33, 40]);
        let t = StageTimes::from_marks(&marks, 2, false).unwrap();
        assert_eq!(t.len(), 2);
        let shared = ms(&[2, 10, 3, 4, 1]);
        for f in &t {
            assert_eq!(f.as_array()[..5], shared[..]);
        }
        assert_eq!((t[0].nms, t[0].masks), (ms(&[5])[0], ms(&[7])[0]));
        assert_eq!((t[1].nms, t[1].masks), (ms(&[1])[0], ms(&[7])[0]));
        // One frame's stages add up to its last boundary.
        let one = StageTimes::from_marks(&marks[..7], 1, false).unwrap();
        assert_eq!(one[0].total(), marks[6]);
    }

    #[test]
    fn a_graph_frame_puts_the_network_in_backbone_and_zeroes_the_split() {
        let t = StageTimes::from_marks(&ms(&[1, 6, 8, 11]), 1, true).unwrap();
        assert_eq!(t[0].as_array(), ms(&[1, 5, 0, 0, 0, 2, 3])[..]);
        assert_eq!(t[0].total(), Duration::from_millis(11));
    }

    #[test]
    fn wrong_boundary_counts_are_errors_and_backwards_marks_clamp_to_zero() {
        for (n, graph, len) in [(1, false, 6), (1, false, 8), (2, false, 7), (1, true, 5)] {
            let e = StageTimes::from_marks(&ms(&vec![1; len]), n, graph).unwrap_err();
            assert!(e.to_string().contains("stage boundaries"), "{e}");
        }
        assert!(StageTimes::from_marks(&ms(&[3, 4, 5, 6, 7]), 0, false)
            .unwrap()
            .is_empty());
        let t = StageTimes::from_marks(&ms(&[5, 3, 9, 9]), 1, true).unwrap();
        assert_eq!(t[0].as_array(), ms(&[5, 0, 0, 0, 0, 6, 0])[..]);
    }

    #[test]
    fn the_cpu_uses_the_wall_clock_and_refuses_events() {
        assert_eq!(ClockKind::default_for(&Device::Cpu), ClockKind::Wall);
        assert!(Clock::start(&Device::Cpu, ClockKind::CudaEvents).is_err());
        let mut c = Clock::start(&Device::Cpu, ClockKind::Wall).unwrap();
        c.mark().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        c.mark().unwrap();
        let m = c.finish().unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[1] >= m[0] + Duration::from_millis(3), "{m:?}");
        assert_ne!(ClockKind::Wall.as_str(), ClockKind::CudaEvents.as_str());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_cuda_feature_graph_capture_is_a_clear_error() {
        let cfg = YolactConfig::by_name("yolact_resnet50").unwrap();
        let sd = crate::weights::synth::synth_state_dict(&cfg, crate::weights::synth::DEFAULT_SEED)
            .unwrap();
        let mut e = Engine::from_state_dict(sd, cfg, &Device::Cpu).unwrap();
        assert_eq!(e.clock(), ClockKind::Wall);
        assert!(e.set_clock(ClockKind::CudaEvents).is_err());
        let err = e.capture_network().err().expect("captured on the CPU");
        assert!(err.to_string().contains("`cuda` feature"), "{err}");
    }

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
