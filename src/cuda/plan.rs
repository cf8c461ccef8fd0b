//! Launch plans: the allocations, grid sizes, argument lists and launch order of every kernel in
//! `kernels/*.cu`, written once against [`KernelHost`].
//!
//! The CUDA runtime (feature `cuda`, `src/cuda/nms.rs` and `src/cuda/ops.rs`) implements the host
//! with cudarc; `tests/kernel_emu/` implements it with a CPU emulator that compiles the
//! same `.cu` files with g++. So the plans, and the kernels they drive, run in CI on machines
//! without a GPU, and a wrong argument order, a missing zero-fill or a grid that misses elements
//! shows up there instead of on the robot. Always compiled, with or without the `cuda` feature.

use super::sources::{
    KernelSource, DCN, DCN_CHANNEL_BLOCK, DECODE, FAST_NMS, LOSS, MASKS, NMS_KMAX, NMS_THREADS,
    PREPROCESS, RESIZE,
};
use crate::error::{Error, Result};
use crate::post::types::{Kept, NmsKind, NmsOptions};

/// An address as the kernels see it: a `CUdeviceptr` on the GPU, a host address in the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPtr(pub u64);

impl DevPtr {
    /// A null pointer, for the kernels' optional parameters.
    pub const NULL: DevPtr = DevPtr(0);

    /// The address `bytes` further on.
    pub fn offset(self, bytes: usize) -> DevPtr {
        DevPtr(self.0 + bytes as u64)
    }
}

/// One kernel parameter, by value, in the kernel's C type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// Any `T*`.
    Ptr(DevPtr),
    /// `int` / `unsigned`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

/// A one-dimensional launch: `grid` blocks of `block` threads, no dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub block: u32,
}

/// Threads per block of the grid-stride kernels.
pub const GRID_STRIDE_THREADS: u32 = 256;
/// More blocks than this add nothing (the kernels stride over the rest).
const MAX_BLOCKS: usize = 1 << 20;

impl Launch {
    /// A grid-stride launch covering `n` items.
    pub fn covering(n: usize) -> Launch {
        Launch {
            grid: n
                .div_ceil(GRID_STRIDE_THREADS as usize)
                .clamp(1, MAX_BLOCKS) as u32,
            block: GRID_STRIDE_THREADS,
        }
    }

    /// `n` blocks of the NMS kernels' fixed block size.
    pub fn nms_blocks(n: usize) -> Launch {
        Launch {
            grid: n.max(1) as u32,
            block: NMS_THREADS,
        }
    }
}

/// What a plan needs from a device: memory, launches, and reading results back.
pub trait KernelHost {
    /// `bytes` of device memory that lives as long as the host value; zero-filled when `zeroed`,
    /// otherwise with unspecified contents.
    fn alloc(&mut self, bytes: usize, zeroed: bool) -> Result<DevPtr>;
    /// Launches `entry` of `src`, in order after every earlier launch.
    fn launch(
        &mut self,
        src: &KernelSource,
        entry: &str,
        launch: Launch,
        args: &[Arg],
    ) -> Result<()>;
    /// Copies `bytes` starting at `ptr`, which must lie inside one [`KernelHost::alloc`]ation,
    /// back to the host after every earlier launch has finished.
    fn read(&mut self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>>;

    fn read_i32(&mut self, ptr: DevPtr, n: usize) -> Result<Vec<i32>> {
        let b = self.read(ptr, n * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn read_f32(&mut self, ptr: DevPtr, n: usize) -> Result<Vec<f32>> {
        Ok(self
            .read_i32(ptr, n)?
            .into_iter()
            .map(|v| f32::from_bits(v as u32))
            .collect())
    }
}

/// `v` as a kernel's `int`, or an error naming it.
pub fn as_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Invalid(format!("{what} = {v} exceeds a CUDA int")))
}

fn as_i64(v: usize, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Invalid(format!("{what} = {v} exceeds a CUDA long long")))
}

