//! `yolact bench-ops`: our deformable 3x3 conv against a plain 3x3 conv of the same shape, for every
//! distinct DCN shape of a YOLACT++ backbone (issue 3: "DCN within 1.5x of a plain conv").
//!
//! The shapes come from the same rule the model uses to place its deformable convs
//! ([`YolactConfig::is_dcn_block`]) and the ResNet geometry, so they are the ones a frame runs.
//! `tools/bench_reference.py --ops --shapes` reads them back from our `--json` output, so the
//! PyTorch side times exactly the same list.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use yolact_ros2::config::{builtin_names, BackboneKind, YolactConfig};
use yolact_ros2::engine::ClockKind;
use yolact_ros2::model::layers::{conv_out, Conv2d, DeformConv2d};
use yolact_ros2::model::stage_sizes;

use super::bench::Spread;

/// `yolact bench-ops --help`.
pub const LONG_ABOUT: &str = "Time our modulated deformable 3x3 conv (DCNv2) against a plain 3x3 conv of the \
same shape, for every distinct deformable conv shape of a YOLACT++ ResNet backbone.\n\n\
Per shape (C_in = C_out = planes, input H x W, stride, number of blocks with that shape) three ops \
are timed on random data:\n  \
conv       the model's plain 3x3 conv (pad 1, bias); on CUDA candle's conv2d + bias\n  \
dcn        modulated_deform_conv2d alone, random offsets in [-2, 2] px and a sigmoid mask\n  \
dcn_layer  the whole deformable layer as the model runs it: 27-channel offset/mask conv, sigmoid, DCN\n\n\
On CUDA each iteration is bracketed by CUDA events on candle's stream, queued back to back with one \
wait at the end; on the CPU by the wall clock with a device synchronize. The report gives median, min \
and max per op, the dcn / conv ratio per shape and the block-count-weighted total.\n\n\
Example: yolact bench-ops --device cuda --half --iters 100 --warmup 10 --json";

#[derive(Debug, clap::Args)]
pub struct BenchOpsArgs {
    /// Config whose backbone's deformable convs are timed (a YOLACT++ one).
    #[arg(long, value_name = "NAME", default_value = "yolact_plus_resnet50",
          value_parser = clap::builder::PossibleValuesParser::new(builtin_names()))]
    pub config: String,
    /// Square input size in pixels; the config's (550) when omitted. Smaller sizes make quick CPU
    /// runs (the channel counts stay those of the model).
    #[arg(long, value_name = "N")]
    pub size: Option<usize>,
    /// cpu, cuda[:N] or auto (CUDA device 0 when usable, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Time in f16 (CUDA only).
    #[arg(long)]
    pub half: bool,
    /// Timed iterations per op and shape (after the warm-up).
    #[arg(long, default_value_t = 100)]
    pub iters: usize,
    /// Untimed warm-up iterations per op and shape (NVRTC compilation, cuBLAS heuristics).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One distinct deformable conv shape of a backbone: C_in = C_out = `channels`, input
/// `height` x `width`, `stride`, and how many blocks have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DcnShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub stride: usize,
    pub count: usize,
}

impl DcnShape {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            conv_out(self.height, 3, self.stride, 1),
            conv_out(self.width, 3, self.stride, 1),
        )
    }
}

