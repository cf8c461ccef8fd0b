//! Whether a JPEG stream is complete. The `image` crate's decoder fills the rows it never got with
//! grey and reports success when the data stops early, so a cut-off file or message would give a
//! plausible half-grey frame; PNG decoding already fails on truncation.
//!
//! The check walks the marker structure (ITU-T T.81, annex B.1): length-prefixed segments, and after
//! each start-of-scan the entropy-coded data up to the next marker (`FF 00` is a stuffed byte,
//! `FF D0..D7` restart markers, `FF FF` fill). The stream is complete when the end-of-image marker
//! is reached this way; data after it (some cameras append metadata) is ignored. A stream whose
//! data ends first is truncated. Malformed structure that is not a truncation (no start-of-image,
//! a bad segment length) is left to the decoder, which reports it in its own words.

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// `Err(why)` when `data`, a JPEG stream (anything else passes), ends before its end-of-image marker.
pub fn check_complete(data: &[u8]) -> Result<(), String> {
    if !data.starts_with(&[0xFF, SOI]) {
        return Ok(());
    }
    let truncated = |at: usize, inside: &str| {
        Err(format!(
            "truncated JPEG: the data ends after {at} bytes, {inside}, before the end-of-image \
             marker"
        ))
    };
    let mut p = 2;
    loop {
        // A marker: one or more 0xFF, then its code.
        if p >= data.len() {
            return truncated(data.len(), "between segments");
        }
        if data[p] != 0xFF {
            return Ok(()); // not a marker where one must be: the decoder's error to give
        }
        while p < data.len() && data[p] == 0xFF {
            p += 1;
        }
        let Some(&code) = data.get(p) else {
            return truncated(data.len(), "inside a marker");
        };
        p += 1;
        match code {
            EOI => return Ok(()),
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 | SOI => continue,
            _ => {}
        }
        let Some(len) = data
            .get(p..p + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return truncated(data.len(), "inside a segment length");
        };
        if len < 2 {
            return Ok(());
        }
        if p + len > data.len() {
            return truncated(
                data.len(),
                &format!("inside a {len}-byte segment (marker FF {code:02X})"),
            );
        }
        p += len;
        if code == SOS {
            p = match end_of_scan(data, p) {
                Some(q) => q,
                None => return truncated(data.len(), "inside the compressed image data"),
            };
        }
    }
}

/// The offset of the marker that ends the entropy-coded data starting at `p`, or None when the
/// data ends first.
fn end_of_scan(data: &[u8], mut p: usize) -> Option<usize> {
    loop {
        p += data.get(p..)?.iter().position(|&b| b == 0xFF)?;
        let mut q = p + 1;
        while data.get(q) == Some(&0xFF) {
            q += 1;
        }
        match *data.get(q)? {
            0x00 | 0xD0..=0xD7 => p = q + 1,
            _ => return Some(q - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0-like segment, SOS with a 2-byte header payload, scan bytes, then EOI.
    fn tiny(scan: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, SOI, 0xFF, 0xE0, 0x00, 0x04, b'a', b'b'];
        v.extend_from_slice(&[0xFF, SOS, 0x00, 0x04, 0x01, 0x02]);
        v.extend_from_slice(scan);
        v.extend_from_slice(&[0xFF, EOI]);
        v
    }

    #[test]
    fn a_complete_stream_passes_and_every_cut_before_the_eoi_is_truncated() {
        // Stuffed bytes, a restart marker and fill bytes inside the scan are not its end.
        let full = tiny(&[
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0xD5, 0x78,
        ]);
        assert_eq!(check_complete(&full), Ok(()));
        for cut in 2..full.len() {
            let e = check_complete(&full[..cut]).expect_err(&format!("cut at {cut} passed"));
            assert!(e.contains(&format!("after {cut} bytes")), "{e}");
        }
    }

    #[test]
    fn data_after_the_eoi_and_a_second_scan_are_accepted() {
        let mut v = tiny(&[0x11]);
        v.truncate(v.len() - 2);
        // A progressive file: a table segment and a second scan between the scans.
        v.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x03, 0x00, 0xFF, SOS, 0x00, 0x02, 0x22]);
        v.extend_from_slice(&[0xFF, EOI, 0xDE, 0xAD]);
        assert_eq!(check_complete(&v), Ok(()));
        v.truncate(v.len() - 4);
        assert!(check_complete(&v)
            .unwrap_err()
            .contains("compressed image data"));
    }

    #[test]
    fn non_jpeg_and_malformed_streams_are_left_to_the_decoder() {
        assert_eq!(check_complete(b"\x89PNG\r\n\x1a\n"), Ok(()));
        assert_eq!(check_complete(&[0xFF, SOI, 0x12, 0x34]), Ok(()));
        assert_eq!(check_complete(&[0xFF, SOI, 0xFF, 0xE0, 0x00, 0x01]), Ok(()));
    }
}
