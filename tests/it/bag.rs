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
        // Each damaged region is one error and reading goes on after it: at most one per
        // mutation and one for a cut or broken end.
        assert!(err <= 9, "{err} errors");
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

/// The fixture messages rewritten by the `mcap` crate's writer with uncompressed chunks of
/// `per_chunk` messages (so pixel bytes appear in the file as they are).
fn uncompressed_bag(per_chunk: usize) -> (Vec<u8>, Vec<BagMessage>) {
    bag_with(per_chunk, None)
}

fn bag_with(
    per_chunk: usize,
    compression: Option<mcap::Compression>,
) -> (Vec<u8>, Vec<BagMessage>) {
    let msgs = fixture_messages();
    let mut w = mcap::WriteOptions::new()
        .compression(compression)
        .profile("ros2")
        .create(std::io::Cursor::new(Vec::new()))
        .unwrap();
    let mut chans = std::collections::BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        let ch = *chans.entry(m.topic.clone()).or_insert_with(|| {
            let s = w.add_schema(&m.msg_type, "ros2msg", b"").unwrap();
            w.add_channel(s, &m.topic, "cdr", &Default::default())
                .unwrap()
        });
        let h = mcap::records::MessageHeader {
            channel_id: ch,
            sequence: i as u32,
            log_time: m.log_time_ns,
            publish_time: m.log_time_ns,
        };
        w.write_to_known_channel(&h, &m.data).unwrap();
        if (i + 1) % per_chunk == 0 {
            w.flush().unwrap();
        }
    }
    w.finish().unwrap();
    (w.into_inner().into_inner(), msgs)
}

fn read_bytes(data: &[u8]) -> Vec<Result<BagMessage, BagError>> {
    yolact_ros2::bag::mcap_reader::McapMessages::from_reader(
        Box::new(std::io::Cursor::new(data.to_vec())),
        Path::new("t.mcap"),
        None,
    )
    .unwrap()
    .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("bytes in the file")
}

fn kinds(items: &[Result<BagMessage, BagError>]) -> Vec<&'static str> {
    items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(BagError::read_error_kind)
        .collect()
}

fn oks(items: &[Result<BagMessage, BagError>]) -> Vec<BagMessage> {
    items.iter().filter_map(|r| r.as_ref().ok().cloned()).collect()
}

#[test]
fn a_flipped_pixel_byte_is_a_counted_crc_skip_of_that_chunk_only() {
    let (mut data, msgs) = uncompressed_bag(3);
    assert_eq!(fuzz::mcap_bytes(&data), (msgs.len(), 0));
    // Message 4 (chunk 2 of 4): flip one byte in the middle of its pixel data.
    let m = &msgs[4];
    let at = find(&data, &m.data[m.data.len() - 40..]) + 20;
    data[at] ^= 0x01;
    let items = read_bytes(&data);
    assert_eq!(kinds(&items), vec!["chunk_crc"]);
    let err = items.iter().find_map(|r| r.as_ref().err()).unwrap().to_string();
    assert!(err.contains("CRC mismatch"), "{err}");
    let want: Vec<BagMessage> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| !(3..6).contains(i))
        .map(|(_, m)| m.clone())
        .collect();
    assert!(oks(&items) == want, "every other chunk read, unchanged");
}

