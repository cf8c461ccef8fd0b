//! The streaming MCAP bag reader over arbitrary bytes, decoding every message it yields.
//! The body lives in `yolact_ros2::bag::fuzz` so that tests/it/bag.rs runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_ok, errors) = yolact_ros2::bag::fuzz::mcap_bytes(data);
    assert!(errors <= 1, "the reader must stop after its first error");
});
