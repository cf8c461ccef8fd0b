//! Robust rejection along the viewing ray: depth readings far from the mask's median depth are
//! background seen past the object's edge (or flying pixels between the two), not the object.
//!
//! Two steps over the mask's depths `z`:
//! 1. the core band `median ± k * 1.4826 * MAD`: 1.4826 * MAD estimates the standard deviation of
//!    normally distributed depths and, unlike it, ignores up to half the readings being outliers;
//! 2. the band then grows outwards over the sorted depths while consecutive readings are at most
//!    `max_gap` apart. Step 1 alone cuts real surfaces when one flat face dominates (MAD = 0 on a
//!    face parallel to the image: an oblique side face behind it would be lost); a continuous
//!    surface has small steps between sorted depths, while the background behind an object is
//!    separated by a gap, so growing over small steps keeps the one and not the other.
//!
//! With k = 3 a sphere keeps its whole visible cap in step 1 already (its depths run 1 radius,
//! 1.4826 * MAD is about 0.26 radius).

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
pub fn depth_band(z: &[f64], k: f64, max_gap: f64) -> Option<(f64, f64)> {
    let mut sorted = z.to_vec();
    let med = median(&mut sorted)?;
    sorted.sort_unstable_by(f64::total_cmp);
    let mut dev: Vec<f64> = sorted.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev)?;
    let half = k * MAD_TO_SIGMA * mad;
    let (mut lo, mut hi) = (med - half, med + half);
    // Indices of the first reading at or above lo and the last at or below hi.
    let first = sorted.partition_point(|&v| v < lo);
    let last = sorted.partition_point(|&v| v <= hi);
    if last > first {
        let mut i = first;
        while i > 0 && sorted[i] - sorted[i - 1] <= max_gap {
            i -= 1;
        }
        lo = lo.min(sorted[i]);
        let mut j = last - 1;
        while j + 1 < sorted.len() && sorted[j + 1] - sorted[j] <= max_gap {
            j += 1;
        }
        hi = hi.max(sorted[j]);
    }
    Some((lo, hi))
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
        let (lo, hi) = depth_band(&z, 3.0, 0.02).unwrap();
        assert!(lo <= 1.0 && (1.006..1.1).contains(&hi), "{lo} {hi}");
    }

    #[test]
    fn a_dominant_flat_face_keeps_the_oblique_face_behind_it() {
        // 70 readings on a face at 1 m (MAD = 0), 30 on a side face running to 1.1 m in 5 mm
        // steps, then a wall at 3 m.
        let mut z = vec![1.0; 70];
        z.extend((1..=20).map(|i| 1.0 + 0.005 * f64::from(i)));
        z.extend(std::iter::repeat_n(3.0, 10));
        let (lo, hi) = depth_band(&z, 3.0, 0.02).unwrap();
        assert_eq!(lo, 1.0);
        assert!((hi - 1.1).abs() < 1e-12, "{hi}");
        // Without the growth (max gap 0) only the face is kept.
        assert_eq!(depth_band(&z, 3.0, 0.0).unwrap(), (1.0, 1.0));
    }
}