/// `v`, a value the device wrote, as an index below `len`, or an error naming it: the callers
/// index tensors and slices with these, so a kernel bug must not become an out-of-range gather.
fn device_index(v: i32, len: usize, what: &str) -> Result<usize> {
    usize::try_from(v).ok().filter(|&i| i < len).ok_or_else(|| {
        Error::Invalid(format!(
            "fast_nms: device returned {what} {v}, not in 0..{len}"
        ))
    })
}

/// Parses the `[count, nan flag, idx[m], cls[m], score bits[m]]` result block of the NMS kernels
/// over `priors` priors and `classes` foreground classes; every index is range-checked.
pub fn unpack_kept(out: &[i32], m: usize, priors: usize, classes: usize) -> Result<Vec<Kept>> {
    if out.len() != 2 + 3 * m {
        return Err(Error::Invalid("fast_nms: short result block".into()));
    }
    if out[1] != 0 {
        return Err(Error::Invalid("NaN in class confidences".into()));
    }
    let count = usize::try_from(out[0]).unwrap_or(usize::MAX);
    if count > m {
        return Err(Error::Invalid(format!(
            "fast_nms: device returned {count} > {m} detections"
        )));
    }
    (0..count)
        .map(|r| {
            Ok(Kept {
                cand: device_index(out[2 + r], priors, "prior index")?,
                class: device_index(out[2 + m + r], classes, "class")? as u32,
                score: f32::from_bits(out[2 + 2 * m + r] as u32),
            })
        })
        .collect()
}

