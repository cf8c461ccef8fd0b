//! Graph replay: the network (backbone .. heads) captured once as a CUDA graph and replayed per
//! frame, with decode, NMS and masks run eagerly after it ([`Engine::capture_network`],
//! [`Engine::infer_timed_graph`], [`Engine::raw_graph`]). Experimental, see
//! [`crate::cuda::graph`]; in builds without the `cuda` feature a [`NetworkGraph`] cannot exist and
//! capturing is a clear error.

use image::RgbImage;

#[cfg(feature = "cuda")]
use candle_core::Tensor;

#[cfg(feature = "cuda")]
use super::f32_of;
use super::timing::StageTimes;
#[cfg(feature = "cuda")]
use super::timing::{Clock, ClockKind};
use super::{Engine, InferOptions, RawFrame};
use crate::error::{Error, Result};
use crate::output::detection::Detections;

/// The network (backbone .. heads, outputs in f32) captured as a CUDA graph for this engine's
/// input size, batch 1. Made by [`Engine::capture_network`]; only exists in `cuda` builds.
pub struct NetworkGraph {
    #[cfg(feature = "cuda")]
    inner: crate::cuda::graph::GraphForward,
    #[cfg(not(feature = "cuda"))]
    _never: std::convert::Infallible,
}

impl Engine {
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
                    // Coefficients before tanh, as Engine::finish_one takes them.
                    let out = self.model.forward_t(x, false)?;
                    Ok(vec![
                        f32_of(&out.loc)?,
                        f32_of(&crate::model::head::class_scores(&out.conf)?)?,
                        f32_of(&out.coef)?,
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

    /// The graph's (loc, class scores, mask coefficients before tanh, proto) for `img`, batch
    /// dimension kept. They
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
                mask: coef.get(0)?.tanh()?,
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
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::YolactConfig;
    use crate::engine::timing::ClockKind;

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
}
