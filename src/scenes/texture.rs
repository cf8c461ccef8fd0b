//! Procedural surface patterns and the sensor's noise, from counter-based hashes: a value depends
//! only on its coordinates and seed, never on the order pixels are drawn in, so rendering rows in
//! parallel gives the same bytes as one thread.

use super::scene::{Rgb, Table, Wall};

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in [0, 1) for a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn lattice(ix: i64, iy: i64, seed: u32) -> f64 {
    unit(mix(
        (ix as u64).wrapping_mul(0x1_0000_0001) ^ mix(iy as u64 ^ (u64::from(seed) << 32))
    ))
}

/// Smooth value noise in [0, 1).
fn value_noise(x: f64, y: f64, seed: u32) -> f64 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Three octaves of value noise, in [0, 1).
fn fbm(x: f64, y: f64, seed: u32) -> f64 {
    (value_noise(x, y, seed)
        + 0.5 * value_noise(2.0 * x, 2.0 * y, seed ^ 0x55)
        + 0.25 * value_noise(4.0 * x, 4.0 * y, seed ^ 0xAA))
        / 1.75
}

fn lerp(a: Rgb, b: Rgb, t: f64) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(c: Rgb, s: f64) -> Rgb {
    [c[0] * s, c[1] * s, c[2] * s]
}

/// Wood grain at table point (x, y): warped bands along the grain direction.
pub fn table_albedo(t: &Table, x: f64, y: f64) -> Rgb {
    let (c, s) = (t.grain_angle.cos(), t.grain_angle.sin());
    let (u, v) = (x * c + y * s, -x * s + y * c);
    let warp = 1.2 * fbm(u * 3.0, v * 3.0, t.seed);
    let band = 0.5 + 0.5 * (std::f64::consts::TAU * (v * t.grain_freq + warp)).sin();
    let fibre = 0.88 + 0.24 * fbm(u * 40.0, v * 2.0, t.seed ^ 0x1234);
    scale(lerp(t.base, t.grain, 0.55 * band * band), fibre)
}

/// Tiles with grout lines at wall point (x, z).
pub fn wall_albedo(w: &Wall, x: f64, z: f64) -> Rgb {
    let (tu, tv) = (x / w.tile, z / w.tile);
    let (fu, fv) = (tu - tu.floor(), tv - tv.floor());
    let grout = 0.04;
    if fu < grout || fv < grout {
        return w.grout;
    }
    // Each tile is a slightly different shade, with a faint mottle.
    let tile_shade = 0.9 + 0.2 * lattice(tu.floor() as i64, tv.floor() as i64, w.seed);
    let mottle = 0.93 + 0.14 * fbm(x * 25.0, z * 25.0, w.seed ^ 0x77);
    scale(w.base, tile_shade * mottle)
}

/// A standard normal sample for (seed, index), by Box-Muller over two hashed uniforms.
pub fn gaussian(seed: u64, index: u64) -> f64 {
    let h = mix(seed ^ mix(index));
    let u1 = unit(h).max(1e-300);
    let u2 = unit(mix(h));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_standard_normal_enough() {
        let n = 20_000u64;
        let xs: Vec<f64> = (0..n).map(|i| gaussian(7, i)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn value_noise_stays_in_range_and_is_continuous() {
        for i in 0..1000 {
            let x = i as f64 * 0.0137;
            let a = value_noise(x, 0.3, 1);
            let b = value_noise(x + 1e-6, 0.3, 1);
            assert!((0.0..1.0).contains(&a));
            assert!((a - b).abs() < 1e-4);
        }
    }
}
