//! Entry points shared by the cargo-fuzz targets under `fuzz/` and the property tests in
//! `tests/it/bag.rs`, so the same code runs on stable (tests) and under libFuzzer (nightly).

use std::io::Cursor;
use std::path::Path;

use super::image_msg::{decode_image, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE};
use super::mcap_reader::McapMessages;
use super::BagError;

/// Decodes `data` as both image message types. Must return (Ok or Err), never panic.
pub fn cdr_image(data: &[u8]) -> [Result<(), BagError>; 2] {
    [
        decode_image(IMAGE_TYPE, data).map(|_| ()),
        decode_image(COMPRESSED_IMAGE_TYPE, data).map(|_| ()),
    ]
}

/// Reads `data` as an MCAP file and decodes every message. Returns the number of messages
/// read and the number of error items; the reader must stop after its first error.
pub fn mcap_bytes(data: &[u8]) -> (usize, usize) {
    let reader = McapMessages::from_reader(
        Box::new(Cursor::new(data.to_vec())),
        Path::new("<fuzz>"),
        None,
    );
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
