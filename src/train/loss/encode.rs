//! SSD box coding of a matched box against its prior (the reference's `encode`), variances 0.1 /
//! 0.2, in f32 and the reference's operation order.

/// The two SSD variances, as the f32 values PyTorch multiplies and divides by.
const VAR_CENTER: f32 = 0.1;
const VAR_SIZE: f32 = 0.2;

/// `matched` (x1, y1, x2, y2) against `prior` (cx, cy, w, h):
/// `(centre - prior centre) / (0.1 * prior size)` and `ln(size / prior size) / 0.2`.
pub fn encode(matched: [f32; 4], prior: [f32; 4]) -> [f32; 4] {
    let [x1, y1, x2, y2] = matched;
    let [cx, cy, w, h] = prior;
    [
        ((x1 + x2) / 2.0 - cx) / (VAR_CENTER * w),
        ((y1 + y2) / 2.0 - cy) / (VAR_CENTER * h),
        ((x2 - x1) / w).ln() / VAR_SIZE,
        ((y2 - y1) / h).ln() / VAR_SIZE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_equal_to_its_prior_encodes_to_zero_and_offsets_scale_by_the_variances() {
        let p = [0.5, 0.5, 0.25, 0.5];
        assert_eq!(encode([0.375, 0.25, 0.625, 0.75], p), [0.0; 4]);
        // Shifted by a whole prior width and twice as tall: 1 / 0.1 and ln 2 / 0.2.
        let e = encode([0.625, 0.0, 0.875, 1.0], p);
        assert!((e[0] - 10.0).abs() < 1e-5 && e[1].abs() < 1e-6);
        assert!(e[2].abs() < 1e-6 && (e[3] - 2f32.ln() / 0.2).abs() < 1e-5);
    }
}