/// The distinct deformable 3x3 conv shapes of `cfg`'s backbone for a `size` x `size` input, in
/// network order, with their block counts. An error for a config without deformable convs.
pub fn dcn_shapes(cfg: &YolactConfig, size: usize) -> Result<Vec<DcnShape>> {
    let BackboneKind::ResNet {
        blocks,
        width: base_width,
        ..
    } = &cfg.backbone
    else {
        bail!(
            "config `{}` has no deformable convs (not a ResNet backbone)",
            cfg.name
        );
    };
    if size == 0 {
        bail!("--size must be at least 1");
    }
    // The network's geometry: each stage's output size (the first keeps the stem's).
    let stages = stage_sizes(cfg, size, size);
    let mut shapes: Vec<DcnShape> = Vec::new();
    for (stage, &n) in blocks.iter().enumerate() {
        for block in 0..n {
            // torchvision v1.5: the stride sits on the 3x3 of a stage's first block, whose input
            // is the previous stage's output; every later block runs at the stage's own size.
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let input = if stride == 2 { stage - 1 } else { stage };
            let Some(&(height, width)) = stages.get(input) else {
                bail!(
                    "config `{}`: no geometry for backbone stage {input}",
                    cfg.name
                );
            };
            if cfg.is_dcn_block(stage, block) {
                let s = DcnShape {
                    channels: base_width << stage,
                    height,
                    width,
                    stride,
                    count: 1,
                };
                match shapes
                    .iter_mut()
                    .find(|e| DcnShape { count: 1, ..**e } == s)
                {
                    Some(e) => e.count += 1,
                    None => shapes.push(s),
                }
            }
        }
    }
    if shapes.is_empty() {
        let plus: Vec<&str> = builtin_names()
            .filter(|n| YolactConfig::by_name(n).is_ok_and(|c| has_dcn(&c)))
            .collect();
        bail!(
            "config `{}` has no deformable convs; use one of: {}",
            cfg.name,
            plus.join(", ")
        );
    }
    Ok(shapes)
}

fn has_dcn(cfg: &YolactConfig) -> bool {
    matches!(
        cfg.backbone,
        BackboneKind::ResNet {
            dcn_interval: Some(_),
            ..
        }
    )
}

/// The ops timed per shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The model's plain 3x3 conv (pad 1, bias).
    Conv,
    /// `modulated_deform_conv2d` alone, on given offsets and mask.
    Dcn,
    /// The model's whole deformable layer: offset/mask conv, sigmoid, DCN.
    DcnLayer,
}

impl Op {
    /// Report order; a [`ShapeTimes`] holds one spread per op in this order.
    pub const ALL: [Op; 3] = [Op::Conv, Op::Dcn, Op::DcnLayer];

    /// Stable name for JSON and tables (shared with `tools/bench_reference.py --ops`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Conv => "conv",
            Op::Dcn => "dcn",
            Op::DcnLayer => "dcn_layer",
        }
    }
}

/// One shape's inputs and layers, on the device, in the timed dtype.
struct Case {
    x: Tensor,
    conv: Conv2d,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    layer: DeformConv2d,
}

impl Case {
    fn new(s: &DcnShape, device: &Device, dtype: DType) -> Result<Self> {
        let c = s.channels;
        let (ho, wo) = s.out_hw();
        // Drawn on the host and copied: no dependence on the device's RNG (cuRAND refuses odd
        // normal counts), and the same kind of data on every device.
        let randn = |std: f64, shape: &[usize]| -> candle_core::Result<Tensor> {
            Tensor::randn(0f32, std as f32, shape, &Device::Cpu)?.to_device(device)
        };
        // He-scaled weights keep activations O(1), so f16 neither overflows nor underflows.
        let w_std = (2.0 / (9.0 * c as f64)).sqrt();
        let x = randn(1.0, &[1, c, s.height, s.width])?;
        let weight = randn(w_std, &[c, c, 3, 3])?;
        let bias = randn(0.1, &[c])?;
        let offset = Tensor::rand(-2f32, 2f32, (1, 18, ho, wo), &Device::Cpu)?.to_device(device)?;
        let mask = candle_nn::ops::sigmoid(&randn(1.0, &[1, 9, ho, wo])?)?;
        // Offset weights of std 1/sqrt(9C) give offsets of about one pixel, the trained models' scale.
        let om_w = randn(1.0 / (9.0 * c as f64).sqrt(), &[27, c, 3, 3])?;
        let layer = deform_layer(&weight, &bias, &om_w, c, s.stride, device, dtype)
            .context("building the deformable layer")?;
        let cast = |t: Tensor| t.to_dtype(dtype);
        let conv = Conv2d::new(
            cast(weight.clone())?,
            Some(cast(bias.clone())?),
            s.stride,
            1,
        )?;
        Ok(Case {
            x: cast(x)?,
            conv,
            offset: cast(offset)?,
            mask: cast(mask)?,
            weight: cast(weight)?,
            bias: cast(bias)?,
            stride: s.stride,
            layer,
        })
    }

