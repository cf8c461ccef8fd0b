//! Host-side mask work per frame that the CUDA path used to do and now leaves on the device
//! (kernels/masks.cu, resize_threshold_u8 in kernels/resize.cu): the crop of n soft 138x138 masks
//! (built on the host from boxes copied off the GPU) and their upsample + threshold to a 640x480
//! image. On the CPU path these are still the costs of the `masks` stage.
//!
//! Run: `cargo bench --bench host_masks`. Prints median and spread (std::time only, after warm-up).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use yolact_ros2::ops::interp::resize_threshold_planes;
use yolact_ros2::post::masks::crop_masks;

const HP: usize = 138;
const WP: usize = 138;
const H: usize = 480;
const W: usize = 640;
const WARMUP: usize = 5;
const ITERS: usize = 50;

fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn summary(name: &str, mut t: Vec<Duration>) {
    t.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = t.len();
    println!(
        "{name:<40} n={n:<3} median {:>8.3} ms   min {:>8.3} ms   p90 {:>8.3} ms   max {:>8.3} ms",
        ms(t[n / 2]),
        ms(t[0]),
        ms(t[n * 9 / 10]),
        ms(t[n - 1]),
    );
}

fn time(mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        f();
    }
    (0..ITERS)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect()
}

fn main() {
    println!(
        "{} rayon threads; masks {HP}x{WP} -> image {W}x{H}",
        rayon::current_num_threads()
    );
    for n in [5usize, 20, 100] {
        let soft = uniform(n * HP * WP, n as u64);
        let masks = Tensor::from_vec(soft.clone(), (n, HP, WP), &Device::Cpu).expect("masks");
        let b: Vec<f32> = uniform(n * 4, 7)
            .chunks(4)
            .flat_map(|c| [c[0] * 0.5, c[1] * 0.5, 0.5 + c[2] * 0.5, 0.5 + c[3] * 0.5])
            .collect();
        let boxes = Tensor::from_vec(b, (n, 4), &Device::Cpu).expect("boxes");
        summary(
            &format!("crop_masks, {n} masks"),
            time(|| {
                black_box(crop_masks(&masks, &boxes).expect("crop"));
            }),
        );
        summary(
            &format!("upsample + threshold, {n} masks"),
            time(|| {
                black_box(resize_threshold_planes(&soft, HP, WP, H, W, 0.5).expect("resize"));
            }),
        );
    }
}
