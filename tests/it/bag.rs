//! rosbag2 reading against bags written by the `rosbags` Python package
//! (tests/fixtures/bags, made by tools/make_test_bags.py), plus damaged-file and
//! no-panic property checks.

use std::path::{Path, PathBuf};

use yolact_ros2::bag::{
    decode_image, fuzz, open_bag, BagError, BagMessage, CdrReader, CompressedImageMsg, ImageMsg,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bags")
}

struct Expected {
    messages: Vec<serde_json::Value>,
    kept_mcap: usize,
    kept_db3: usize,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Expected {
        messages: v["messages"].as_array().unwrap().clone(),
        kept_mcap: v["damaged_intact_prefix"]["truncated.mcap"]
            .as_u64()
            .unwrap() as usize,
        kept_db3: v["damaged_intact_prefix"]["truncated.db3"]
            .as_u64()
            .unwrap() as usize,
    }
}

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk.iter().take_while(|&&c| c != b'=').count();
        let mut acc = 0u32;
        for (i, &c) in chunk[..n].iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n]);
    }
    out
}

/// Checks one message against its expected.json entry: metadata, header and pixels, or the
/// kind of refusal.
fn check_message(m: &BagMessage, e: &serde_json::Value) {
    assert_eq!(m.topic, e["topic"].as_str().unwrap());
    assert_eq!(m.msg_type, e["type"].as_str().unwrap());
    assert_eq!(m.log_time_ns, e["log_time_ns"].as_u64().unwrap());
    let decoded = decode_image(&m.msg_type, &m.data);
    match e.get("error").and_then(|x| x.as_str()) {
        Some("type") => assert!(matches!(decoded, Err(BagError::UnsupportedType(_)))),
        Some("encoding") => match decoded {
            Err(BagError::UnknownEncoding(enc)) => assert_eq!(enc, "yuv422"),
            other => panic!("expected unknown encoding, got {other:?}"),
        },
        Some("size") => assert!(matches!(decoded, Err(BagError::Image(_))), "{decoded:?}"),
        Some(other) => panic!("unknown expectation {other}"),
        None => {
            let d = decoded.unwrap_or_else(|err| panic!("{}: {err}", m.topic));
            assert_eq!(d.header.frame_id, e["frame_id"].as_str().unwrap());
            assert_eq!(d.header.stamp.sec as u64, e["stamp_sec"].as_u64().unwrap());
            assert_eq!(
                d.header.stamp.nanosec as u64,
                e["stamp_nanosec"].as_u64().unwrap()
            );
            assert_eq!(d.image.width() as u64, e["width"].as_u64().unwrap());
            assert_eq!(d.image.height() as u64, e["height"].as_u64().unwrap());
            let want = b64_decode(e["rgb_b64"].as_str().unwrap());
            let got = d.image.as_raw();
            assert_eq!(got.len(), want.len());
            if e["lossy"].as_bool() == Some(true) {
                let diffs: Vec<i32> = got
                    .iter()
                    .zip(&want)
                    .map(|(&a, &b)| (a as i32 - b as i32).abs())
                    .collect();
                let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
                let max = diffs.iter().copied().max().unwrap_or(0);
                // Against libjpeg's decode of the same bytes: IDCT/upsampling rounding only
                // (measured mean 0.43, max 3); a channel swap or wrong layout gives tens.
                assert!(
                    mean < 1.5 && max <= 8,
                    "jpeg mean abs diff {mean}, max {max}"
                );
            } else {
                assert_eq!(got, &want[..], "{} pixels differ", m.topic);
            }
        }
    }
}

fn read_all(path: &Path) -> Vec<Result<BagMessage, BagError>> {
    open_bag(path).unwrap().messages(None).collect()
}

#[test]
fn both_formats_read_back_every_frame_with_headers_and_pixels() {
    let exp = expected();
    for bag in ["bag_mcap", "bag_sqlite3"] {
        let items = read_all(&fixtures().join(bag));
        assert_eq!(items.len(), exp.messages.len(), "{bag}");
        let mut last = 0;
        for (item, e) in items.iter().zip(&exp.messages) {
            let m = item.as_ref().unwrap_or_else(|err| panic!("{bag}: {err}"));
            assert!(m.log_time_ns >= last, "{bag}: out of log-time order");
            last = m.log_time_ns;
            check_message(m, e);
        }
    }
}

