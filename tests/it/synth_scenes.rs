//! `yolact synth-scenes` (src/scenes): reproducibility, the masks against their boxes and each
//! other, depth against the 3D ground truth, pycocotools' decoding of our RLE
//! (tools/check_scenes_coco.py), and the sequence bag read back by rosbags
//! (tools/read_replay_bag.py) and replayed.
//!
//! (The module is not called `scenes`: that name is the kernel tests' shared inputs.)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

use crate::support::{self, rle_counts, text, yolact};

const SIZE: &str = "160x120";

fn generate(dir: &Path, args: &[&str]) {
    let out = dir.to_str().unwrap();
    let mut all = vec!["synth-scenes", "--out", out, "--size", SIZE];
    all.extend_from_slice(args);
    let o = yolact(&all);
    assert!(o.status.success(), "synth-scenes failed: {}", text(&o));
}

fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// A mask decoded with the tests' own RLE decoder: row-major 0/1, `h x w`.
fn decode(ann: &Json) -> (usize, usize, Vec<u8>) {
    let seg = &ann["segmentation"];
    let h = seg["size"][0].as_u64().unwrap() as usize;
    let w = seg["size"][1].as_u64().unwrap() as usize;
    let counts = rle_counts(seg["counts"].as_str().unwrap());
    assert_eq!(
        counts.iter().sum::<i64>(),
        (h * w) as i64,
        "runs cover the image"
    );
    let mut m = vec![0u8; h * w];
    let mut pos = 0usize;
    for (k, &c) in counts.iter().enumerate() {
        assert!(c >= 0);
        if k % 2 == 1 {
            for j in pos..pos + c as usize {
                // Column-major runs.
                m[(j % h) * w + j / h] = 1;
            }
        }
        pos += c as usize;
    }
    (h, w, m)
}

/// COCO `[x, y, w, h]` of a mask's pixels.
fn bounds(h: usize, w: usize, m: &[u8]) -> Option<[u64; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if m[y * w + x] != 0 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    (x0 != usize::MAX).then(|| {
        [
            x0 as u64,
            y0 as u64,
            (x1 - x0 + 1) as u64,
            (y1 - y0 + 1) as u64,
        ]
    })
}

fn bbox_of(ann: &Json) -> [u64; 4] {
    let b: Vec<u64> = ann["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    [b[0], b[1], b[2], b[3]]
}

/// A generated still set shared by the checks that only read it.
fn stills() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        generate(d.path(), &["--images", "12", "--seed", "7"]);
        d
    })
    .path()
}

#[test]
fn same_seed_same_bytes_other_seed_other_scenes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(a.path(), &["--images", "3", "--seed", "11"]);
    generate(b.path(), &["--images", "3", "--seed", "11"]);
    generate(c.path(), &["--images", "3", "--seed", "12"]);
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    // 3 x (colour, depth, camera) + annotations + 3D boxes.
    assert_eq!(ta.len(), 11, "{:?}", ta.keys().collect::<Vec<_>>());
    assert_eq!(ta, tb, "the same seed wrote different bytes");
    for name in ta.keys().filter(|k| k.starts_with("images")) {
        assert_ne!(
            ta[name],
            tc[name],
            "{} is the same under another seed",
            name.display()
        );
    }
}

