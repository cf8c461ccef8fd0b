//! A small synthetic COCO-format training set written to a temporary folder: `n` PNG images of
//! varying size with one or two rectangle polygons each (and a crowd on every third image).

use std::path::{Path, PathBuf};

use serde_json::json;

pub struct SynthSet {
    pub dir: tempfile::TempDir,
    pub ann: PathBuf,
    pub images: PathBuf,
}

impl SynthSet {
    /// The image file of dataset image id `id`.
    pub fn image(&self, id: usize) -> PathBuf {
        self.images.join(format!("im{id}.png"))
    }
}

/// Rectangle polygon [x, y, w, h] as COCO's one-part polygon list.
fn rect_poly(x: f64, y: f64, w: f64, h: f64) -> serde_json::Value {
    json!([[x, y, x + w, y, x + w, y + h, x, y + h]])
}

/// `n` images, ids 1..=n, sizes between 40x30 and 90x70; see the module docs.
pub fn synth_set(n: usize) -> SynthSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    let (mut ims, mut anns) = (Vec::new(), Vec::new());
    let mut aid = 0;
    for id in 1..=n {
        let (w, h) = (40 + (id * 13) % 51, 30 + (id * 7) % 41);
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb([
                (x * 5 + id as u32) as u8,
                (y * 3) as u8,
                (x * y + 17 * id as u32) as u8,
            ])
        });
        img.save(images.join(format!("im{id}.png"))).expect("png");
        ims.push(json!({"id": id, "file_name": format!("im{id}.png"), "width": w, "height": h}));
        let (wf, hf) = (w as f64, h as f64);
        let mut add = |cat: i64, b: [f64; 4], crowd: bool| {
            aid += 1;
            anns.push(json!({"id": aid, "image_id": id, "category_id": cat,
                "segmentation": rect_poly(b[0], b[1], b[2], b[3]), "bbox": b,
                "area": b[2] * b[3], "iscrowd": crowd as i32}));
        };
        add(
            1 + (id as i64 % 2) * 4,
            [2.0, 3.0, wf / 2.0, hf / 2.0],
            false,
        );
        if id % 2 == 0 {
            add(3, [wf / 3.0, hf / 4.0, wf / 2.0, hf / 2.0], false);
        }
        if id % 3 == 0 {
            add(1, [wf / 2.0, hf / 2.0, wf / 3.0, hf / 3.0], true);
        }
    }
    let ann = dir.path().join("ann.json");
    let root = json!({"images": ims, "annotations": anns,
        "categories": [{"id": 5, "name": "e"}, {"id": 1, "name": "a"}, {"id": 3, "name": "c"}]});
    std::fs::write(&ann, root.to_string()).expect("write ann");
    SynthSet { dir, ann, images }
}

/// Rewrites `ann` through `edit` (for the broken-input tests).
pub fn edit_json(ann: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ann).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(ann, v.to_string()).expect("write");
}