    fn run(&self, op: Op) -> candle_core::Result<Tensor> {
        match op {
            Op::Conv => self.conv.forward(&self.x),
            Op::Dcn => yolact_ros2::ops::dcn::modulated_deform_conv2d(
                &self.x,
                &self.offset,
                &self.mask,
                &self.weight,
                &self.bias,
                self.stride,
            ),
            Op::DcnLayer => self.layer.forward(&self.x),
        }
    }
}

/// The model's own [`DeformConv2d`], loaded from tensors under the checkpoint's key names with an
/// identity batch norm, so the timed layer is the one a frame runs (same casts, same ops).
fn deform_layer(
    weight: &Tensor,
    bias: &Tensor,
    offset_mask_weight: &Tensor,
    c: usize,
    stride: usize,
    device: &Device,
    dtype: DType,
) -> Result<DeformConv2d> {
    let ones = Tensor::ones(c, DType::F32, device)?;
    let zeros = Tensor::zeros(c, DType::F32, device)?;
    let map: HashMap<String, Tensor> = [
        ("conv.weight", weight.clone()),
        ("conv.bias", bias.clone()),
        ("conv.conv_offset_mask.weight", offset_mask_weight.clone()),
        (
            "conv.conv_offset_mask.bias",
            Tensor::zeros(27, DType::F32, device)?,
        ),
        ("bn.weight", ones.clone()),
        ("bn.bias", zeros.clone()),
        ("bn.running_mean", zeros),
        ("bn.running_var", ones),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let vb = VarBuilder::from_tensors(map, dtype, device);
    Ok(DeformConv2d::load_bn(
        vb.pp("conv"),
        vb.pp("bn"),
        c,
        c,
        stride,
    )?)
}

/// Times `iters` runs of `f` after `warmup` untimed ones. CUDA: one event between consecutive
/// iterations, all queued back to back and waited for once, so each sample is the device's time
/// for one iteration (plus any host gap that left the GPU idle). CPU: wall clock per iteration,
/// the output synchronised before the clock stops.
fn time_op(
    device: &Device,
    warmup: usize,
    iters: usize,
    f: &dyn Fn() -> candle_core::Result<Tensor>,
) -> Result<Vec<Duration>> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        let mut clock = yolact_ros2::cuda::timing::EventClock::start(dev)?;
        for _ in 0..iters {
            let y = f()?;
            clock.mark()?;
            drop(y);
        }
        let marks = clock.finish()?;
        let mut prev = Duration::ZERO;
        return Ok(marks
            .into_iter()
            .map(|m| {
                let d = m.saturating_sub(prev);
                prev = m;
                d
            })
            .collect());
    }
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        let y = f()?;
        device.synchronize()?;
        out.push(t0.elapsed());
        drop(y);
    }
    Ok(out)
}

/// One shape's timings, in [`Op::ALL`] order.
#[derive(Debug, Clone)]
pub struct ShapeTimes {
    pub shape: DcnShape,
    pub ops: Vec<Spread>,
}

impl ShapeTimes {
    fn median(&self, op: Op) -> f64 {
        Op::ALL
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.ops.get(i))
            .map_or(f64::NAN, |s| s.median)
    }
}

/// The JSON form of an [`OpsReport`].
#[derive(Serialize)]
struct OpsReportJson<'a> {
    tool: &'static str,
    config: &'a str,
    size: usize,
    device: &'a str,
    dtype: &'a str,
    clock: &'static str,
    iters: usize,
    warmup: usize,
    shapes: Vec<ShapeJson>,
    total_ms: BTreeMap<&'static str, f64>,
    ratio_dcn_conv: f64,
    ratio_dcn_layer_conv: f64,
}

