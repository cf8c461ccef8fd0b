//! Fast NMS on the device (kernels/fast_nms.cu), end to end: candidate filter and sort keys, per
//! class top-k + IoU + keep, global top-k, with the only device-to-host copy at the very end.
//!
//! Same results as the host stages in [`crate::fast_nms`] (asserted by tests/cuda_gpu.rs): the
//! ordering is the host's stable descending sort, and the IoU is evaluated with unfused f32
//! arithmetic.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, DType, Storage, Tensor};

use super::runtime::{as_i32, func, grid_for};
use super::sources::{FAST_NMS, NMS_KMAX, NMS_THREADS};
use crate::error::{Error, Result};
use crate::fast_nms::{Kept, NmsKind, NmsOptions};

fn blocks(n: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.max(1), 1, 1),
        block_dim: (NMS_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Runs `f` on the f32 device buffer of a contiguous CUDA tensor.
fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaDevice, CudaView<'_, f32>) -> Result<R>,
) -> Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::Invalid(format!("{what}: not a CUDA tensor")));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Invalid(format!("{what}: not contiguous")))?;
    let view = s.as_cuda_slice::<f32>()?.slice(start..end);
    f(&s.device, view)
}

/// Parses the `[count, nan flag, idx[m], cls[m], score bits[m]]` result block.
fn unpack(out: &[i32], m: usize) -> Result<Vec<Kept>> {
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
    Ok((0..count)
        .map(|r| Kept {
            cand: out[2 + r] as usize,
            class: out[2 + m + r] as u32,
            score: f32::from_bits(out[2 + 2 * m + r] as u32),
        })
        .collect())
}