/// Candidate filter + class-wise or cross-class Fast NMS + global cap (the device twin of
/// [`crate::post::fast_nms::detect`]'s selection): `conf` (p, c1) and `boxes` (p, 4) contiguous f32.
/// Returns the kept detections best first with [`Kept::cand`] the prior index, or `None` when the
/// options are outside what the kernels hold (traditional NMS, top-k above 1024).
pub fn fast_nms_detect<H: KernelHost>(
    h: &mut H,
    conf: DevPtr,
    boxes: DevPtr,
    p: usize,
    c1: usize,
    opts: &NmsOptions,
) -> Result<Option<Vec<Kept>>> {
    if c1 < 2 {
        return Err(Error::Invalid(format!("fast_nms: {c1} score columns")));
    }
    let cap = match opts.kind {
        NmsKind::Fast => opts.max_num_detections,
        NmsKind::FastCrossClass => opts.top_k,
        NmsKind::Traditional => return Ok(None),
    };
    if opts.top_k > NMS_KMAX || cap > NMS_KMAX || p == 0 {
        return Ok(None);
    }
    let nc = c1 - 1;
    let (pi, c1i) = (as_i32(p, "priors")?, as_i32(c1, "classes")?);
    let top_k = as_i32(opts.top_k, "top_k")?;
    as_i32(nc * opts.top_k, "classes x top_k")?;
    as_i32(nc * p, "classes x priors")?;
    // fast_nms_prepare fills the first `count` slots of keys (each class row has stride p),
    // best_key, best_cls and cand_idx; count and the result block start zeroed (the kernels only
    // add to the count and OR into the NaN flag).
    let keys = h.alloc(nc * p * 4, false)?;
    let best_key = h.alloc(p * 4, false)?;
    let best_cls = h.alloc(p * 4, false)?;
    let cand_idx = h.alloc(p * 4, false)?;
    let count = h.alloc(4, true)?;
    let out = h.alloc((2 + 3 * cap) * 4, true)?;
    h.launch(
        &FAST_NMS,
        "fast_nms_prepare",
        Launch::covering(p),
        &[
            Arg::Ptr(conf),
            Arg::I32(pi),
            Arg::I32(c1i),
            Arg::F32(opts.conf_thresh),
            Arg::Ptr(keys),
            Arg::Ptr(best_key),
            Arg::Ptr(best_cls),
            Arg::Ptr(cand_idx),
            Arg::Ptr(count),
            Arg::Ptr(out),
        ],
    )?;
    match opts.kind {
        NmsKind::Fast => {
            let slots = (nc * opts.top_k).max(1);
            // The classwise kernel writes every slot's key; idx/score are read only where the
            // key is non-zero.
            let kept_idx = h.alloc(slots * 4, false)?;
            let kept_score = h.alloc(slots * 4, false)?;
            let kept_key = h.alloc(slots * 4, false)?;
            let kept_count = h.alloc(nc * 4, false)?;
            // The merge input: every class's kept entries, appended at atomic offsets.
            let m_key = h.alloc(slots * 4, false)?;
            let m_id = h.alloc(slots * 4, false)?;
            let m_count = h.alloc(4, true)?;
            h.launch(
                &FAST_NMS,
                "fast_nms_classwise",
                Launch::nms_blocks(nc),
                &[
                    Arg::Ptr(keys),
                    Arg::I64(as_i64(p, "priors")?),
                    Arg::Ptr(count),
                    Arg::I32(0),
                    Arg::Ptr(cand_idx),
                    // Class c's score of prior t: conf[t * c1 + 1 + c].
                    Arg::Ptr(conf.offset(4)),
                    Arg::I64(1),
                    Arg::I64(as_i64(c1, "classes")?),
                    Arg::Ptr(boxes),
                    Arg::I32(top_k),
                    Arg::F32(opts.iou_thresh),
                    Arg::Ptr(kept_idx),
                    Arg::Ptr(kept_score),
                    Arg::Ptr(kept_key),
                    Arg::Ptr(kept_count),
                    Arg::Ptr(m_key),
                    Arg::Ptr(m_id),
                    Arg::Ptr(m_count),
                ],
            )?;
            h.launch(
                &FAST_NMS,
                "fast_nms_merge",
                Launch::nms_blocks(1),
                &[
                    Arg::Ptr(m_key),
                    Arg::Ptr(m_id),
                    Arg::Ptr(m_count),
                    Arg::Ptr(kept_idx),
                    Arg::Ptr(kept_score),
                    Arg::I32(top_k),
                    Arg::I32(as_i32(cap, "max_num_detections")?),
                    Arg::Ptr(out),
                ],
            )?;
        }
        NmsKind::FastCrossClass => {
            h.launch(
                &FAST_NMS,
                "fast_nms_cross_class",
                Launch::nms_blocks(1),
                &[
                    Arg::Ptr(best_key),
                    Arg::Ptr(best_cls),
                    Arg::Ptr(cand_idx),
                    Arg::Ptr(count),
                    Arg::Ptr(conf),
                    Arg::I32(c1i),
                    Arg::Ptr(boxes),
                    Arg::I32(top_k),
                    Arg::F32(opts.iou_thresh),
                    Arg::Ptr(out),
                ],
            )?;
        }
        NmsKind::Traditional => return Ok(None),
    }
    let res = h.read_i32(out, 2 + 3 * cap)?;
    unpack_kept(&res, cap, p, nc).map(Some)
}

