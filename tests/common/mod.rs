//! Helpers shared by the integration tests.

/// Runs of a COCO compressed RLE string, decoded independently of src/output/rle.rs (pycocotools'
/// rleFrString: 5-bit groups offset by '0', 0x20 continues, 0x10 of the last group sign-extends,
/// runs from the third on delta-coded against the run two back).
pub fn rle_counts(s: &str) -> Vec<i64> {
    let b = s.as_bytes();
    let (mut i, mut counts) = (0, Vec::<i64>::new());
    while i < b.len() {
        let (mut x, mut k, mut more) = (0i64, 0, true);
        while more {
            let c = i64::from(b[i]) - 48;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            i += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    counts
}