/// One shape of [`OpsReportJson`].
#[derive(Serialize)]
struct ShapeJson {
    channels: usize,
    height: usize,
    width: usize,
    stride: usize,
    out_height: usize,
    out_width: usize,
    count: usize,
    ops: BTreeMap<&'static str, Spread>,
    ratio_dcn_conv: f64,
    ratio_dcn_layer_conv: f64,
}

/// Everything one `yolact bench-ops` run reports.
#[derive(Debug, Clone)]
pub struct OpsReport {
    pub config: String,
    pub size: usize,
    pub device: String,
    pub dtype: String,
    pub clock: ClockKind,
    pub iters: usize,
    pub warmup: usize,
    pub shapes: Vec<ShapeTimes>,
}

impl OpsReport {
    /// Sum over shapes of count x median of `op`, in ms: the op's share of one frame.
    pub fn weighted_total(&self, op: Op) -> f64 {
        self.shapes
            .iter()
            .map(|s| s.shape.count as f64 * s.median(op))
            .sum()
    }

    /// The `--json` document (through a `Value`, whose sorted keys are the order
    /// tools/bench_reference.py has always read).
    pub fn json(&self) -> Result<serde_json::Value> {
        let shapes: Vec<ShapeJson> = self
            .shapes
            .iter()
            .map(|t| {
                let s = t.shape;
                let (out_height, out_width) = s.out_hw();
                ShapeJson {
                    channels: s.channels,
                    height: s.height,
                    width: s.width,
                    stride: s.stride,
                    out_height,
                    out_width,
                    count: s.count,
                    ops: Op::ALL
                        .iter()
                        .map(|op| op.name())
                        .zip(t.ops.iter().copied())
                        .collect(),
                    ratio_dcn_conv: t.median(Op::Dcn) / t.median(Op::Conv),
                    ratio_dcn_layer_conv: t.median(Op::DcnLayer) / t.median(Op::Conv),
                }
            })
            .collect();
        let conv = self.weighted_total(Op::Conv);
        let doc = OpsReportJson {
            tool: "yolact bench-ops",
            config: &self.config,
            size: self.size,
            device: &self.device,
            dtype: &self.dtype,
            clock: self.clock.as_str(),
            iters: self.iters,
            warmup: self.warmup,
            shapes,
            total_ms: Op::ALL
                .iter()
                .map(|op| (op.name(), self.weighted_total(*op)))
                .collect(),
            ratio_dcn_conv: self.weighted_total(Op::Dcn) / conv,
            ratio_dcn_layer_conv: self.weighted_total(Op::DcnLayer) / conv,
        };
        Ok(serde_json::to_value(doc)?)
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{} deformable 3x3 convs at {}x{} on {} ({}), {} iterations after {} warm-up, timing: {}\n",
            self.config,
            self.size,
            self.size,
            self.device,
            self.dtype,
            self.iters,
            self.warmup,
            self.clock.describe()
        );
        out += "ms: median (min-max)\n";
        out += &format!(
            "{:<24} {:>5} {:>22} {:>22} {:>22} {:>8} {:>8}\n",
            "C, HxW, stride", "count", "conv", "dcn", "dcn_layer", "dcn/conv", "layer/cv"
        );
        let cell = |s: &Spread| format!("{:.3} ({:.3}-{:.3})", s.median, s.min, s.max);
        for t in &self.shapes {
            let s = t.shape;
            let name = format!("{}, {}x{}, /{}", s.channels, s.height, s.width, s.stride);
            out += &format!("{name:<24} {:>5}", s.count);
            for sp in &t.ops {
                out += &format!(" {:>22}", cell(sp));
            }
            out += &format!(
                " {:>8.2} {:>8.2}\n",
                t.median(Op::Dcn) / t.median(Op::Conv),
                t.median(Op::DcnLayer) / t.median(Op::Conv)
            );
        }
        let n: usize = self.shapes.iter().map(|s| s.shape.count).sum();
        let conv = self.weighted_total(Op::Conv);
        out += &format!(
            "{:<24} {:>5} {:>22.3} {:>22.3} {:>22.3} {:>8.2} {:>8.2}\n",
            "total (count x median)",
            n,
            conv,
            self.weighted_total(Op::Dcn),
            self.weighted_total(Op::DcnLayer),
            self.weighted_total(Op::Dcn) / conv,
            self.weighted_total(Op::DcnLayer) / conv
        );
        out
    }
}