#[test]
fn masks_are_non_empty_disjoint_and_bounded_by_their_bbox() {
    let gt = read_json(&stills().join("annotations.json"));
    let anns = gt["annotations"].as_array().unwrap();
    assert!(anns.len() >= 12 * 3, "only {} annotations", anns.len());
    let cats: Vec<u64> = gt["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let mut cover: HashMap<u64, Vec<u8>> = HashMap::new();
    for ann in anns {
        assert_eq!(ann["iscrowd"], 0);
        assert!(cats.contains(&ann["category_id"].as_u64().unwrap()));
        let (h, w, m) = decode(ann);
        let pixels = m.iter().filter(|&&v| v != 0).count() as u64;
        assert!(pixels > 0, "empty mask: {ann}");
        assert_eq!(ann["area"].as_u64().unwrap(), pixels);
        assert_eq!(
            Some(bbox_of(ann)),
            bounds(h, w, &m),
            "bbox of annotation {}",
            ann["id"]
        );
        let image = ann["image_id"].as_u64().unwrap();
        let seen = cover.entry(image).or_insert_with(|| vec![0; h * w]);
        for (s, &v) in seen.iter_mut().zip(&m) {
            assert!(!(v != 0 && *s != 0), "masks overlap in image {image}");
            *s |= v;
        }
    }
    assert_eq!(cover.len(), 12, "every image has objects");
}

struct Frame {
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    depth: image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
}

fn frame(dir: &Path, img: &Json) -> Frame {
    let cam = read_json(&dir.join(img["camera_file"].as_str().unwrap()));
    let depth = image::open(dir.join(img["depth_file"].as_str().unwrap()))
        .unwrap()
        .into_luma16();
    let f = |k: &str| cam[k].as_f64().unwrap();
    assert_eq!(depth.width() as u64, img["width"].as_u64().unwrap());
    Frame {
        fx: f("fx"),
        fy: f("fy"),
        cx: f("cx"),
        cy: f("cy"),
        depth,
    }
}

/// The optical-frame point of pixel (u, v) at its depth (m); None without a reading.
fn unproject(f: &Frame, u: usize, v: usize) -> Option<[f64; 3]> {
    let z = f64::from(f.depth.get_pixel(u as u32, v as u32)[0]) / 1000.0;
    (z > 0.0).then(|| {
        [
            (u as f64 + 0.5 - f.cx) / f.fx * z,
            (v as f64 + 0.5 - f.cy) / f.fy * z,
            z,
        ]
    })
}

fn vec3(v: &Json) -> [f64; 3] {
    let a = v.as_array().unwrap();
    [
        a[0].as_f64().unwrap(),
        a[1].as_f64().unwrap(),
        a[2].as_f64().unwrap(),
    ]
}

/// Annotations by id, and the 3D objects that have one, with their image.
fn joined(dir: &Path) -> (Json, Vec<(Json, Json, Json)>) {
    let gt = read_json(&dir.join("annotations.json"));
    let boxes = read_json(&dir.join("boxes3d.json"));
    let anns: HashMap<u64, Json> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_u64().unwrap(), a.clone()))
        .collect();
    let images: HashMap<u64, Json> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_u64().unwrap(), i.clone()))
        .collect();
    let mut out = Vec::new();
    for f in boxes["frames"].as_array().unwrap() {
        let img = &images[&f["image_id"].as_u64().unwrap()];
        for o in f["objects"].as_array().unwrap() {
            if let Some(id) = o["annotation_id"].as_u64() {
                let ann = anns[&id].clone();
                assert_eq!(ann["image_id"], f["image_id"]);
                assert_eq!(ann["category_id"], o["category_id"]);
                out.push((img.clone(), ann, o.clone()));
            }
        }
    }
    (gt, out)
}

#[test]
fn depth_under_each_mask_lies_on_its_object() {
    let dir = stills();
    let (_, objs) = joined(dir);
    let mut spheres = 0;
    for (img, ann, obj) in &objs {
        let f = frame(dir, img);
        let (h, w, m) = decode(ann);
        let c = vec3(&obj["centre"]);
        let size = vec3(&obj["size"]);
        let r: Vec<f64> = obj["rotation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let unoccluded = ann["visible_fraction"].as_f64().unwrap() == 1.0
            && !ann["truncated"].as_bool().unwrap();
        let is_sphere = obj["shape"] == "sphere";
        let mut nearest = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if m[y * w + x] == 0 {
                    continue;
                }
                let p = unproject(&f, x, y).expect("an object pixel has depth");
                let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
                // Into the box's axes (R^T d): every point lies within the box, up to the depth
                // image's 1 mm steps.
                for k in 0..3 {
                    let local = r[k] * d[0] + r[3 + k] * d[1] + r[6 + k] * d[2];
                    assert!(
                        local.abs() <= size[k] / 2.0 + 0.002,
                        "image {} ann {}: point {p:?} is {local} m along axis {k} of a {size:?} box",
                        img["id"],
                        ann["id"]
                    );
                }
                if is_sphere {
                    let dist = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                    assert!(
                        (dist - size[0] / 2.0).abs() < 0.002,
                        "sphere point {dist} m from the centre, radius {}",
                        size[0] / 2.0
                    );
                    nearest.push(p[2]);
                }
            }
        }
        if is_sphere && unoccluded {
            spheres += 1;
            let rad = size[0] / 2.0;
            // The lowest depth of a sphere is its centre's z minus the radius (to the mm steps
            // and the pixel grid).
            let min_z = nearest.iter().cloned().fold(f64::INFINITY, f64::min);
            assert!(
                min_z >= c[2] - rad - 0.001 && min_z - (c[2] - rad) < 0.004,
                "nearest depth {min_z}, sphere front at z {}",
                c[2] - rad
            );
            // The pixel the centre projects into shows the sphere's point nearest the camera,
            // the centre minus a radius along the ray (within a few mm: the pixel's ray is off
            // the centre's by up to half a pixel).
            let (u, v) = (f.fx * c[0] / c[2] + f.cx, f.fy * c[1] / c[2] + f.cy);
            let p = unproject(&f, u as usize, v as usize).unwrap();
            let norm = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
            let front = [0, 1, 2].map(|k| c[k] - rad * c[k] / norm);
            let err =
                ((p[0] - front[0]).powi(2) + (p[1] - front[1]).powi(2) + (p[2] - front[2]).powi(2))
                    .sqrt();
            let half_pixel = 0.5 * c[2] / f.fx.min(f.fy) * 2f64.sqrt();
            assert!(
                err < half_pixel + 0.002,
                "centre pixel's point {err} m off the sphere's front"
            );
        }
    }
    assert!(spheres >= 1, "no unoccluded sphere in the set to check");
}

