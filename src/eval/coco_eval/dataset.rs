//! Loading COCO ground truth and detection results, and turning their geometry into what the
//! evaluator compares (boxes or run-length masks), with pycocotools' `COCO` / `loadRes` rules.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::mask::EvalRle;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    pub id: i64,
    pub width: u32,
    pub height: u32,
    /// The image file relative to the image folder; evaluation ignores it, training reads it.
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RleCounts {
    /// The ASCII form pycocotools writes (`counts` as a string).
    Compressed(String),
    /// Plain run lengths (`counts` as a list), as COCO stores crowd regions.
    Uncompressed(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    /// One or more polygons [x0, y0, x1, y1, ...], merged into one mask.
    Polygons(Vec<Vec<f64>>),
    /// A run-length mask with its own size (height, width).
    Rle {
        height: u32,
        width: u32,
        counts: RleCounts,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// [x, y, w, h].
    pub bbox: Option<[f64; 4]>,
    /// The stored `area`, which decides the small/medium/large range.
    pub area: Option<f64>,
    pub iscrowd: bool,
    pub segmentation: Option<Segmentation>,
}

/// A ground-truth file (`instances_*.json` layout).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CocoGt {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

/// One detection in COCO result format.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoResult {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: Option<[f64; 4]>,
    pub score: f64,
    pub segmentation: Option<Segmentation>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
    width: u32,
    height: u32,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Deserialize)]
struct RawCategory {
    id: i64,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCounts {
    Compressed(String),
    Uncompressed(Vec<u32>),
}

#[derive(Deserialize)]
struct RawRle {
    size: [u32; 2],
    counts: RawCounts,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSegmentation {
    Polygons(Vec<Vec<f64>>),
    Rle(RawRle),
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: Option<Value>,
    #[serde(default)]
    segmentation: Option<RawSegmentation>,
}

#[derive(Deserialize)]
struct RawResult {
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    score: f64,
    #[serde(default)]
    segmentation: Option<RawSegmentation>,
}

fn convert_segmentation(s: RawSegmentation) -> Segmentation {
    match s {
        RawSegmentation::Polygons(p) => Segmentation::Polygons(p),
        RawSegmentation::Rle(r) => Segmentation::Rle {
            height: r.size[0],
            width: r.size[1],
            counts: match r.counts {
                RawCounts::Compressed(s) => RleCounts::Compressed(s),
                RawCounts::Uncompressed(c) => RleCounts::Uncompressed(c),
            },
        },
    }
}

/// An empty `bbox` counts as absent, as in `loadRes`.
fn convert_bbox(b: Option<Vec<f64>>, what: &str) -> Result<Option<[f64; 4]>> {
    match b {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let arr: [f64; 4] = v.as_slice().try_into().map_err(|_| {
                Error::Invalid(format!("{what}: bbox must have 4 numbers, got {}", v.len()))
            })?;
            if arr.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!("{what}: bbox is not finite")));
            }
            Ok(Some(arr))
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        _ => false,
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: malformed JSON: {e}", path.display())))
}

fn array_field(root: &Value, key: &str, required: bool) -> Result<Vec<Value>> {
    match root.get(key) {
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(Error::Invalid(format!(
            "ground truth: `{key}` must be an array"
        ))),
        None if required => Err(Error::Invalid(format!("ground truth: no `{key}` array"))),
        None => Ok(Vec::new()),
    }
}

