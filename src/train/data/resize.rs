//! OpenCV's `cv2.resize(..., INTER_LINEAR)` as the reference's `Resize` calls it: once on the
//! float32 image, once on the uint8 masks.
//!
//! This is not [`crate::ops::interp`] (PyTorch's rule, used by inference): OpenCV differs in how it
//! computes the tap weights and, for 8-bit data, in a fixed-point evaluation that changes which
//! border pixels of a mask survive. The two models below were fitted to OpenCV 5.1
//! (opencv-python-headless 5.1.0.95) by `tools/make_train_data_fixtures.py`'s checks:
//!
//! * Taps, per output index d: f = (d + 0.5)·(1 / (out/in)) − 0.5 in f64, s = floor(f),
//!   weights (1 − (f − s), f − s) in f32. Columns are clamped OpenCV-style (s < 0 → s = 0 with
//!   weight 0; s ≥ in−1 → s = in−1 with weight 0). Rows keep their fractional weight and only the
//!   row *index* is clamped, which matters for the 8-bit path (two truncated products of the same
//!   row do not add up to one product of weight 1).
//! * float32: the fraction is taken in f64 before the cast (max |Δ| to cv2 measured 4.6e-5 on the
//!   0-255 scale, from its FMA/summation order); rows first interpolated along x, then along y.
//! * uint8: the fraction is taken after casting f to f32 (OpenCV's 8-bit path does that: with the
//!   f64 fraction one pixel in 5e7 differs), weights are rounded to 11 bits, x taps are summed in
//!   integers and the y step is the SIMD kernel's `((S0 >> 4)·b0 >> 16) + ((S1 >> 4)·b1 >> 16)`
//!   rounded with `(t + 2) >> 2`. Measured: 0 differing pixels in 5e7 against cv2 on random disc
//!   masks (8 sizes, 550 and 700 outputs), where "float bilinear, round at 0.5" differs on ~0.02 %,
//!   all at borders.

/// One axis's taps: source indices and weights per output index.
struct Taps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<f32>,
    w1: Vec<f32>,
}

/// Which rounding of the fractional source position, see the module docs.
#[derive(Clone, Copy)]
enum Frac {
    F64,
    F32,
}

fn taps(input: usize, output: usize, frac: Frac, clamp_weights: bool) -> Taps {
    let scale = 1.0 / (output as f64 / input as f64);
    let last = input.saturating_sub(1) as i64;
    let mut t = Taps {
        i0: Vec::with_capacity(output),
        i1: Vec::with_capacity(output),
        w0: Vec::with_capacity(output),
        w1: Vec::with_capacity(output),
    };
    for d in 0..output {
        let f = (d as f64 + 0.5) * scale - 0.5;
        let (mut s, mut a) = match frac {
            Frac::F64 => {
                let s = f.floor();
                (s as i64, (f - s) as f32)
            }
            Frac::F32 => {
                let f = f as f32;
                let s = f.floor();
                (s as i64, f - s)
            }
        };
        if clamp_weights {
            if s < 0 {
                (s, a) = (0, 0.0);
            }
            if s >= last {
                (s, a) = (last, 0.0);
            }
        }
        t.i0.push(s.clamp(0, last) as usize);
        t.i1.push((s + 1).clamp(0, last) as usize);
        t.w0.push(1.0 - a);
        t.w1.push(a);
    }
    t
}

/// Resizes an HWC f32 image with `c` channels from (h, w) to (out_h, out_w).
pub fn resize_image(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    if (h, w) == (out_h, out_w) {
        // cv2 copies when the size does not change.
        return src.to_vec();
    }
    let xs = taps(w, out_w, Frac::F64, true);
    let ys = taps(h, out_h, Frac::F64, false);
    // x pass over every source row (each is used by one or two output rows).
    let mut rows = vec![0f32; h * out_w * c];
    for (r, out_row) in rows.chunks_mut(out_w * c).enumerate() {
        let row = &src[r * w * c..(r + 1) * w * c];
        for d in 0..out_w {
            let (a, b) = (xs.i0[d] * c, xs.i1[d] * c);
            for k in 0..c {
                out_row[d * c + k] = row[a + k] * xs.w0[d] + row[b + k] * xs.w1[d];
            }
        }
    }
    let mut out = vec![0f32; out_h * out_w * c];
    for (d, out_row) in out.chunks_mut(out_w * c).enumerate() {
        let r0 = &rows[ys.i0[d] * out_w * c..(ys.i0[d] + 1) * out_w * c];
        let r1 = &rows[ys.i1[d] * out_w * c..(ys.i1[d] + 1) * out_w * c];
        for ((o, &a), &b) in out_row.iter_mut().zip(r0).zip(r1) {
            *o = a * ys.w0[d] + b * ys.w1[d];
        }
    }
    out
}

