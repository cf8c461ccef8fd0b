//! A COCO-format training set: an annotation file plus an image folder, read as the reference's
//! `COCODetection` reads it (`__init__`, `pull_item`), with the checks it lacks.
//!
//! * Parsing, polygons and RLEs are the evaluator's ([`crate::eval::coco_eval`]): one parser.
//! * Labels: the file's `categories`, sorted by id, give the class names and the map
//!   category id → contiguous label 0..C-1. This replaces the reference's per-config
//!   `label_map`: for COCO's own files (80 categories with ids 1..90 and gaps) it yields exactly
//!   `COCO_LABEL_MAP` minus one ([`crate::output::labels::CATEGORY_IDS`] is that order); for a
//!   custom dataset it removes the reference's requirement that ids be 1..C.
//! * Images are sampled in the order of their first annotation (pycocotools' `imgToAnns` keys).
//!   Images without annotations are never sampled (counted in [`Skipped`]).
//! * Crowds (`iscrowd` truthy) come last with label -1, as in the reference.
//! * Deviation: images whose annotations are all crowds make the reference crash in the loss
//!   (`match` gets no non-crowd truth); they are skipped here and counted.
//! * Broken input is an error naming the annotation (or image) id and the file: an unknown
//!   category id, a missing bbox or segmentation, a bbox reaching more than [`BOX_TOLERANCE`] px
//!   beyond the image, a polygon with fewer than 3 points, an RLE of another size than its
//!   image, a missing image file (at open); an undecodable image or one whose size differs from
//!   the JSON (when it is read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{Transform, YolactConfig};
use crate::engine::preprocess::load_image;
use crate::eval::coco_eval::dataset::segmentation_to_rle;
use crate::eval::coco_eval::{CocoGt, Segmentation};
use crate::{Error, Result};

use super::augment::{augment, sample_rng, stream, AugmentFlags};
use super::sample::Sample;
use super::transform::{finish_train, Work};

/// How far (px) a bbox may reach beyond the image before it is an error: COCO's own boxes
/// overshoot by rounding (x + w up to a fraction of a pixel past the border), so 1 px accepts
/// those and still catches boxes from another image size or coordinate convention.
pub const BOX_TOLERANCE: f64 = 1.0;

/// After this many replacement draws without a sample that has a non-crowd object, `sample`
/// gives up with an error instead of looping (the reference has no limit).
const MAX_RESAMPLES: u64 = 64;

/// Images present in the file but not sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Images without any annotation (the reference never samples them either).
    pub without_annotations: usize,
    /// Images whose annotations are all crowds (the reference crashes on them; a deviation).
    pub crowd_only: usize,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images without annotations and {} with only crowd annotations skipped",
            self.without_annotations, self.crowd_only
        )
    }
}

/// One annotation, checked and in training form.
#[derive(Debug, Clone)]
struct Object {
    id: i64,
    /// Contiguous class, -1 for a crowd.
    label: i64,
    /// x1y1x2y2 / (W, H), computed as the reference's `COCOAnnotationTransform` (f64).
    rel_box: [f64; 4],
    segmentation: Segmentation,
}

#[derive(Debug, Clone)]
struct Entry {
    image_id: i64,
    file: PathBuf,
    width: u32,
    height: u32,
    /// Non-crowds in file order, then crowds in file order.
    objects: Vec<Object>,
    num_crowds: usize,
}

/// A training set in the reference's sampling order.
#[derive(Debug, Clone)]
pub struct TrainSet {
    entries: Vec<Entry>,
    class_names: Vec<String>,
    skipped: Skipped,
    size: usize,
    transform: Transform,
    flags: AugmentFlags,
    ann_file: PathBuf,
}

/// The file name the reference looks for: a COCO 2014 name `COCO_train2014_%012d.jpg` becomes
/// its last `_` part.
fn reference_file_name(name: &str) -> &str {
    if name.starts_with("COCO") {
        name.rsplit('_').next().unwrap_or(name)
    } else {
        name
    }
}