#[test]
fn a_corrupted_zstd_middle_chunk_costs_only_its_messages() {
    let msgs = fixture_messages();
    let want: Vec<BagMessage> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| !(3..6).contains(i))
        .map(|(_, m)| m.clone())
        .collect();
    // The rosbags fixture (no chunk CRCs): its second chunk's zstd frame header broken.
    let mut data = std::fs::read(fixtures().join("bag_mcap/bag_mcap.mcap")).unwrap();
    let chunks = crate::replay_recovery::chunk_offsets(&data);
    let at = crate::replay_recovery::zstd_records(chunks[1]);
    data[at] ^= 0xff;
    let items = read_bytes(&data);
    assert_eq!(kinds(&items), vec!["chunk"]);
    assert!(oks(&items) == want, "other messages lost or changed");
    // A zstd bag with CRCs (the mcap crate's writer): bytes deep in the second chunk's
    // compressed data flipped; caught by the decoder or by the CRC.
    let (data0, _) = bag_with(3, Some(mcap::Compression::Zstd));
    let chunks = crate::replay_recovery::chunk_offsets(&data0);
    for frac in [2usize, 3, 5] {
        let mut data = data0.clone();
        let len = u64::from_le_bytes(data[chunks[1] + 1..chunks[1] + 9].try_into().unwrap());
        let at = chunks[1] + 9 + (len as usize) * (frac - 1) / frac;
        data[at] ^= 0x10;
        let items = read_bytes(&data);
        let ks = kinds(&items);
        assert_eq!(ks.len(), 1, "{ks:?}");
        assert!(matches!(ks[0], "chunk" | "chunk_crc"), "{ks:?}");
        assert!(oks(&items) == want, "1/{frac}: other messages lost or changed");
    }
}

#[test]
fn lost_framing_resynchronises_on_the_next_chunk_with_or_without_a_summary() {
    let (data, msgs) = uncompressed_bag(3);
    let chunks = crate::replay_recovery::chunk_offsets(&data);
    assert_eq!(chunks.len(), 4);
    let mut bad = data.clone();
    // The second chunk's length field: garbage, so framing after it is lost.
    bad[chunks[1] + 1..chunks[1] + 9].copy_from_slice(&0x0123_4567_89ab_u64.to_le_bytes());
    // Without the summary (everything from the data end on cut): the reader must scan.
    let data_end = find(&bad[chunks[3]..], &[0x0F, 4, 0, 0, 0, 0, 0, 0, 0]) + chunks[3];
    let no_summary = bad[..data_end].to_vec();
    for (what, d) in [("with summary", &bad), ("without summary", &no_summary)] {
        let items = read_bytes(d);
        let ks = kinds(&items);
        assert_eq!(ks[0], "framing", "{what}: {ks:?}");
        let want: Vec<BagMessage> = msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| !(3..6).contains(i))
            .map(|(_, m)| m.clone())
            .collect();
        assert!(oks(&items) == want, "{what}: messages lost or changed");
    }
}

