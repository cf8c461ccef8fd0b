//! Robust rejection along the viewing ray: depth readings far from the mask's median depth are
//! background seen past the object's edge (or flying pixels between the two), not the object.
//!
//! The band is `median ± max(k * 1.4826 * MAD, min_band)`: 1.4826 * MAD estimates the standard
//! deviation of normally distributed depths, and unlike the standard deviation it is unaffected by
//! up to half the readings being outliers. `min_band` keeps a flat, fronto-parallel surface
//! (MAD = 0) from rejecting its own sensor noise. With k = 3 a sphere keeps its whole visible cap
//! (its depths run 1 radius, its 1.4826 * MAD is about 0.26 radius).

/// Standard deviation of a normal distribution per unit of median absolute deviation.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Median of `v` (reorders it); the mean of the two middle values for an even count.
pub fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (_, &mut hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(hi);
    }
    // The lower middle is the largest of the lower half, which select_nth left below n / 2.
    let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo + hi) / 2.0)
}

/// The accepted depth interval `[lo, hi]` for depths `z`; `None` when `z` is empty.
pub fn depth_band(z: &[f64], k: f64, min_band: f64) -> Option<(f64, f64)> {
    let mut buf = z.to_vec();
    let med = median(&mut buf)?;
    for v in &mut buf {
        *v = (*v - med).abs();
    }
    let mad = median(&mut buf)?;
    let half = (k * MAD_TO_SIGMA * mad).max(min_band);
    Some((med - half, med + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn far_wall_readings_fall_outside_the_band() {
        // 60 object readings around 1 m, 40 wall readings at 3 m: the median and MAD stay on
        // the object.
        let mut z: Vec<f64> = (0..60).map(|i| 1.0 + 0.001 * f64::from(i % 7)).collect();
        z.extend(std::iter::repeat_n(3.0, 40));
        let (lo, hi) = depth_band(&z, 3.0, 0.005).unwrap();
        assert!(lo < 1.0 && hi > 1.006 && hi < 1.1, "{lo} {hi}");
        // A flat surface (MAD = 0) keeps readings within the minimum band.
        let (lo, hi) = depth_band(&[2.0; 9], 3.0, 0.01).unwrap();
        assert_eq!((lo, hi), (1.99, 2.01));
    }
}