#[test]
fn box_centres_project_inside_the_bbox_of_unoccluded_objects() {
    let dir = stills();
    let (_, objs) = joined(dir);
    let mut checked = 0;
    for (img, ann, obj) in &objs {
        if ann["visible_fraction"].as_f64().unwrap() < 1.0 || ann["truncated"].as_bool().unwrap() {
            continue;
        }
        let f = frame(dir, img);
        let c = vec3(&obj["centre"]);
        let (u, v) = (f.fx * c[0] / c[2] + f.cx, f.fy * c[1] / c[2] + f.cy);
        let [x, y, w, h] = bbox_of(ann).map(|b| b as f64);
        assert!(
            u >= x && u <= x + w && v >= y && v <= y + h,
            "centre projects to ({u}, {v}), bbox {:?}",
            [x, y, w, h]
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} unoccluded objects");
}

#[test]
fn pycocotools_decodes_our_rle_to_the_same_area_and_bbox() {
    let dir = stills();
    let o = Command::new("python3")
        .arg(support::repo().join("tools/check_scenes_coco.py"))
        .arg(dir.join("annotations.json"))
        .output()
        .expect("python3 runs");
    // pycocotools is installed wherever the tests run (tools/test.sh, CI): its absence fails.
    assert!(
        o.status.success(),
        "check_scenes_coco.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs: HashMap<String, Json> = serde_json::from_slice(&o.stdout).unwrap();
    let gt = read_json(&dir.join("annotations.json"));
    let anns = gt["annotations"].as_array().unwrap();
    assert_eq!(theirs.len(), anns.len());
    for ann in anns {
        let t = &theirs[&ann["id"].to_string()];
        assert_eq!(t["area"].as_f64().unwrap(), ann["area"].as_f64().unwrap());
        assert_eq!(t["pixels"].as_u64().unwrap(), ann["area"].as_u64().unwrap());
        let b: Vec<f64> = t["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            b,
            bbox_of(ann).map(|v| v as f64).to_vec(),
            "annotation {}",
            ann["id"]
        );
    }
}

/// The bag through rosbags: topics, types and stamps. Missing rosbags fails when
/// `YOLACT_REQUIRE_ROSBAGS` is set, as in tests/it/replay.rs.
fn rosbags_read(bag: &Path) -> Option<Json> {
    let o = Command::new("python3")
        .arg(support::repo().join("tools/read_replay_bag.py"))
        .arg(bag)
        .arg(support::repo().join("msg"))
        .output()
        .expect("python3 runs");
    if o.status.code() == Some(2) {
        assert!(
            std::env::var_os("YOLACT_REQUIRE_ROSBAGS").is_none(),
            "rosbags check required but unavailable: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!(
            "NOT CHECKED with rosbags: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    assert!(
        o.status.success(),
        "read_replay_bag.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn sequence_tracks_move_smoothly_and_the_bag_reads_back_and_replays() {
    let d = tempfile::tempdir().unwrap();
    let frames = 4u64;
    generate(d.path(), &["--sequence", "4", "--seed", "3"]);
    let gt = read_json(&d.path().join("annotations.json"));
    let images = gt["images"].as_array().unwrap();
    assert_eq!(images.len() as u64, frames);
    let stamps: Vec<u64> = images
        .iter()
        .map(|i| i["stamp_ns"].as_u64().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|s| s[1] > s[0]));

    // A track keeps its class, and its centre moves by less than 5 cm per frame at 30 fps.
    let boxes = read_json(&d.path().join("boxes3d.json"));
    let mut last: HashMap<u64, (Json, [f64; 3])> = HashMap::new();
    for f in boxes["frames"].as_array().unwrap() {
        for o in f["objects"].as_array().unwrap() {
            let id = o["track_id"].as_u64().unwrap();
            let c = vec3(&o["centre"]);
            if let Some((cat, prev)) = last.get(&id) {
                assert_eq!(cat, &o["category_id"]);
                let step = ((c[0] - prev[0]).powi(2)
                    + (c[1] - prev[1]).powi(2)
                    + (c[2] - prev[2]).powi(2))
                .sqrt();
                assert!(step < 0.05, "track {id} jumps {step} m");
            }
            last.insert(id, (o["category_id"].clone(), c));
        }
    }
    for a in gt["annotations"].as_array().unwrap() {
        assert!(a["track_id"].as_u64().is_some(), "{a}");
    }

    // Our reader: four topics, a message each per frame, depth equal to the depth PNG.
    let bag = d.path().join("sequence.mcap");
    let msgs: Vec<_> = yolact_ros2::bag::open_bag(&bag)
        .unwrap()
        .messages(None)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(msgs.len() as u64, 4 * frames);
    let depth_topic = "/camera/aligned_depth_to_color/image_raw";
    let depth_msgs: Vec<_> = msgs.iter().filter(|m| m.topic == depth_topic).collect();
    assert_eq!(depth_msgs.len() as u64, frames);
    for (m, img) in depth_msgs.iter().zip(images) {
        let im = yolact_ros2::bag::ImageMsg::from_cdr(&m.data).unwrap();
        assert_eq!(im.encoding, "16UC1");
        assert_eq!(
            im.header.stamp.as_nanos() as u64,
            img["stamp_ns"].as_u64().unwrap()
        );
        let png = image::open(d.path().join(img["depth_file"].as_str().unwrap()))
            .unwrap()
            .into_luma16();
        let from_bag: Vec<u16> = im
            .data
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(from_bag, png.into_raw());
    }

    if let Some(j) = rosbags_read(&bag) {
        let mut topics: Vec<(String, String)> = j["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["topic"].as_str().unwrap().into(),
                    c["msgtype"].as_str().unwrap().into(),
                )
            })
            .collect();
        topics.sort();
        let want = [
            (
                "/camera/aligned_depth_to_color/camera_info",
                "sensor_msgs/msg/CameraInfo",
            ),
            (
                "/camera/aligned_depth_to_color/image_raw",
                "sensor_msgs/msg/Image",
            ),
            ("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo"),
            ("/camera/color/image_raw", "sensor_msgs/msg/Image"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(topics, want);
        let colour: Vec<u64> = j["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["topic"] == "/camera/color/image_raw")
            .map(|m| {
                let s = &m["msg"]["header"]["stamp"];
                s["sec"].as_u64().unwrap() * 1_000_000_000 + s["nanosec"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(colour, stamps);
    }

    // The replay segments the colour frames and matches them to the annotations by stamp.
    let out = d.path().join("out.mcap");
    let report = d.path().join("report");
    let o = yolact(&[
        "replay",
        bag.to_str().unwrap(),
        "--weights",
        "synthetic",
        "--config",
        "yolact_resnet50",
        "--device",
        "cpu",
        "--topics",
        "/camera/color/image_raw",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--coco-gt",
        d.path().join("annotations.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "replay: {}", text(&o));
    let rep = read_json(&report.join("report.json"));
    assert_eq!(rep["frames"].as_u64(), Some(frames), "{rep}");
}
