//! The rosbag2 sqlite3 (.db3) reader over arbitrary file contents: list the topics, then stream
//! and decode every message. sqlite opens files, not buffers, so each input is written to one
//! scratch file per process first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("yolact_fuzz_{}.db3", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let Ok(reader) = yolact_ros2::bag::open_bag(path) else {
        return;
    };
    let _ = reader.topics();
    // Unlike the MCAP reader, the sqlite reader reports a row naming an unknown topic and goes on
    // (found by this target), so errors are not counted here: it must only not crash or hang.
    for m in reader.messages(None).flatten() {
        let _ = yolact_ros2::bag::decode_image(&m.msg_type, &m.data);
    }
});