#[test]
fn a_bag_cut_as_by_sigkill_is_recovered_whole_up_to_the_cut() {
    let (data, msgs) = uncompressed_bag(3);
    let chunks = crate::replay_recovery::chunk_offsets(&data);
    // Cut in the middle of the third chunk: no summary, no footer, no end magic.
    let cut = &data[..(chunks[2] + chunks[3]) / 2];
    let (n, damage) = fuzz::mcap_recover(cut).expect("an MCAP file");
    assert_eq!((n, damage), (6, 1));
    let (rec, out) = yolact_ros2::bag::recover::recover_stream(
        std::io::Cursor::new(cut.to_vec()),
        Path::new("cut.mcap"),
        std::io::Cursor::new(Vec::new()),
        Path::new("rec.mcap"),
    )
    .unwrap();
    assert_eq!(rec.damage[0].read_error_kind(), "truncated");
    let bytes = out.into_inner();
    // A reader that is not ours: the mcap crate reads the summary and every message.
    let summary = mcap::Summary::read(&bytes).unwrap().expect("a summary");
    assert_eq!(summary.stats.unwrap().message_count, 6);
    let theirs: Vec<(String, u64, Vec<u8>)> = mcap::MessageStream::new(&bytes)
        .unwrap()
        .map(|m| {
            let m = m.unwrap();
            (m.channel.topic.clone(), m.log_time, m.data.into_owned())
        })
        .collect();
    let want: Vec<(String, u64, Vec<u8>)> = msgs[..6]
        .iter()
        .map(|m| (m.topic.clone(), m.log_time_ns, m.data.clone()))
        .collect();
    assert!(theirs == want, "the recovered messages are the first six, unchanged");
    // The CLI does the same and refuses to write over its input.
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("cut.mcap");
    std::fs::write(&inp, cut).unwrap();
    let o = crate::support::yolact(&["bag-recover", inp.to_str().unwrap(), inp.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&inp).unwrap(), cut, "the input is untouched");
    let outp = dir.path().join("rec.mcap");
    let o = crate::support::yolact(&["bag-recover", inp.to_str().unwrap(), outp.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", crate::support::text(&o));
    assert_eq!(std::fs::read(&outp).unwrap().len() > 0, true);
    assert_eq!(
        oks(&read_all(&outp)).len(),
        6,
        "the recovered file reads back whole"
    );
}

#[test]
fn non_mcap_files_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mcap");
    std::fs::write(&p, b"PK\x03\x04 a zip, not a bag").unwrap();
    let e = open_bag(&p).unwrap().topics().unwrap_err();
    assert!(e.to_string().contains("not an MCAP file"), "{e}");
    assert_eq!(e.read_error_kind(), "not_mcap");
    let items = read_all(&p);
    assert_eq!(items.len(), 1);
    assert!(items[0].as_ref().unwrap_err().to_string().contains("not an MCAP file"));
}

/// A stable-Rust mutation loop over the MCAP reader and the recovery path, for as long as
/// `YOLACT_FUZZ_SECS` says per target (docs/replay.md, "Fuzzing"):
/// `YOLACT_FUZZ_SECS=180 cargo test --release --test it bag::mutation_fuzz -- --ignored --nocapture`.
/// A panic fails the test and leaves its input in the system temp directory.
#[test]
#[ignore]
fn mutation_fuzz() {
    let secs: u64 = std::env::var("YOLACT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut seeds = vec![
        std::fs::read(fixtures().join("bag_mcap/bag_mcap.mcap")).unwrap(),
        std::fs::read(fixtures().join("truncated.mcap")).unwrap(),
        std::fs::read(fixtures().join("fuzz_mcap_huge_string.mcap")).unwrap(),
    ];
    seeds.push(uncompressed_bag(3).0);
    seeds.push(uncompressed_bag(1).0);
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 2] = [
        ("mcap_reader", |d| {
            let _ = fuzz::mcap_bytes(d);
        }),
        ("mcap_recover", |d| {
            let _ = fuzz::mcap_recover(d);
        }),
    ];
    for (name, target) in targets {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let start = std::time::Instant::now();
        let mut execs = 0u64;
        while start.elapsed().as_secs() < secs {
            let mut d = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut d, &mut rng, &seeds);
            }
            let r = std::panic::catch_unwind(|| target(&d));
            if r.is_err() {
                let p = std::env::temp_dir().join(format!("yolact_fuzz_{name}_{execs}.mcap"));
                std::fs::write(&p, &d).unwrap();
                panic!("{name}: panic on the input saved as {}", p.display());
            }
            execs += 1;
        }
        eprintln!("mutation_fuzz {name}: {execs} executions in {secs} s, no panic");
    }
}

/// One random edit: byte flips, a random or extreme u64 (a length field), a cut, a deleted or
/// duplicated range, or a splice from another seed.
fn mutate(d: &mut Vec<u8>, rng: &mut Rng, seeds: &[Vec<u8>]) {
    if d.is_empty() {
        d.push(rng.next() as u8);
        return;
    }
    let at = rng.below(d.len());
    match rng.below(7) {
        0 => d[at] ^= 1 << rng.below(8),
        1 => d[at] = rng.next() as u8,
        2 => {
            let v = match rng.below(3) {
                0 => rng.next(),
                1 => u64::MAX - rng.below(16) as u64,
                _ => rng.below(1 << 20) as u64,
            };
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(x) = d.get_mut(at + i) {
                    *x = *b;
                }
            }
        }
        3 => d.truncate(at),
        4 => {
            let n = rng.below(256).min(d.len() - at);
            d.drain(at..at + n);
        }
        5 => {
            let n = rng.below(512).min(d.len() - at);
            let r: Vec<u8> = d[at..at + n].to_vec();
            let to = rng.below(d.len());
            d.splice(to..to, r);
        }
        _ => {
            let s = &seeds[rng.below(seeds.len())];
            let from = rng.below(s.len());
            let n = rng.below(2048).min(s.len() - from);
            let to = rng.below(d.len());
            let end = (to + n).min(d.len());
            d.splice(to..end, s[from..from + n].iter().copied());
        }
    }
}