impl CocoGt {
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_value(&read_json(path)?)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn from_json_str(s: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| Error::Invalid(format!("ground truth: malformed JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(root: &Value) -> Result<Self> {
        if !root.is_object() {
            return Err(Error::Invalid("ground truth must be a JSON object".into()));
        }
        let mut images = Vec::new();
        for (i, v) in array_field(root, "images", true)?.into_iter().enumerate() {
            let r: RawImage = serde_json::from_value(v)
                .map_err(|e| Error::Invalid(format!("ground truth image #{i}: {e}")))?;
            images.push(CocoImage {
                id: r.id,
                width: r.width,
                height: r.height,
                file_name: r.file_name,
            });
        }
        let mut categories = Vec::new();
        for (i, v) in array_field(root, "categories", true)?
            .into_iter()
            .enumerate()
        {
            let r: RawCategory = serde_json::from_value(v)
                .map_err(|e| Error::Invalid(format!("ground truth category #{i}: {e}")))?;
            categories.push(CocoCategory {
                id: r.id,
                name: r.name,
            });
        }
        let mut annotations = Vec::new();
        for (i, v) in array_field(root, "annotations", false)?
            .into_iter()
            .enumerate()
        {
            let what = format!("ground truth annotation #{i}");
            let r: RawAnnotation =
                serde_json::from_value(v).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
            if r.area.is_some_and(|a| !a.is_finite()) {
                return Err(Error::Invalid(format!("{what}: area is not finite")));
            }
            annotations.push(CocoAnnotation {
                id: r.id,
                image_id: r.image_id,
                category_id: r.category_id,
                bbox: convert_bbox(r.bbox, &what)?,
                area: r.area,
                iscrowd: r.iscrowd.as_ref().is_some_and(truthy),
                segmentation: r.segmentation.map(convert_segmentation),
            });
        }
        Ok(Self {
            images,
            annotations,
            categories,
        })
    }
}

/// Reads a COCO results file: a JSON array of detections.
pub fn load_results(path: impl AsRef<Path>) -> Result<Vec<CocoResult>> {
    let path = path.as_ref();
    results_from_value(&read_json(path)?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

pub fn results_from_json_str(s: &str) -> Result<Vec<CocoResult>> {
    let v: Value = serde_json::from_str(s)
        .map_err(|e| Error::Invalid(format!("results: malformed JSON: {e}")))?;
    results_from_value(&v)
}

pub fn results_from_value(root: &Value) -> Result<Vec<CocoResult>> {
    let Value::Array(items) = root else {
        return Err(Error::Invalid(
            "results must be a JSON array of objects".into(),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let what = format!("result #{i}");
        let r: RawResult = serde_json::from_value(v.clone())
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        if !r.score.is_finite() {
            return Err(Error::Invalid(format!("{what}: score is not finite")));
        }
        out.push(CocoResult {
            image_id: r.image_id,
            category_id: r.category_id,
            bbox: convert_bbox(r.bbox, &what)?,
            score: r.score,
            segmentation: r.segmentation.map(convert_segmentation),
        });
    }
    Ok(out)
}

/// Whether a results set carries masks, i.e. whether a segm evaluation means anything.
pub fn results_have_masks(dt: &[CocoResult]) -> bool {
    dt.iter().any(|r| r.segmentation.is_some())
}

/// `annToRLE`: polygons are rasterised at the image size and merged; RLEs keep their own size.
pub fn segmentation_to_rle(seg: &Segmentation, h: u32, w: u32) -> Result<EvalRle> {
    match seg {
        Segmentation::Polygons(polys) => {
            // frPyObjects decides on the first part: exactly 4 numbers means boxes, not polygons.
            let parts: Vec<EvalRle> = match polys.first() {
                None => return EvalRle::from_counts(h, w, vec![super::mask::pixel_count(h, w)?]),
                Some(first) if first.len() == 4 => polys
                    .iter()
                    .map(|p| {
                        let bb: [f64; 4] = p
                            .as_slice()
                            .try_into()
                            .map_err(|_| Error::Invalid("mixed box/polygon segmentation".into()))?;
                        EvalRle::from_bbox(&bb, h, w)
                    })
                    .collect::<Result<_>>()?,
                Some(_) => polys
                    .iter()
                    .map(|p| EvalRle::from_polygon(p, h, w))
                    .collect::<Result<_>>()?,
            };
            EvalRle::merge(&parts)
        }
        Segmentation::Rle {
            height,
            width,
            counts,
        } => match counts {
            RleCounts::Compressed(s) => EvalRle::from_compressed(*height, *width, s),
            RleCounts::Uncompressed(c) => EvalRle::from_counts(*height, *width, c.clone()),
        },
    }
}