pub fn run(a: BenchOpsArgs) -> Result<ExitCode> {
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let cfg = YolactConfig::by_name(&a.config)?;
    let size = a.size.unwrap_or(cfg.max_size);
    let shapes = dcn_shapes(&cfg, size)?;
    let sel = super::select(&a.device, a.half)?;
    let (device, dtype) = (sel.device, sel.dtype);
    let mut times = Vec::with_capacity(shapes.len());
    for s in &shapes {
        let what = format!(
            "{} channels, {}x{}, stride {}",
            s.channels, s.height, s.width, s.stride
        );
        let case = Case::new(s, &device, dtype).with_context(|| format!("inputs for {what}"))?;
        let mut ops = Vec::with_capacity(Op::ALL.len());
        for op in Op::ALL {
            let samples = time_op(&device, a.warmup, a.iters, &|| case.run(op))
                .with_context(|| format!("timing {} for {what}", op.name()))?;
            ops.push(Spread::of(&samples));
        }
        log::info!("timed {what}");
        times.push(ShapeTimes { shape: *s, ops });
    }
    let r = OpsReport {
        config: cfg.name.to_string(),
        size,
        device: format!("{device:?}").to_lowercase(),
        dtype: format!("{dtype:?}").to_lowercase(),
        clock: ClockKind::default_for(&device),
        iters: a.iters,
        warmup: a.warmup,
        shapes: times,
    };
    if a.json {
        println!("{}", r.json()?);
    } else {
        print!("{}", r.table());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(channels: usize, hw: usize, stride: usize, count: usize) -> DcnShape {
        DcnShape {
            channels,
            height: hw,
            width: hw,
            stride,
            count,
        }
    }

    /// At 550 the stem gives 275, the pool 138; stages 1..3 halve it on their first block (69, 35,
    /// 18). ++R50 deforms every block of stages 1..3 (dcn_layers [0, 4, 6, 3], interval 1);
    /// ++R101 every third block (interval 3): stage 1 blocks 0 and 3, stage 2 blocks 0, 3, .., 21,
    /// stage 3 block 0.
    #[test]
    fn shapes_follow_the_reference_backbones_at_550() {
        let r50 = dcn_shapes(&YolactConfig::by_name("yolact_plus_resnet50").unwrap(), 550).unwrap();
        assert_eq!(
            r50,
            [
                shape(128, 138, 2, 1),
                shape(128, 69, 1, 3),
                shape(256, 69, 2, 1),
                shape(256, 35, 1, 5),
                shape(512, 35, 2, 1),
                shape(512, 18, 1, 2),
            ]
        );
        let r101 = dcn_shapes(&YolactConfig::by_name("yolact_plus_base").unwrap(), 550).unwrap();
        assert_eq!(
            r101,
            [
                shape(128, 138, 2, 1),
                shape(128, 69, 1, 1),
                shape(256, 69, 2, 1),
                shape(256, 35, 1, 7),
                shape(512, 35, 2, 1),
            ]
        );
        assert_eq!(r50[0].out_hw(), (69, 69));
        assert_eq!(r50[5].out_hw(), (18, 18));
        // Odd sizes round up, as PyTorch's floor((h + 2 - 3) / 2) + 1 does.
        let small =
            dcn_shapes(&YolactConfig::by_name("yolact_plus_resnet50").unwrap(), 65).unwrap();
        assert_eq!((small[0].height, small[0].out_hw().0), (17, 9));
    }

    #[test]
    fn configs_without_dcn_and_empty_inputs_are_errors() {
        for name in ["yolact_resnet50", "yolact_base", "yolact_darknet53"] {
            let e = dcn_shapes(&YolactConfig::by_name(name).unwrap(), 550).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("no deformable convs"), "{msg}");
        }
        let e = dcn_shapes(&YolactConfig::by_name("yolact_resnet50").unwrap(), 550).unwrap_err();
        assert!(e.to_string().contains("yolact_plus_base"), "{e}");
        assert!(dcn_shapes(&YolactConfig::by_name("yolact_plus_base").unwrap(), 0).is_err());
    }

    #[test]
    fn totals_weight_medians_by_block_count() {
        let sp = |m: f64| Spread {
            median: m,
            min: m,
            max: m,
        };
        let r = OpsReport {
            config: "yolact_plus_resnet50".into(),
            size: 64,
            device: "cpu".into(),
            dtype: "f32".into(),
            clock: ClockKind::Wall,
            iters: 1,
            warmup: 0,
            shapes: vec![
                ShapeTimes {
                    shape: shape(128, 16, 2, 1),
                    ops: vec![sp(1.0), sp(3.0), sp(4.0)],
                },
                ShapeTimes {
                    shape: shape(128, 8, 1, 3),
                    ops: vec![sp(2.0), sp(2.0), sp(5.0)],
                },
            ],
        };
        assert_eq!(r.weighted_total(Op::Conv), 7.0);
        assert_eq!(r.weighted_total(Op::Dcn), 9.0);
        let v = r.json().unwrap();
        assert_eq!(v["total_ms"]["dcn_layer"].as_f64(), Some(19.0));
        assert_eq!(v["ratio_dcn_conv"].as_f64(), Some(9.0 / 7.0));
        assert_eq!(v["shapes"][0]["ratio_dcn_conv"].as_f64(), Some(3.0));
        assert_eq!(v["shapes"][1]["out_height"].as_u64(), Some(8));
        assert_eq!(v["shapes"][0]["out_width"].as_u64(), Some(8));
        assert_eq!(v["clock"], "wall");
        let t = r.table();
        assert!(t.contains("total (count x median)"), "{t}");
    }

    /// The timed ops compute what they claim: the DCN with zero offsets and a unit mask is the
    /// plain conv, and the layer with a zero offset conv is the DCN with mask 0.5.
    #[test]
    fn the_timed_ops_are_the_convs_they_name() {
        let s = shape(8, 7, 2, 1);
        let dev = Device::Cpu;
        let mut case = Case::new(&s, &dev, DType::F32).unwrap();
        let (ho, wo) = s.out_hw();
        case.offset = Tensor::zeros((1, 18, ho, wo), DType::F32, &dev).unwrap();
        case.mask = Tensor::ones((1, 9, ho, wo), DType::F32, &dev).unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let conv = case.run(Op::Conv).unwrap();
        assert_eq!(conv.dims(), &[1, 8, 4, 4]);
        assert!(diff(&case.run(Op::Dcn).unwrap(), &conv) < 1e-4);

        let zero_om = Tensor::zeros((27, 8, 3, 3), DType::F32, &dev).unwrap();
        let layer =
            deform_layer(&case.weight, &case.bias, &zero_om, 8, 2, &dev, DType::F32).unwrap();
        // mask sigmoid(0) = 0.5 scales the weighted sum, not the bias.
        let half = ((&conv
            - &case
                .bias
                .reshape((1, 8, 1, 1))
                .unwrap()
                .broadcast_as(conv.shape())
                .unwrap())
            .unwrap()
            * 0.5)
            .unwrap()
            .broadcast_add(&case.bias.reshape((1, 8, 1, 1)).unwrap())
            .unwrap();
        assert!(diff(&layer.forward(&case.x).unwrap(), &half) < 1e-4);
    }
}
