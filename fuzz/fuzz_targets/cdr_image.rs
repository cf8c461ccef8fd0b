//! CDR decoding of sensor_msgs/Image and CompressedImage, then conversion to RGB.
//! The body lives in `yolact_ros2::bag::fuzz` so that tests/it/bag.rs runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = yolact_ros2::bag::fuzz::cdr_image(data);
});