impl TrainSet {
    /// Reads `ann` (COCO instances JSON) with images under `images`, for `cfg`'s input size and
    /// normalisation. Fails on the broken inputs listed in the module docs.
    pub fn open(ann: &Path, images: &Path, cfg: &YolactConfig) -> Result<TrainSet> {
        let gt = CocoGt::from_path(ann)?;
        let err = |what: String| Error::Invalid(format!("{}: {what}", ann.display()));

        let mut cats: Vec<_> = gt.categories.iter().collect();
        cats.sort_by_key(|c| c.id);
        if let Some(w) = cats.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(err(format!("category id {} is listed twice", w[0].id)));
        }
        if cats.len() > cfg.num_fg_classes() {
            return Err(err(format!(
                "{} categories, but config `{}` has {} classes",
                cats.len(),
                cfg.name,
                cfg.num_fg_classes()
            )));
        }
        let label_of: HashMap<i64, i64> = cats
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i as i64))
            .collect();
        let class_names = cats.iter().map(|c| c.name.clone()).collect();

        let mut image_at: HashMap<i64, usize> = HashMap::new();
        for (i, im) in gt.images.iter().enumerate() {
            if image_at.insert(im.id, i).is_some() {
                return Err(err(format!("image id {} is listed twice", im.id)));
            }
        }

        // imgToAnns order: images by first annotation.
        let mut order: Vec<usize> = Vec::new();
        let mut objects: HashMap<usize, (Vec<Object>, Vec<Object>)> = HashMap::new();
        for a in &gt.annotations {
            let what = |m: String| err(format!("annotation {}: {m}", a.id));
            let Some(&im_index) = image_at.get(&a.image_id) else {
                return Err(what(format!("image id {} is not in `images`", a.image_id)));
            };
            let im = &gt.images[im_index];
            let label = if a.iscrowd {
                -1
            } else {
                *label_of.get(&a.category_id).ok_or_else(|| {
                    what(format!(
                        "category id {} is not in `categories`",
                        a.category_id
                    ))
                })?
            };
            // Crowds also need a known category: their id is only replaced by -1 for training.
            if a.iscrowd && !label_of.contains_key(&a.category_id) {
                return Err(what(format!(
                    "category id {} is not in `categories`",
                    a.category_id
                )));
            }
            let bbox = a.bbox.ok_or_else(|| what("no bbox".into()))?;
            let (w, h) = (f64::from(im.width), f64::from(im.height));
            let [x, y, bw, bh] = bbox;
            if bw < 0.0
                || bh < 0.0
                || x < -BOX_TOLERANCE
                || y < -BOX_TOLERANCE
                || x + bw > w + BOX_TOLERANCE
                || y + bh > h + BOX_TOLERANCE
            {
                return Err(what(format!(
                    "bbox {bbox:?} reaches beyond the {}x{} image {} by more than {BOX_TOLERANCE} px",
                    im.width, im.height, im.id
                )));
            }
            let seg = a
                .segmentation
                .clone()
                .ok_or_else(|| what("no segmentation".into()))?;
            match &seg {
                Segmentation::Polygons(parts) => {
                    if parts.is_empty() {
                        return Err(what("empty polygon list".into()));
                    }
                    if let Some(p) = parts.iter().find(|p| p.len() < 6 || p.len() % 2 == 1) {
                        return Err(what(format!(
                            "polygon of {} numbers: a polygon needs at least 3 (x, y) points",
                            p.len()
                        )));
                    }
                }
                Segmentation::Rle { height, width, .. } => {
                    if (*height, *width) != (im.height, im.width) {
                        return Err(what(format!(
                            "RLE of size {height}x{width} on the {}x{} image {}",
                            im.height, im.width, im.id
                        )));
                    }
                    // Decode once so corrupt counts fail here, not in a worker mid-training.
                    segmentation_to_rle(&seg, im.height, im.width)
                        .map_err(|e| what(e.to_string()))?;
                }
            }
            let rel_box = [x / w, y / h, (x + bw) / w, (y + bh) / h];
            let obj = Object {
                id: a.id,
                label,
                rel_box,
                segmentation: seg,
            };
            let slot = objects.entry(im_index).or_insert_with(|| {
                order.push(im_index);
                (Vec::new(), Vec::new())
            });
            if a.iscrowd {
                slot.1.push(obj);
            } else {
                slot.0.push(obj);
            }
        }

        let mut entries = Vec::with_capacity(order.len());
        let mut skipped = Skipped {
            without_annotations: gt.images.len() - order.len(),
            crowd_only: 0,
        };
        for im_index in order {
            let Some((mut objs, crowds)) = objects.remove(&im_index) else {
                continue;
            };
            if objs.is_empty() {
                skipped.crowd_only += 1;
                continue;
            }
            let im = &gt.images[im_index];
            if im.width == 0 || im.height == 0 {
                return Err(err(format!("image {} has zero size", im.id)));
            }
            let name = im
                .file_name
                .as_deref()
                .ok_or_else(|| err(format!("image {} has no file_name", im.id)))?;
            let file = images.join(reference_file_name(name));
            if !file.is_file() {
                return Err(err(format!(
                    "image {}: file {} does not exist",
                    im.id,
                    file.display()
                )));
            }
            let num_crowds = crowds.len();
            objs.extend(crowds);
            entries.push(Entry {
                image_id: im.id,
                file,
                width: im.width,
                height: im.height,
                objects: objs,
                num_crowds,
            });
        }
        Ok(TrainSet {
            entries,
            class_names,
            skipped,
            size: cfg.max_size,
            transform: cfg.transform,
            flags: AugmentFlags::default(),
            ann_file: ann.to_path_buf(),
        })
    }

    /// Class names in label order (the categories sorted by id).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of sampled images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// The dataset image id at `index`.
    pub fn image_id(&self, index: usize) -> Option<i64> {
        self.entries.get(index).map(|e| e.image_id)
    }

    /// Which augmentation steps run (all four by default, as in the six configs).
    pub fn set_augment_flags(&mut self, flags: AugmentFlags) {
        self.flags = flags;
    }

    /// Decodes image `index` into the state before the random steps (ConvertFromInts and
    /// ToAbsoluteCoords done).
    pub fn load(&self, index: usize) -> Result<Work> {
        let e = self.entries.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "sample index {index} beyond the {} images of {}",
                self.entries.len(),
                self.ann_file.display()
            ))
        })?;
        let img = load_image(&e.file)?;
        if img.dimensions() != (e.width, e.height) {
            return Err(Error::Image(format!(
                "{}: the file is {}x{}, {} says {}x{} for image {}",
                e.file.display(),
                img.width(),
                img.height(),
                self.ann_file.display(),
                e.width,
                e.height,
                e.image_id
            )));
        }
        let plane = e.width as usize * e.height as usize;
        let mut masks = Vec::with_capacity(e.objects.len() * plane);
        for o in &e.objects {
            let rle = segmentation_to_rle(&o.segmentation, e.height, e.width).map_err(|err| {
                Error::Invalid(format!(
                    "{}: annotation {}: {err}",
                    self.ann_file.display(),
                    o.id
                ))
            })?;
            masks.extend(rle.to_row_major());
        }
        let boxes: Vec<[f64; 4]> = e.objects.iter().map(|o| o.rel_box).collect();
        let labels = e.objects.iter().map(|o| o.label).collect();
        Ok(Work::from_rgb(&img, masks, &boxes, labels, e.num_crowds))
    }

    /// Image `index` after the train transform: the deterministic one with `augment = None`,
    /// `SSDAugmentation` seeded by (seed, epoch, index) otherwise.
    ///
    /// When nothing but crowds survives (after the Resize discard) another image is drawn
    /// from a stream keyed by (seed, epoch, index), as the reference resamples a random index;
    /// the reference does that only when *no* box survives and crashes on crowd-only results.
    pub fn sample(&self, index: usize, augment: Option<(u64, u64)>) -> Result<Sample> {
        let (seed, epoch) = augment.unwrap_or((0, 0));
        let mut resample = sample_rng(seed, epoch, index as u64, stream::RESAMPLE);
        let mut current = index;
        for _ in 0..MAX_RESAMPLES {
            let mut work = self.load(current)?;
            if augment.is_some() {
                let mut rng = sample_rng(seed, epoch, current as u64, stream::AUGMENT);
                self::augment(&mut work, self.flags, &mut rng);
            }
            let (image, truth) = finish_train(work, self.size, self.transform);
            if truth.num_crowds < truth.len() {
                let e = &self.entries[current];
                return Ok(Sample {
                    image,
                    size: self.size,
                    truth,
                    image_id: e.image_id as u64,
                    file: e.file.clone(),
                });
            }
            use rand::Rng;
            current = resample.random_range(0..self.entries.len());
        }
        Err(Error::Invalid(format!(
            "{}: no sample with a non-crowd object after {MAX_RESAMPLES} draws from index {index}",
            self.ann_file.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_2014_names_lose_their_prefix() {
        assert_eq!(
            reference_file_name("COCO_train2014_000000000009.jpg"),
            "000000000009.jpg"
        );
        assert_eq!(reference_file_name("a_b.png"), "a_b.png");
    }
}
