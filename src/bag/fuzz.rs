//! Entry points shared by the cargo-fuzz targets under `fuzz/` and the property tests in
//! `tests/it/bag.rs`, so the same code runs on stable (tests) and under libFuzzer (nightly).

use std::io::Cursor;
use std::path::Path;

use super::image_msg::{decode_image, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE};
use super::mcap_reader::McapMessages;
use super::recover::recover_stream;
use super::BagError;

/// Decodes `data` as both image message types. Must return (Ok or Err), never panic.
pub fn cdr_image(data: &[u8]) -> [Result<(), BagError>; 2] {
    [
        decode_image(IMAGE_TYPE, data).map(|_| ()),
        decode_image(COMPRESSED_IMAGE_TYPE, data).map(|_| ()),
    ]
}

/// Reads `data` as an MCAP file and decodes every message. Returns the number of messages
/// read and the number of error items (a file that is not MCAP at all is one error).
pub fn mcap_bytes(data: &[u8]) -> (usize, usize) {
    let reader = match McapMessages::from_reader(
        Box::new(Cursor::new(data.to_vec())),
        Path::new("<fuzz>"),
        None,
    ) {
        Ok(r) => r,
        Err(_) => return (0, 1),
    };
    let (mut ok, mut err) = (0, 0);
    for item in reader {
        match item {
            Ok(m) => {
                ok += 1;
                let _ = decode_image(&m.msg_type, &m.data);
            }
            Err(_) => err += 1,
        }
    }
    (ok, err)
}

/// Recovers `data` as `yolact bag-recover` does, then reads the result back: the rewritten file
/// must read without a single error and hold exactly the messages recovery counted. Returns
/// (messages recovered, damaged regions), or `None` when `data` is not MCAP at all.
pub fn mcap_recover(data: &[u8]) -> Option<(u64, usize)> {
    let (rec, out) = match recover_stream(
        Cursor::new(data.to_vec()),
        Path::new("<fuzz>"),
        Cursor::new(Vec::new()),
        Path::new("<fuzz-out>"),
    ) {
        Ok(x) => x,
        Err(BagError::Mcap { .. }) => return None,
        Err(e) => panic!("recovery into memory failed: {e}"),
    };
    let (ok, err) = mcap_bytes(&out.into_inner());
    assert_eq!(err, 0, "a recovered file reads without errors");
    assert_eq!(ok as u64, rec.messages, "the recovered file holds what recovery counted");
    Some((rec.messages, rec.damage.len()))
}