/// Device version of the candidate filter + class-wise or cross-class Fast NMS + global cap of
/// [`crate::fast_nms::detect`]: `boxes` (P, 4) and `conf` (P, 1 + C) on a CUDA device. Returns
/// the kept detections best first, with [`Kept::cand`] the **prior** index; `None` when the
/// options are outside what the kernels hold (traditional NMS, top-k above 1024), so the caller
/// uses the host path.
pub fn detect_keep(boxes: &Tensor, conf: &Tensor, opts: &NmsOptions) -> Result<Option<Vec<Kept>>> {
    let (p, c1) = conf.dims2()?;
    if c1 < 2 || boxes.dims() != [p, 4] {
        return Err(Error::Invalid(format!(
            "fast_nms: boxes {:?} and conf {:?}",
            boxes.dims(),
            conf.dims()
        )));
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
    let (pi, c1i, nci) = (
        as_i32(p, "priors")?,
        as_i32(c1, "classes")?,
        as_i32(nc, "classes")?,
    );
    let top_k = as_i32(opts.top_k, "top_k")?;
    as_i32(nc * opts.top_k, "classes x top_k")?;
    let out = with_f32(conf, "conf", |dev, conf| {
        with_f32(boxes, "boxes", |_, boxes| {
            let stream = dev.cuda_stream();
            // SAFETY: fast_nms_prepare writes all nc*p keys and all p best entries.
            let keys: CudaSlice<u32> = unsafe { dev.alloc(nc * p)? };
            let best_key: CudaSlice<u32> = unsafe { dev.alloc(p)? };
            let best_cls: CudaSlice<i32> = unsafe { dev.alloc(p)? };
            let out: CudaSlice<i32> = dev.alloc_zeros(2 + 3 * cap)?;
            let thresh = opts.conf_thresh;
            let iou = opts.iou_thresh;

            let f = func(dev, &FAST_NMS, "fast_nms_prepare")?;
            let mut b = stream.launch_builder(&f);
            b.arg(&conf).arg(&pi).arg(&c1i).arg(&thresh);
            b.arg(&keys).arg(&best_key).arg(&best_cls).arg(&out);
            // SAFETY: matches fast_nms_prepare's parameter list.
            unsafe { b.launch(grid_for(p)) }.w()?;

            match opts.kind {
                NmsKind::Fast => {
                    let slots = nc * opts.top_k;
                    // SAFETY: the classwise kernel writes every slot's key; idx/score are only
                    // read where the key is non-zero.
                    let kept_idx: CudaSlice<i32> = unsafe { dev.alloc(slots.max(1))? };
                    let kept_score: CudaSlice<f32> = unsafe { dev.alloc(slots.max(1))? };
                    let kept_key: CudaSlice<u32> = unsafe { dev.alloc(slots.max(1))? };
                    let kept_count: CudaSlice<i32> = unsafe { dev.alloc(nc)? };
                    let scores = conf.slice(1..);
                    let (sc, si) = (1i64, c1 as i64);
                    let f = func(dev, &FAST_NMS, "fast_nms_classwise")?;
                    let mut b = stream.launch_builder(&f);
                    b.arg(&keys).arg(&scores).arg(&sc).arg(&si).arg(&pi);
                    b.arg(&boxes).arg(&top_k).arg(&iou);
                    b.arg(&kept_idx)
                        .arg(&kept_score)
                        .arg(&kept_key)
                        .arg(&kept_count);
                    // SAFETY: matches fast_nms_classwise; one block per class.
                    unsafe { b.launch(blocks(nc as u32)) }.w()?;

                    let max_det = as_i32(cap, "max_num_detections")?;
                    let f = func(dev, &FAST_NMS, "fast_nms_merge")?;
                    let mut b = stream.launch_builder(&f);
                    b.arg(&kept_key).arg(&kept_idx).arg(&kept_score);
                    b.arg(&nci).arg(&top_k).arg(&max_det).arg(&out);
                    // SAFETY: matches fast_nms_merge; a single block.
                    unsafe { b.launch(blocks(1)) }.w()?;
                }
                NmsKind::FastCrossClass => {
                    let f = func(dev, &FAST_NMS, "fast_nms_cross_class")?;
                    let mut b = stream.launch_builder(&f);
                    b.arg(&best_key)
                        .arg(&best_cls)
                        .arg(&conf)
                        .arg(&c1i)
                        .arg(&pi);
                    b.arg(&boxes).arg(&top_k).arg(&iou).arg(&out);
                    // SAFETY: matches fast_nms_cross_class; a single block.
                    unsafe { b.launch(blocks(1)) }.w()?;
                }
                NmsKind::Traditional => unreachable!("returned above"),
            }
            Ok(dev.clone_dtoh(&out)?)
        })
    })?;
    unpack(&out, cap).map(Some)
}

/// Device version of [`crate::fast_nms::fast_nms_keep_tensor`]: `scores` (C, n) and `boxes`
/// (n, 4) on a CUDA device; per class, the kept candidates in rank order. `None` when top-k is
/// above what the kernels hold.
pub fn fast_nms_keep(
    scores: &Tensor,
    boxes: &Tensor,
    top_k: usize,
    iou_thresh: f32,
) -> Result<Option<Vec<Vec<Kept>>>> {
    let (nc, n) = scores.dims2()?;
    let top_k = top_k.min(n);
    if top_k > NMS_KMAX {
        return Ok(None);
    }
    if nc == 0 || n == 0 || top_k == 0 {
        return Ok(Some(vec![Vec::new(); nc]));
    }
    let (ni, tk) = (as_i32(n, "candidates")?, as_i32(top_k, "top_k")?);
    as_i32(nc * top_k, "classes x top_k")?;
    let (idx, score, count) = with_f32(scores, "scores", |dev, s| {
        with_f32(boxes, "boxes", |_, bx| {
            let stream = dev.cuda_stream();
            // SAFETY: fast_nms_keys writes all nc*n keys; the classwise kernel every slot's key.
            let keys: CudaSlice<u32> = unsafe { dev.alloc(nc * n)? };
            let len = (nc * n) as i64;
            let f = func(dev, &FAST_NMS, "fast_nms_keys")?;
            let mut b = stream.launch_builder(&f);
            b.arg(&s).arg(&len).arg(&keys);
            // SAFETY: matches fast_nms_keys.
            unsafe { b.launch(grid_for(nc * n)) }.w()?;

            let slots = nc * top_k;
            let kept_idx: CudaSlice<i32> = dev.alloc_zeros(slots)?;
            let kept_score: CudaSlice<f32> = dev.alloc_zeros(slots)?;
            let kept_key: CudaSlice<u32> = unsafe { dev.alloc(slots)? };
            let kept_count: CudaSlice<i32> = dev.alloc_zeros(nc)?;
            let (sc, si) = (n as i64, 1i64);
            let f = func(dev, &FAST_NMS, "fast_nms_classwise")?;
            let mut b = stream.launch_builder(&f);
            b.arg(&keys).arg(&s).arg(&sc).arg(&si).arg(&ni);
            b.arg(&bx).arg(&tk).arg(&iou_thresh);
            b.arg(&kept_idx)
                .arg(&kept_score)
                .arg(&kept_key)
                .arg(&kept_count);
            // SAFETY: matches fast_nms_classwise; one block per class.
            unsafe { b.launch(blocks(nc as u32)) }.w()?;
            Ok((
                dev.clone_dtoh(&kept_idx)?,
                dev.clone_dtoh(&kept_score)?,
                dev.clone_dtoh(&kept_count)?,
            ))
        })
    })?;
    let mut out = Vec::with_capacity(nc);
    for (c, &cnt) in count.iter().enumerate() {
        let cnt = usize::try_from(cnt).unwrap_or(usize::MAX).min(top_k);
        out.push(
            (0..cnt)
                .map(|r| Kept {
                    cand: idx[c * top_k + r] as usize,
                    class: c as u32,
                    score: score[c * top_k + r],
                })
                .collect(),
        );
    }
    Ok(Some(out))
}