/// Per-class Fast NMS of already-filtered candidates (the device twin of
/// [`crate::post::fast_nms::fast_nms_keep`]): `scores` (nc, n) and `boxes` (n, 4) contiguous f32. Per
/// class, the kept candidates in rank order; `None` when top-k is above what the kernels hold.
pub fn fast_nms_keep<H: KernelHost>(
    h: &mut H,
    scores: DevPtr,
    boxes: DevPtr,
    nc: usize,
    n: usize,
    top_k: usize,
    iou_thresh: f32,
) -> Result<Option<Vec<Vec<Kept>>>> {
    let top_k = top_k.min(n);
    if top_k > NMS_KMAX {
        return Ok(None);
    }
    if nc == 0 || n == 0 || top_k == 0 {
        return Ok(Some(vec![Vec::new(); nc]));
    }
    let (ni, tk) = (as_i32(n, "candidates")?, as_i32(top_k, "top_k")?);
    as_i32(nc * top_k, "classes x top_k")?;
    let len = as_i64(nc * n, "classes x candidates")?;
    let keys = h.alloc(nc * n * 4, false)?;
    h.launch(
        &FAST_NMS,
        "fast_nms_keys",
        Launch::covering(nc * n),
        &[Arg::Ptr(scores), Arg::I64(len), Arg::Ptr(keys)],
    )?;
    let slots = nc * top_k;
    let kept_idx = h.alloc(slots * 4, true)?;
    let kept_score = h.alloc(slots * 4, true)?;
    let kept_key = h.alloc(slots * 4, false)?;
    let kept_count = h.alloc(nc * 4, true)?;
    h.launch(
        &FAST_NMS,
        "fast_nms_classwise",
        Launch::nms_blocks(nc),
        &[
            Arg::Ptr(keys),
            Arg::I64(as_i64(n, "candidates")?),
            Arg::Ptr(DevPtr::NULL),
            Arg::I32(ni),
            Arg::Ptr(DevPtr::NULL),
            Arg::Ptr(scores),
            Arg::I64(as_i64(n, "candidates")?),
            Arg::I64(1),
            Arg::Ptr(boxes),
            Arg::I32(tk),
            Arg::F32(iou_thresh),
            Arg::Ptr(kept_idx),
            Arg::Ptr(kept_score),
            Arg::Ptr(kept_key),
            Arg::Ptr(kept_count),
            // No merge follows.
            Arg::Ptr(DevPtr::NULL),
            Arg::Ptr(DevPtr::NULL),
            Arg::Ptr(DevPtr::NULL),
        ],
    )?;
    let idx = h.read_i32(kept_idx, slots)?;
    let score = h.read_f32(kept_score, slots)?;
    let count = h.read_i32(kept_count, nc)?;
    let mut out = Vec::with_capacity(nc);
    for (c, &cnt) in count.iter().enumerate() {
        let cnt = usize::try_from(cnt).unwrap_or(usize::MAX);
        if cnt > top_k {
            return Err(Error::Invalid(format!(
                "fast_nms: device kept {cnt} > top_k {top_k} for class {c}"
            )));
        }
        out.push(
            (0..cnt)
                .map(|r| {
                    Ok(Kept {
                        cand: device_index(idx[c * top_k + r], n, "candidate index")?,
                        class: c as u32,
                        score: score[c * top_k + r],
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(Some(out))
}

/// Sizes of one deformable im2col: x (n, c, h, w) -> cols (n, c·9, ho·wo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeformDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: usize,
}

impl DeformDims {
    /// Elements of the column buffer.
    pub fn cols_len(&self) -> usize {
        self.n * self.c * 9 * self.ho * self.wo
    }
}

/// Deformable modulated im2col (kernels/dcn.cu) into `cols` (`d.cols_len()` elements of the
/// kernel's type): x (n, c, h, w), offset (n, 18, ho, wo), mask (n, 9, ho, wo), all contiguous.
/// `entry` is the dtype's kernel, e.g. `deform_im2col_f32`.
pub fn deform_im2col<H: KernelHost>(
    h: &mut H,
    entry: &str,
    d: DeformDims,
    (x, offset, mask): (DevPtr, DevPtr, DevPtr),
    cols: DevPtr,
) -> Result<()> {
    if d.cols_len() == 0 {
        return Ok(());
    }
    let threads = d.n * d.c.div_ceil(DCN_CHANNEL_BLOCK) * 9 * d.ho * d.wo;
    // Plane offsets inside the kernel are int.
    as_i32(d.h * d.w, "plane size")?;
    h.launch(
        &DCN,
        entry,
        Launch::covering(threads),
        &[
            Arg::Ptr(x),
            Arg::Ptr(offset),
            Arg::Ptr(mask),
            Arg::Ptr(cols),
            Arg::I32(as_i32(d.n, "batch")?),
            Arg::I32(as_i32(d.c, "channels")?),
            Arg::I32(as_i32(d.h, "height")?),
            Arg::I32(as_i32(d.w, "width")?),
            Arg::I32(as_i32(d.ho, "output height")?),
            Arg::I32(as_i32(d.wo, "output width")?),
            Arg::I32(as_i32(d.stride, "stride")?),
        ],
    )
}

/// The eleven arguments shared by the deformable kernels: three inputs, one output, the sizes.
fn deform_args(d: DeformDims, ins: (DevPtr, DevPtr, DevPtr), out: DevPtr) -> Result<[Arg; 11]> {
    // Plane offsets inside the kernels are int.
    as_i32(d.h * d.w, "plane size")?;
    Ok([
        Arg::Ptr(ins.0),
        Arg::Ptr(ins.1),
        Arg::Ptr(ins.2),
        Arg::Ptr(out),
        Arg::I32(as_i32(d.n, "batch")?),
        Arg::I32(as_i32(d.c, "channels")?),
        Arg::I32(as_i32(d.h, "height")?),
        Arg::I32(as_i32(d.w, "width")?),
        Arg::I32(as_i32(d.ho, "output height")?),
        Arg::I32(as_i32(d.wo, "output width")?),
        Arg::I32(as_i32(d.stride, "stride")?),
    ])
}

/// Input gradient of the deformable im2col (kernels/dcn.cu `deform_col2im_*`): grad_cols
/// (n, c·9, ho·wo), offset (n, 18, ho, wo), mask (n, 9, ho, wo), all contiguous, added into `gx`
/// (n, c, h, w), which must be zero-filled. Atomic adds: the f32 sums' order is not fixed.
pub fn deform_col2im<H: KernelHost>(
    h: &mut H,
    entry: &str,
    d: DeformDims,
    (gcol, offset, mask): (DevPtr, DevPtr, DevPtr),
    gx: DevPtr,
) -> Result<()> {
    if d.cols_len() == 0 {
        return Ok(());
    }
    let threads = d.n * d.c.div_ceil(DCN_CHANNEL_BLOCK) * 9 * d.ho * d.wo;
    let args = deform_args(d, (gcol, offset, mask), gx)?;
    h.launch(&DCN, entry, Launch::covering(threads), &args)
}

/// Offset and mask gradients of the deformable im2col (kernels/dcn.cu `deform_col2im_coord_*`):
/// x (n, c, h, w), offset‖mask (n, 27, ho, wo), grad_cols (n, c·9, ho·wo), all contiguous, into
/// `out` (n, 27, ho, wo) = [∂offset | ∂mask], every element written. Deterministic.
pub fn deform_col2im_coord<H: KernelHost>(
    h: &mut H,
    entry: &str,
    d: DeformDims,
    (x, offmask, gcol): (DevPtr, DevPtr, DevPtr),
    out: DevPtr,
) -> Result<()> {
    let threads = d.n * 9 * d.ho * d.wo;
    if threads == 0 {
        return Ok(());
    }
    let args = deform_args(d, (x, offmask, gcol), out)?;
    h.launch(&DCN, entry, Launch::covering(threads), &args)
}

/// Bilinear resize (align_corners=False) of contiguous (planes, h, w) `src` into (planes, oh, ow)
/// `dst`. `entry` is the dtype's kernel, e.g. `resize_bilinear_f32`.
pub fn resize_bilinear<H: KernelHost>(
    h: &mut H,
    entry: &str,
    (src, dst): (DevPtr, DevPtr),
    planes: usize,
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<()> {
    let n = planes * oh * ow;
    if n == 0 {
        return Ok(());
    }
    h.launch(
        &RESIZE,
        entry,
        Launch::covering(n),
        &[
            Arg::Ptr(src),
            Arg::Ptr(dst),
            Arg::I64(as_i64(planes, "planes")?),
            Arg::I32(as_i32(ih, "height")?),
            Arg::I32(as_i32(iw, "width")?),
            Arg::I32(as_i32(oh, "output height")?),
            Arg::I32(as_i32(ow, "output width")?),
        ],
    )
}

/// Bilinear resize of contiguous (planes, h, w) f32 `src` to (oh, ow), thresholded: `dst` gets
/// planes · oh · ow bytes, 1 where the resized value is above `thresh`.
pub fn resize_threshold<H: KernelHost>(
    h: &mut H,
    (src, dst): (DevPtr, DevPtr),
    planes: usize,
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
    thresh: f32,
) -> Result<()> {
    let n = planes * oh * ow;
    if n == 0 {
        return Ok(());
    }
    h.launch(
        &RESIZE,
        "resize_threshold_u8",
        Launch::covering(n),
        &[
            Arg::Ptr(src),
            Arg::Ptr(dst),
            Arg::I64(as_i64(planes, "planes")?),
            Arg::I32(as_i32(ih, "height")?),
            Arg::I32(as_i32(iw, "width")?),
            Arg::I32(as_i32(oh, "output height")?),
            Arg::I32(as_i32(ow, "output width")?),
            Arg::F32(thresh),
        ],
    )
}

/// How the network input is normalised per RGB channel, in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    /// (v - mean[c]) / std[c].
    MeanStd { mean: [f32; 3], std: [f32; 3] },
    /// v * mul + add (candle's affine, as `x / 255` is computed).
    Affine { mul: f32, add: f32 },
}

impl Normalize {
    /// The normalisation of a config's transform, exactly as src/engine/preprocess.rs computes it.
    pub fn for_transform(t: crate::config::Transform) -> Normalize {
        match t {
            crate::config::Transform::ResNet => Normalize::MeanStd {
                mean: crate::engine::input::MEAN_RGB,
                std: crate::engine::input::STD_RGB,
            },
            // candle computes `x / 255.0` as the affine x * (1 / 255) + 0, in the tensor's dtype.
            crate::config::Transform::DarkNet => Normalize::Affine {
                mul: (1.0f64 / 255.0) as f32,
                add: 0.0,
            },
        }
    }
}

/// uint8 HWC RGB `img` (ih, iw, 3) -> `out` (3, oh, ow) in the dtype of `entry`
/// (`preprocess_rgb_f32` / `_f16` / `_bf16`): bilinear resize then `norm`.
pub fn preprocess_image<H: KernelHost>(
    h: &mut H,
    entry: &str,
    (img, out): (DevPtr, DevPtr),
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
    norm: Normalize,
) -> Result<()> {
    if ih == 0 || iw == 0 || oh == 0 || ow == 0 {
        return Err(Error::Invalid(format!(
            "preprocess: {iw}x{ih} image to {ow}x{oh}"
        )));
    }
    as_i32(ih * iw * 3, "image bytes")?;
    let (a, b, divide) = match norm {
        Normalize::MeanStd { mean, std } => (mean, std, 1),
        Normalize::Affine { mul, add } => ([add; 3], [mul; 3], 0),
    };
    h.launch(
        &PREPROCESS,
        entry,
        Launch::covering(3 * oh * ow),
        &[
            Arg::Ptr(img),
            Arg::I32(as_i32(ih, "image height")?),
            Arg::I32(as_i32(iw, "image width")?),
            Arg::I32(as_i32(oh, "input height")?),
            Arg::I32(as_i32(ow, "input width")?),
            Arg::F32(a[0]),
            Arg::F32(a[1]),
            Arg::F32(a[2]),
            Arg::F32(b[0]),
            Arg::F32(b[1]),
            Arg::F32(b[2]),
            Arg::I32(divide),
            Arg::Ptr(out),
        ],
    )
}

/// `lin` (hp·wp, n) f32 = proto @ coefsᵀ and relative `boxes` (n, 4) -> `out` (n, hp, wp) f32:
/// sigmoid, and zero outside each box's crop window when `crop`.
pub fn mask_sigmoid_crop<H: KernelHost>(
    h: &mut H,
    (lin, boxes, out): (DevPtr, DevPtr, DevPtr),
    n: usize,
    (hp, wp): (usize, usize),
    crop: bool,
) -> Result<()> {
    if n * hp * wp == 0 {
        return Ok(());
    }
    as_i32(hp * wp, "mask plane")?;
    h.launch(
        &MASKS,
        "mask_sigmoid_crop",
        Launch::covering(n * hp * wp),
        &[
            Arg::Ptr(lin),
            Arg::Ptr(boxes),
            Arg::I32(as_i32(n, "masks")?),
            Arg::I32(as_i32(hp, "mask height")?),
            Arg::I32(as_i32(wp, "mask width")?),
            Arg::I32(i32::from(crop)),
            Arg::Ptr(out),
        ],
    )
}

/// Elementwise binary cross-entropy of `n` probabilities `p` against targets `t` into `out`, all
/// contiguous f32 (PyTorch's `binary_cross_entropy`, `reduction='none'`).
pub fn bce<H: KernelHost>(
    h: &mut H,
    (p, t, out): (DevPtr, DevPtr, DevPtr),
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    h.launch(
        &LOSS,
        "bce_f32",
        Launch::covering(n),
        &[
            Arg::Ptr(p),
            Arg::Ptr(t),
            Arg::Ptr(out),
            Arg::I64(as_i64(n, "elements")?),
        ],
    )
}

/// `loc` (p, 4) regressions and `priors` (p, 4) -> `out` (p, 4) boxes, all contiguous f32.
pub fn decode_boxes<H: KernelHost>(
    h: &mut H,
    (loc, priors, out): (DevPtr, DevPtr, DevPtr),
    p: usize,
) -> Result<()> {
    if p == 0 {
        return Ok(());
    }
    as_i32(4 * p, "prior values")?;
    h.launch(
        &DECODE,
        "decode_boxes",
        Launch::covering(p),
        &[
            Arg::Ptr(loc),
            Arg::Ptr(priors),
            Arg::I32(as_i32(p, "priors")?),
            Arg::Ptr(out),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stride_launches_cover_every_item_and_stay_bounded() {
        for n in [0usize, 1, 255, 256, 257, 1 << 30] {
            let l = Launch::covering(n);
            assert_eq!(l.block, GRID_STRIDE_THREADS);
            assert!(l.grid >= 1 && l.grid as usize <= MAX_BLOCKS);
            // With the stride loop any grid covers n; without hitting the cap, one pass does.
            if n.div_ceil(256) <= MAX_BLOCKS {
                assert!(l.grid as usize * 256 >= n);
            }
        }
    }

    #[test]
    fn result_blocks_are_checked() {
        let m = 2;
        let mut out = vec![1, 0, 7, 9, 3, 4, 0, 0];
        out[6] = 0.5f32.to_bits() as i32;
        let k = unpack_kept(&out, m, 8, 4).unwrap();
        assert_eq!(k.len(), 1);
        assert_eq!((k[0].cand, k[0].class, k[0].score), (7, 3, 0.5));
        out[1] = 1;
        assert!(unpack_kept(&out, m, 8, 4)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
        out[1] = 0;
        out[0] = 3;
        assert!(unpack_kept(&out, m, 8, 4).is_err());
        assert!(unpack_kept(&out[..5], m, 8, 4).is_err());
    }

    #[test]
    fn device_indices_outside_the_inputs_are_errors() {
        let score = 0.5f32.to_bits() as i32;
        // One detection: prior 7, class 3.
        let ok = [1, 0, 7, 0, 3, 0, score, 0];
        assert_eq!(unpack_kept(&ok, 2, 8, 4).unwrap()[0].cand, 7);
        for (priors, classes, what) in [(7, 4, "prior index 7"), (8, 3, "class 3")] {
            let e = unpack_kept(&ok, 2, priors, classes)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what) && e.contains("not in 0.."), "{e}");
        }
        let mut neg = ok;
        neg[2] = -1;
        let e = unpack_kept(&neg, 2, 8, 4).unwrap_err().to_string();
        assert!(e.contains("prior index -1"), "{e}");
        // Slots past the count are never read, whatever they hold.
        let mut tail = ok;
        tail[3] = -5;
        assert_eq!(unpack_kept(&tail, 2, 8, 4).unwrap().len(), 1);
    }
}