/// Resizes `n` (h, w) 0/1 planes to (out_h, out_w) with OpenCV's 8-bit INTER_LINEAR (the
/// reference resizes the masks as one uint8 image with a channel per object; every channel is
/// computed independently, so planes give the same bytes).
pub fn resize_masks(
    src: &[u8],
    n: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    if (h, w) == (out_h, out_w) {
        return src.to_vec();
    }
    const ONE: f32 = 2048.0; // INTER_RESIZE_COEF_SCALE
    let fixed = |v: f32| (v * ONE).round_ties_even() as i32;
    let xs = taps(w, out_w, Frac::F32, true);
    let ys = taps(h, out_h, Frac::F32, false);
    let (xa, xb): (Vec<i32>, Vec<i32>) = (
        xs.w0.iter().map(|&v| fixed(v)).collect(),
        xs.w1.iter().map(|&v| fixed(v)).collect(),
    );
    let (ya, yb): (Vec<i32>, Vec<i32>) = (
        ys.w0.iter().map(|&v| fixed(v)).collect(),
        ys.w1.iter().map(|&v| fixed(v)).collect(),
    );
    let mut out = vec![0u8; n * out_h * out_w];
    let mut rows = vec![0i32; h * out_w];
    for (plane, dst) in src.chunks(h * w).zip(out.chunks_mut(out_h * out_w)) {
        for (r, out_row) in rows.chunks_mut(out_w).enumerate() {
            let row = &plane[r * w..(r + 1) * w];
            for d in 0..out_w {
                out_row[d] = i32::from(row[xs.i0[d]]) * xa[d] + i32::from(row[xs.i1[d]]) * xb[d];
            }
        }
        for (d, out_row) in dst.chunks_mut(out_w).enumerate() {
            let r0 = &rows[ys.i0[d] * out_w..(ys.i0[d] + 1) * out_w];
            let r1 = &rows[ys.i1[d] * out_w..(ys.i1[d] + 1) * out_w];
            for ((o, &s0), &s1) in out_row.iter_mut().zip(r0).zip(r1) {
                let t = (((s0 >> 4) * ya[d]) >> 16) + (((s1 >> 4) * yb[d]) >> 16);
                *o = ((t + 2) >> 2).clamp(0, 255) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_constants_stay_constant() {
        let img: Vec<f32> = (0..4 * 5 * 3).map(|v| v as f32).collect();
        assert_eq!(resize_image(&img, 4, 5, 3, 4, 5), img);
        // A constant image stays constant up to rounding (each tap's two weights add up to 1).
        let c = vec![103.94f32; 7 * 9 * 3];
        let out = resize_image(&c, 7, 9, 3, 550, 550);
        assert!(
            out.iter().all(|&v| (v - 103.94).abs() < 1e-4),
            "{:?}",
            &out[..6]
        );
        let ones = vec![1u8; 7 * 9];
        assert!(resize_masks(&ones, 1, 7, 9, 33, 20).iter().all(|&v| v == 1));
    }

    #[test]
    fn upscaled_half_plane_keeps_its_edge_near_the_scaled_position() {
        // Left 10 of 20 columns set; x2 upsampling must put the edge at column 20 of 40.
        let mut m = vec![0u8; 4 * 20];
        for r in 0..4 {
            for c in 0..10 {
                m[r * 20 + c] = 1;
            }
        }
        let out = resize_masks(&m, 1, 4, 20, 8, 40);
        let row: Vec<u8> = out[..40].to_vec();
        assert!(
            row[..19].iter().all(|&v| v == 1) && row[21..].iter().all(|&v| v == 0),
            "{row:?}"
        );
    }
}