#[test]
fn single_storage_files_open_without_metadata() {
    let exp = expected();
    for file in ["bag_mcap/bag_mcap.mcap", "bag_sqlite3/bag_sqlite3.db3"] {
        let items = read_all(&fixtures().join(file));
        assert_eq!(items.len(), exp.messages.len(), "{file}");
        for (item, e) in items.iter().zip(&exp.messages) {
            check_message(item.as_ref().unwrap(), e);
        }
    }
}

#[test]
fn topics_and_counts_agree_between_metadata_and_files() {
    let exp = expected();
    let mut want: Vec<(String, String, u64)> = Vec::new();
    for e in &exp.messages {
        let (t, ty) = (e["topic"].as_str().unwrap(), e["type"].as_str().unwrap());
        match want.iter_mut().find(|w| w.0 == t) {
            Some(w) => w.2 += 1,
            None => want.push((t.into(), ty.into(), 1)),
        }
    }
    want.sort();
    for p in [
        "bag_mcap",
        "bag_sqlite3",
        "bag_mcap/bag_mcap.mcap",
        "bag_sqlite3/bag_sqlite3.db3",
    ] {
        let got: Vec<(String, String, u64)> = open_bag(fixtures().join(p))
            .unwrap()
            .topics()
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.msg_type, t.count))
            .collect();
        assert_eq!(got, want, "{p}");
    }
}

#[test]
fn topic_filter_keeps_only_named_topics_in_order() {
    let exp = expected();
    let topic = "/cam/image_raw/compressed".to_string();
    let want: Vec<&serde_json::Value> = exp
        .messages
        .iter()
        .filter(|e| e["topic"] == topic.as_str())
        .collect();
    assert!(!want.is_empty());
    for bag in ["bag_mcap", "bag_sqlite3"] {
        let reader = open_bag(fixtures().join(bag)).unwrap();
        let got: Vec<BagMessage> = reader
            .messages(Some(std::slice::from_ref(&topic)))
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{bag}");
        for (m, e) in got.iter().zip(&want) {
            check_message(m, e);
        }
        let none: Vec<_> = reader.messages(Some(&["/nope".to_string()])).collect();
        assert!(none.is_empty(), "{bag}");
    }
}

/// The readable prefix, then exactly one error, then the end.
fn check_damaged(path: &Path, kept: usize, exp: &Expected) {
    let items = read_all(path);
    assert_eq!(items.len(), kept + 1, "{}: {items:?}", path.display());
    assert!(kept > 0 && kept < exp.messages.len());
    for (item, e) in items[..kept].iter().zip(&exp.messages) {
        check_message(item.as_ref().unwrap(), e);
    }
    let err = items[kept].as_ref().unwrap_err();
    assert!(
        err.to_string().contains(&format!("after {kept} messages")),
        "{err}"
    );
}

#[test]
fn damaged_bags_yield_the_frames_before_the_damage_then_one_error() {
    let exp = expected();
    check_damaged(&fixtures().join("truncated.mcap"), exp.kept_mcap, &exp);
    check_damaged(&fixtures().join("truncated.db3"), exp.kept_db3, &exp);
}

#[test]
fn a_damaged_file_in_a_bag_directory_does_not_stop_the_next_file() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    for (src, dst) in [
        ("truncated.mcap", "part_0.mcap"),
        ("bag_sqlite3/bag_sqlite3.db3", "part_1.db3"),
    ] {
        std::fs::copy(fixtures().join(src), dir.path().join(dst)).unwrap();
    }
    std::fs::write(
        dir.path().join("metadata.yaml"),
        "rosbag2_bagfile_information:\n  version: 8\n  storage_identifier: mcap\n  \
         relative_file_paths:\n  - part_0.mcap\n  - part_1.db3\n  topics_with_message_count: []\n",
    )
    .unwrap();
    let items = read_all(dir.path());
    let n = exp.messages.len();
    assert_eq!(items.len(), exp.kept_mcap + 1 + n);
    assert!(items[exp.kept_mcap].is_err());
    for (item, e) in items[exp.kept_mcap + 1..].iter().zip(&exp.messages) {
        check_message(item.as_ref().unwrap(), e);
    }
}

#[test]
fn bad_paths_and_layouts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        open_bag(dir.path()).is_err(),
        "directory without metadata.yaml"
    );
    assert!(open_bag(dir.path().join("missing.mcap")).is_err());
    let txt = dir.path().join("x.txt");
    std::fs::write(&txt, b"hi").unwrap();
    assert!(open_bag(&txt).is_err());
    std::fs::write(dir.path().join("metadata.yaml"), b": : not yaml [").unwrap();
    assert!(open_bag(dir.path()).is_err());
    // A .db3 that is not sqlite: one error item, no panic.
    let fake = dir.path().join("fake.db3");
    std::fs::write(&fake, vec![0x42u8; 5000]).unwrap();
    let items: Vec<_> = open_bag(&fake).unwrap().messages(None).collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
}

