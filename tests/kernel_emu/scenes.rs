//! Synthetic inputs shared by the kernel tests (tests/it/cuda_emu.rs on the CPU emulator,
//! tests/cuda_gpu.rs on a GPU), so both exercise the kernels on the same scenes.

use candle_core::{Device, Tensor};

/// Deterministic uniform values in [lo, hi).
pub fn uniform(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Boxes clustered around a few centres (so many overlap near the threshold) and scores with
/// ties, over `p` priors and `c1` = 1 + classes columns.
pub fn nms_inputs(p: usize, c1: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    let centres = uniform(2 * 12, seed, 0.1, 0.9);
    let jitter = uniform(4 * p, seed + 1, -0.04, 0.04);
    let size = uniform(2 * p, seed + 2, 0.05, 0.3);
    let mut boxes = Vec::with_capacity(4 * p);
    for i in 0..p {
        let c = i % 12;
        let (cx, cy) = (
            centres[2 * c] + jitter[4 * i],
            centres[2 * c + 1] + jitter[4 * i + 1],
        );
        let (w, h) = (size[2 * i], size[2 * i + 1]);
        boxes.extend_from_slice(&[cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
    }
    // Quantised logits: many exact ties across priors, as real softmax outputs have at 0.
    let logits: Vec<f32> = uniform(p * c1, seed + 3, -6.0, 2.0)
        .into_iter()
        .map(|v| (v * 4.0).round() / 4.0)
        .collect();
    let conf = Tensor::from_vec(logits, (p, c1), &Device::Cpu).unwrap();
    let conf = candle_nn::ops::softmax_last_dim(&conf).unwrap();
    let boxes = Tensor::from_vec(boxes, (p, 4), &Device::Cpu).unwrap();
    let coefs =
        Tensor::from_vec(uniform(p * 8, seed + 4, -1.0, 1.0), (p, 8), &Device::Cpu).unwrap();
    (boxes, conf, coefs)
}
