//! Matching bag frames to the images of a COCO annotation file, and collecting result records.
//!
//! A bag has no file names, so a frame is tied to a COCO image either by its position (the
//! 0-based index of the frame among the image messages of the selected topics, in bag order,
//! skipped frames included so that one bad frame does not shift the rest) or by its header stamp.

use std::collections::HashMap;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::config::YolactConfig;
use crate::error::{Error, Result};
use crate::eval::export::{result_records, CategoryMap, RecordScore};
use crate::output::detection::Detections;

/// How frames find their COCO image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CocoMatch {
    /// Frame `i` is the `i`-th image when the images are sorted by `id`.
    Index,
    /// The image whose `stamp_ns` field, or whose `file_name` stem, is the header stamp in ns.
    Stamp,
    /// `Stamp` when every image carries a stamp, else `Index`.
    #[default]
    Auto,
}

impl FromStr for CocoMatch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "index" => Ok(CocoMatch::Index),
            "stamp" => Ok(CocoMatch::Stamp),
            "auto" => Ok(CocoMatch::Auto),
            _ => Err(Error::Invalid(format!(
                "COCO match mode `{s}`: expected index, stamp or auto"
            ))),
        }
    }
}

/// The stamp an image entry carries: `stamp_ns` wins over the file name's stem.
fn image_stamp(img: &Value) -> Option<i64> {
    if let Some(s) = img.get("stamp_ns") {
        return s.as_i64();
    }
    let name = img.get("file_name")?.as_str()?;
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.split_once('.').map_or(base, |(s, _)| s);
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Frame -> image id, resolved from the annotation file once.
#[derive(Debug, Clone)]
pub struct CocoMatcher {
    mode: CocoMatch,
    by_index: Vec<i64>,
    by_stamp: HashMap<i64, i64>,
    /// The file's `categories` list, where a model with its own classes finds their ids.
    categories: Value,
}

impl CocoMatcher {
    /// Reads the `images` list of a COCO annotation file. `Stamp` fails when an image has no
    /// stamp or two images share one; `Auto` resolves to `Stamp` or `Index` here.
    pub fn new(gt: &Value, mode: CocoMatch) -> Result<Self> {
        let images = gt
            .get("images")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Invalid("COCO annotations have no `images` list".into()))?;
        let mut ids = Vec::with_capacity(images.len());
        let mut stamps = Vec::with_capacity(images.len());
        for img in images {
            let id = img
                .get("id")
                .and_then(Value::as_i64)
                .ok_or_else(|| Error::Invalid(format!("COCO image entry without `id`: {img}")))?;
            ids.push(id);
            stamps.push((image_stamp(img), id));
        }
        let all_stamped = !stamps.is_empty() && stamps.iter().all(|(s, _)| s.is_some());
        let mode = match mode {
            CocoMatch::Auto if all_stamped => CocoMatch::Stamp,
            CocoMatch::Auto => CocoMatch::Index,
            m => m,
        };
        let mut by_stamp = HashMap::new();
        if mode == CocoMatch::Stamp {
            for (s, id) in stamps {
                let s = s.ok_or_else(|| {
                    Error::Invalid(format!(
                        "--coco-match stamp: image {id} has neither `stamp_ns` nor a file name \
                         whose stem is a stamp in nanoseconds"
                    ))
                })?;
                if by_stamp.insert(s, id).is_some() {
                    return Err(Error::Invalid(format!(
                        "--coco-match stamp: two images have the stamp {s}"
                    )));
                }
            }
        }
        ids.sort_unstable();
        Ok(CocoMatcher {
            mode,
            by_index: ids,
            by_stamp,
            categories: serde_json::json!({
                "categories": gt.get("categories").cloned().unwrap_or(Value::Array(Vec::new()))
            }),
        })
    }

    /// The resolved mode (never `Auto`).
    pub fn mode(&self) -> CocoMatch {
        self.mode
    }

    pub fn image_id(&self, frame_index: u64, stamp_ns: i64) -> Option<i64> {
        match self.mode {
            CocoMatch::Stamp => self.by_stamp.get(&stamp_ns).copied(),
            _ => usize::try_from(frame_index)
                .ok()
                .and_then(|i| self.by_index.get(i).copied()),
        }
    }
}