/// xorshift64*: a seeded generator so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fixture_messages() -> Vec<BagMessage> {
    read_all(&fixtures().join("bag_mcap"))
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn cdr_decoders_reject_every_truncation_without_panicking() {
    for m in fixture_messages() {
        for cut in 0..m.data.len() {
            let [raw, comp] = fuzz::cdr_image(&m.data[..cut]);
            // The data field is the last one and carries its own length, so a strict prefix
            // can never decode as this message's type.
            let own = if m.msg_type.ends_with("CompressedImage") {
                comp
            } else {
                raw
            };
            assert!(own.is_err(), "{} cut at {cut} decoded", m.topic);
        }
        // The plain structs agree with the full decode.
        if m.msg_type == "sensor_msgs/msg/Image" {
            let im = ImageMsg::from_cdr(&m.data).unwrap();
            assert_eq!(
                im.to_cdr(true).unwrap(),
                m.data,
                "re-encoding is byte-exact"
            );
        } else if m.msg_type == "sensor_msgs/msg/CompressedImage" {
            let im = CompressedImageMsg::from_cdr(&m.data).unwrap();
            assert_eq!(
                im.to_cdr(true).unwrap(),
                m.data,
                "re-encoding is byte-exact"
            );
        }
    }
}

#[test]
fn cdr_decoders_never_panic_on_random_or_mutated_bytes() {
    let msgs = fixture_messages();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..20_000 {
        let data: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(300);
            let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half of these get a valid encapsulation header so the field readers run.
            if len >= 4 && i % 4 == 0 {
                d[..4].copy_from_slice(&[0, 1, 0, 0]);
            }
            d
        } else {
            let mut d = msgs[rng.below(msgs.len())].data.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(d.len());
                d[at] = rng.next() as u8;
            }
            d
        };
        let _ = fuzz::cdr_image(&data);
        if data.len() >= 4 {
            if let Ok(mut r) = CdrReader::new(&data) {
                let _ = r.read_header();
                let _ = r.read_string();
                let _ = r.read_bytes();
            }
        }
    }
}

#[test]
fn mcap_reader_never_panics_on_truncated_or_mutated_files() {
    let exp = expected();
    let data = std::fs::read(fixtures().join("bag_mcap/bag_mcap.mcap")).unwrap();
    let n = exp.messages.len();
    let mut prev_ok = 0;
    for cut in 0..data.len() {
        let (ok, err) = fuzz::mcap_bytes(&data[..cut]);
        // A cut file is always reported, and holds no more than the whole file.
        assert_eq!(err, 1, "cut at {cut}");
        assert!(ok <= n);
        // Longer prefixes never read fewer messages.
        assert!(ok >= prev_ok, "cut at {cut}: {ok} < {prev_ok}");
        prev_ok = ok;
    }
    assert_eq!(fuzz::mcap_bytes(&data), (n, 0));
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut d = data.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(d.len());
            d[at] = rng.next() as u8;
        }
        let (ok, err) = fuzz::mcap_bytes(&d);
        assert!(err <= 1);
        assert!(ok <= 4 * n);
    }
}

#[test]
fn sqlite_reader_never_panics_on_damaged_files() {
    let data = std::fs::read(fixtures().join("bag_sqlite3/bag_sqlite3.db3")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    for case in 0..60 {
        let mut d = data.clone();
        if case % 2 == 0 {
            d.truncate(rng.below(d.len()));
        } else {
            for _ in 0..1 + rng.below(32) {
                let at = rng.below(d.len());
                d[at] = rng.next() as u8;
            }
        }
        let p = dir.path().join(format!("case{case}.db3"));
        std::fs::write(&p, &d).unwrap();
        let items: Vec<_> = open_bag(&p).unwrap().messages(None).collect();
        let errs = items.iter().filter(|r| r.is_err()).count();
        assert!(items.len() <= 64, "case {case}");
        // Errors only per bad row or once at the end; decoding any survivor must not panic.
        assert!(errs <= items.len());
        for m in items.into_iter().flatten() {
            let _ = decode_image(&m.msg_type, &m.data);
        }
        let _ = open_bag(&p).unwrap().topics();
    }
}