/// What the COCO side of a replay produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CocoSummary {
    /// `index` or `stamp`.
    pub matched_by: String,
    /// Segmented frames that found their image.
    pub matched: u64,
    /// Segmented frames without an image; they are not evaluated.
    pub unmatched: u64,
    /// `{"bbox": {...}, "segm": {...}}` as `yolact coco-eval --json` prints it; filled by the CLI.
    pub stats: Option<Value>,
}

/// Result records of the matched frames.
#[derive(Debug, Clone)]
pub struct CocoCollector {
    pub matcher: CocoMatcher,
    /// Ranked by the mask score (YOLACT++: class score x mask IoU).
    pub masks: Vec<Value>,
    /// Ranked by the class score; only kept when it differs from the mask score.
    pub boxes: Option<Vec<Value>>,
    pub summary: CocoSummary,
    categories: CategoryMap,
}

impl CocoCollector {
    /// Records for `cfg`'s model (YOLACT++ keeps box records of their own, ranked by the class
    /// score); an error when the model's classes are not the ground truth's.
    pub fn new(matcher: CocoMatcher, cfg: &YolactConfig) -> Result<Self> {
        let matched_by = match matcher.mode() {
            CocoMatch::Stamp => "stamp",
            _ => "index",
        };
        let categories = CategoryMap::new(cfg, &matcher.categories)?;
        Ok(CocoCollector {
            matcher,
            masks: Vec::new(),
            boxes: cfg.use_maskiou.then(Vec::new),
            summary: CocoSummary {
                matched_by: matched_by.into(),
                ..CocoSummary::default()
            },
            categories,
        })
    }

    /// Adds one segmented frame; returns the image id it matched.
    pub fn add(
        &mut self,
        frame_index: u64,
        stamp_ns: i64,
        dets: &Detections,
    ) -> Result<Option<i64>> {
        let Some(id) = self.matcher.image_id(frame_index, stamp_ns) else {
            self.summary.unmatched += 1;
            return Ok(None);
        };
        self.summary.matched += 1;
        self.masks.extend(result_records(
            id,
            dets,
            RecordScore::Mask,
            &self.categories,
        )?);
        if let Some(b) = self.boxes.as_mut() {
            b.extend(result_records(
                id,
                dets,
                RecordScore::Box,
                &self.categories,
            )?);
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_from_field_or_file_name() {
        assert_eq!(
            image_stamp(&json!({"file_name": "a/1700000000000000007.png"})),
            Some(1_700_000_000_000_000_007)
        );
        assert_eq!(
            image_stamp(&json!({"file_name": "17.jpg", "stamp_ns": 5})),
            Some(5)
        );
        assert_eq!(image_stamp(&json!({"file_name": "img_17.jpg"})), None);
        assert_eq!(image_stamp(&json!({"file_name": ".png"})), None);
        assert_eq!(
            image_stamp(&json!({"file_name": "x.png", "stamp_ns": "5"})),
            None
        );
    }

    #[test]
    fn auto_picks_stamps_only_when_every_image_has_one() {
        let stamped = json!({"images": [
            {"id": 9, "file_name": "200.png"}, {"id": 4, "file_name": "x.png", "stamp_ns": 100}]});
        let m = CocoMatcher::new(&stamped, CocoMatch::Auto).unwrap();
        assert_eq!(m.mode(), CocoMatch::Stamp);
        assert_eq!(
            (m.image_id(0, 100), m.image_id(0, 200), m.image_id(1, 300)),
            (Some(4), Some(9), None)
        );

        let mixed =
            json!({"images": [{"id": 9, "file_name": "200.png"}, {"id": 4, "file_name": "x.png"}]});
        let m = CocoMatcher::new(&mixed, CocoMatch::Auto).unwrap();
        assert_eq!(m.mode(), CocoMatch::Index);
        // sorted by id, not by list order
        assert_eq!(
            (m.image_id(0, 200), m.image_id(1, 0), m.image_id(2, 0)),
            (Some(4), Some(9), None)
        );
        assert!(CocoMatcher::new(&mixed, CocoMatch::Stamp).is_err());

        let dup = json!({"images": [{"id": 1, "file_name": "5.png"}, {"id": 2, "stamp_ns": 5}]});
        assert!(CocoMatcher::new(&dup, CocoMatch::Stamp).is_err());
        assert!(CocoMatcher::new(&json!({}), CocoMatch::Index).is_err());
        assert!("bogus".parse::<CocoMatch>().is_err());
    }
}
