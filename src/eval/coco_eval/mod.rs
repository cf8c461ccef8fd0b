//! COCO detection evaluation (box and mask AP/AR), a re-implementation of pycocotools'
//! `COCOeval` with default parameters: IoU thresholds .50:.05:.95, 101 recall thresholds,
//! maxDets 1/10/100 and the all/small/medium/large area ranges. Results agree with pycocotools
//! to floating-point summation order (see `tests/it/coco_eval.rs`).
//!
//! Departures, all where pycocotools would crash: results on unknown images are an error
//! instead of an assertion, an empty results list evaluates (every detection missing) instead
//! of raising, and a ground-truth annotation without `area` uses its mask (or box) area.
//! As in pycocotools, results for categories absent from the ground truth are ignored, and
//! the first result decides how all are read (with `bbox`: area = w*h; masks only: area and box
//! from the mask).

pub mod accumulate;
pub mod dataset;
pub mod mask;
pub mod matching;

use std::collections::{BTreeSet, HashMap};

use rayon::prelude::*;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;

pub use dataset::{
    load_results, results_from_json_str, results_from_value, results_have_masks, CocoAnnotation,
    CocoCategory, CocoGt, CocoImage, CocoResult, RleCounts, Segmentation,
};
use matching::{DtObj, EvalImg, Geometry, GtObj};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IouType {
    Bbox,
    Segm,
}

/// The twelve numbers `COCOeval.summarize` prints, -1 where there was nothing to average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoStats {
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub ap_small: f64,
    pub ap_medium: f64,
    pub ap_large: f64,
    pub ar1: f64,
    pub ar10: f64,
    pub ar100: f64,
    pub ar_small: f64,
    pub ar_medium: f64,
    pub ar_large: f64,
}

pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

impl CocoStats {
    /// In `STAT_NAMES` order (the order of pycocotools' `stats` array).
    pub fn as_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// From `STAT_NAMES` order.
    pub fn from_array(v: [f64; 12]) -> Self {
        let [ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large] =
            v;
        CocoStats {
            ap,
            ap50,
            ap75,
            ap_small,
            ap_medium,
            ap_large,
            ar1,
            ar10,
            ar100,
            ar_small,
            ar_medium,
            ar_large,
        }
    }

    /// `{"AP": .., "AP50": .., ...}`, named by [`STAT_NAMES`].
    pub fn to_json(&self) -> Result<Value> {
        stats_value(self)
    }
}

/// The twelve numbers as a map keyed by [`STAT_NAMES`] (the names' one source).
impl Serialize for CocoStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(STAT_NAMES.len()))?;
        for (name, v) in STAT_NAMES.iter().zip(self.as_array()) {
            map.serialize_entry(name, &v)?;
        }
        map.end()
    }
}

/// The map [`Serialize`] writes (e.g. a line of a training run's `val.jsonl`); every name needed.
impl<'de> serde::Deserialize<'de> for CocoStats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = std::collections::HashMap::<String, f64>::deserialize(d)?;
        let mut v = [0.0; 12];
        for (slot, name) in v.iter_mut().zip(STAT_NAMES) {
            *slot = *map
                .get(name)
                .ok_or_else(|| serde::de::Error::missing_field(name))?;
        }
        Ok(CocoStats::from_array(v))
    }
}

/// What `yolact coco-eval --json` prints.
#[derive(Serialize)]
struct StatsJson<'a> {
    bbox: &'a CocoStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    segm: Option<&'a CocoStats>,
}

/// `{"bbox": {...}, "segm": {...}}`, segm only when given. A `Value` (sorted keys), as it has
/// always been printed.
pub fn stats_json(bbox: &CocoStats, segm: Option<&CocoStats>) -> Result<Value> {
    stats_value(&StatsJson { bbox, segm })
}

fn stats_value<T: Serialize>(doc: &T) -> Result<Value> {
    serde_json::to_value(doc).map_err(|e| Error::Invalid(format!("COCO stats as JSON: {e}")))
}

const AREA_RANGES: [(f64, f64); 4] = [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];
const MAX_DETS: [usize; 3] = [1, 10, 100];

pub fn iou_thresholds() -> Vec<f64> {
    accumulate::linspace(0.5, 0.95, 10)
}

pub fn recall_thresholds() -> Vec<f64> {
    accumulate::linspace(0.0, 1.0, 101)
}

/// How `loadRes` reads a results set, decided by its first entry.
#[derive(Clone, Copy, PartialEq)]
enum ResultMode {
    /// Boxes present: area = w*h, a missing mask is the box polygon.
    Box,
    /// Masks only: area and box come from the mask.
    Mask,
}

fn result_mode(dt: &[CocoResult]) -> Result<ResultMode> {
    match dt.first() {
        None | Some(CocoResult { bbox: Some(_), .. }) => Ok(ResultMode::Box),
        Some(CocoResult {
            segmentation: Some(_),
            ..
        }) => Ok(ResultMode::Mask),
        Some(_) => Err(Error::Invalid(
            "results: the first result has neither bbox nor segmentation".into(),
        )),
    }
}

fn gt_obj(ann: &CocoAnnotation, img: &CocoImage, iou_type: IouType) -> Result<GtObj> {
    let what = || format!("ground truth annotation id {}", ann.id);
    let rle = |seg: &Segmentation| {
        dataset::segmentation_to_rle(seg, img.height, img.width)
            .map_err(|e| Error::Invalid(format!("{}: {e}", what())))
    };
    let need_mask = iou_type == IouType::Segm
        || ann.area.is_none()
        || (ann.bbox.is_none() && iou_type == IouType::Bbox);
    let mask = match (&ann.segmentation, need_mask) {
        (Some(seg), true) => Some(rle(seg)?),
        _ => None,
    };
    let area = match (ann.area, &mask, ann.bbox) {
        (Some(a), _, _) => a,
        (None, Some(m), _) => m.area() as f64,
        (None, None, Some(b)) => b[2] * b[3],
        (None, None, None) => {
            return Err(Error::Invalid(format!(
                "{}: no area, bbox or segmentation",
                what()
            )))
        }
    };
    let geom = match iou_type {
        IouType::Bbox => match (ann.bbox, &mask) {
            (Some(b), _) => Geometry::Box(b),
            (None, Some(m)) => Geometry::Box(m.to_bbox()),
            (None, None) => return Err(Error::Invalid(format!("{}: no bbox", what()))),
        },
        IouType::Segm => match mask {
            Some(m) => {
                let b = m.to_bbox();
                Geometry::Mask(m, b)
            }
            None => {
                return Err(Error::Invalid(format!(
                    "{}: no segmentation for a segm evaluation",
                    what()
                )))
            }
        },
    };
    Ok(GtObj {
        id: ann.id,
        area,
        crowd: ann.iscrowd,
        geom,
    })
}

fn dt_obj(
    r: &CocoResult,
    index: usize,
    img: &CocoImage,
    mode: ResultMode,
    iou_type: IouType,
) -> Result<DtObj> {
    let what = || format!("result #{index}");
    let to_rle = |seg: &Segmentation| {
        dataset::segmentation_to_rle(seg, img.height, img.width)
            .map_err(|e| Error::Invalid(format!("{}: {e}", what())))
    };
    let (area, bbox, mask) = match mode {
        ResultMode::Box => {
            let b = r.bbox.ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no bbox, but the first result has one (results must be uniform)",
                    what()
                ))
            })?;
            let mask = match (iou_type, &r.segmentation) {
                (IouType::Bbox, _) => None,
                (IouType::Segm, Some(seg)) => Some(to_rle(seg)?),
                (IouType::Segm, None) => Some(mask::EvalRle::from_bbox(&b, img.height, img.width)?),
            };
            (b[2] * b[3], b, mask)
        }
        ResultMode::Mask => {
            let seg = r.segmentation.as_ref().ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no segmentation, but the first result has only one",
                    what()
                ))
            })?;
            let m = to_rle(seg)?;
            let b = r.bbox.unwrap_or_else(|| m.to_bbox());
            (m.area() as f64, b, Some(m))
        }
    };
    let geom = match (iou_type, mask) {
        (IouType::Segm, Some(m)) => {
            let mb = m.to_bbox();
            Geometry::Mask(m, mb)
        }
        _ => Geometry::Box(bbox),
    };
    Ok(DtObj {
        // loadRes numbers results from 1 in file order.
        id: index as i64 + 1,
        area,
        score: r.score,
        geom,
    })
}

/// Runs evaluate + accumulate + summarize for one IoU type.
pub fn evaluate(gt: &CocoGt, dt: &[CocoResult], iou_type: IouType) -> Result<CocoStats> {
    // Later duplicates of an image id win, as in the reference's dict index.
    let mut images: HashMap<i64, &CocoImage> = HashMap::new();
    for img in &gt.images {
        images.insert(img.id, img);
    }
    let img_ids: Vec<i64> = images
        .keys()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let img_index: HashMap<i64, usize> =
        img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_ids: Vec<i64> = gt
        .categories
        .iter()
        .map(|c| c.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cat_index: HashMap<i64, usize> =
        cat_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();

    if let Some((i, r)) = dt
        .iter()
        .enumerate()
        .find(|(_, r)| !img_index.contains_key(&r.image_id))
    {
        return Err(Error::Invalid(format!(
            "result #{i} refers to image_id {} which is not in the ground truth",
            r.image_id
        )));
    }
    let mode = result_mode(dt)?;

    // Indices into gt.annotations / dt per image and category, in file order.
    let (n_i, n_k) = (img_ids.len(), cat_ids.len());
    let mut gt_groups: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); n_k]; n_i];
    let mut dt_groups: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); n_k]; n_i];
    for (j, a) in gt.annotations.iter().enumerate() {
        if let (Some(&i), Some(&k)) = (img_index.get(&a.image_id), cat_index.get(&a.category_id)) {
            gt_groups[i][k].push(j);
        }
    }
    for (j, r) in dt.iter().enumerate() {
        if let (Some(&i), Some(&k)) = (img_index.get(&r.image_id), cat_index.get(&r.category_id)) {
            dt_groups[i][k].push(j);
        }
    }

    let iou_thrs = iou_thresholds();
    let rec_thrs = recall_thresholds();
    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    // per_image[i][k][a]
    let per_image: Vec<Vec<Vec<Option<EvalImg>>>> = (0..n_i)
        .into_par_iter()
        .map(|i| -> Result<Vec<Vec<Option<EvalImg>>>> {
            let img = images[&img_ids[i]];
            (0..n_k)
                .map(|k| {
                    let gts = gt_groups[i][k]
                        .iter()
                        .map(|&j| gt_obj(&gt.annotations[j], img, iou_type))
                        .collect::<Result<Vec<_>>>()?;
                    let dts = dt_groups[i][k]
                        .iter()
                        .map(|&j| dt_obj(&dt[j], j, img, mode, iou_type))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(matching::evaluate_pair(
                        &gts,
                        &dts,
                        &AREA_RANGES,
                        &iou_thrs,
                        max_det,
                    ))
                })
                .collect()
        })
        .collect::<Result<_>>()?;

    let evals: Vec<Vec<Vec<Option<&EvalImg>>>> = (0..n_k)
        .map(|k| {
            (0..AREA_RANGES.len())
                .map(|a| per_image.iter().map(|img| img[k][a].as_ref()).collect())
                .collect()
        })
        .collect();
    let acc = accumulate::accumulate(
        &evals,
        iou_thrs.len(),
        &rec_thrs,
        &MAX_DETS,
        AREA_RANGES.len(),
    );
    Ok(summarize(&acc, &iou_thrs))
}

fn summarize(acc: &accumulate::Accumulated, iou_thrs: &[f64]) -> CocoStats {
    let sel = |iou_thr: Option<f64>, area: usize, max_det: usize| accumulate::Selector {
        iou_thr,
        area,
        max_det,
        iou_thrs,
    };
    let ap = |s| acc.mean_precision(&s);
    let ar = |s| acc.mean_recall(&s);
    CocoStats {
        ap: ap(sel(None, 0, 2)),
        ap50: ap(sel(Some(0.5), 0, 2)),
        ap75: ap(sel(Some(0.75), 0, 2)),
        ap_small: ap(sel(None, 1, 2)),
        ap_medium: ap(sel(None, 2, 2)),
        ap_large: ap(sel(None, 3, 2)),
        ar1: ar(sel(None, 0, 0)),
        ar10: ar(sel(None, 0, 1)),
        ar100: ar(sel(None, 0, 2)),
        ar_small: ar(sel(None, 1, 2)),
        ar_medium: ar(sel(None, 2, 2)),
        ar_large: ar(sel(None, 3, 2)),
    }
}

/// Evaluates a results file against a ground-truth file: box stats always, mask stats when the
/// results carry masks.
pub fn evaluate_files(
    gt_path: impl AsRef<std::path::Path>,
    results_path: impl AsRef<std::path::Path>,
) -> Result<(CocoStats, Option<CocoStats>)> {
    let gt = CocoGt::from_path(gt_path)?;
    let dt = load_results(results_path)?;
    let bbox = evaluate(&gt, &dt, IouType::Bbox)?;
    let segm = if results_have_masks(&dt) {
        Some(evaluate(&gt, &dt, IouType::Segm)?)
    } else {
        None
    };
    Ok((bbox, segm))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `yolact coco-eval --json` prints (written out by hand): the names of
    /// [`STAT_NAMES`] in sorted order, `segm` left out when absent.
    #[test]
    fn the_stats_document_keeps_its_bytes() {
        let s = CocoStats {
            ap: 0.5,
            ap50: 0.75,
            ap75: 0.25,
            ap_small: -1.0,
            ap_medium: 0.125,
            ap_large: 1.0,
            ar1: 0.0625,
            ar10: 0.375,
            ar100: 0.625,
            ar_small: -1.0,
            ar_medium: 0.875,
            ar_large: 0.1,
        };
        let body = r#"{"AP":0.5,"AP50":0.75,"AP75":0.25,"APl":1.0,"APm":0.125,"APs":-1.0,"AR1":0.0625,"AR10":0.375,"AR100":0.625,"ARl":0.1,"ARm":0.875,"ARs":-1.0}"#;
        assert_eq!(
            stats_json(&s, None).unwrap().to_string(),
            format!(r#"{{"bbox":{body}}}"#)
        );
        assert_eq!(
            stats_json(&s, Some(&s)).unwrap().to_string(),
            format!(r#"{{"bbox":{body},"segm":{body}}}"#)
        );
        // And read back from those bytes (a training run's val.jsonl after a resume).
        let back: CocoStats = serde_json::from_str(body).unwrap();
        assert_eq!(back, s);
        let missing = body.replace(r#""AR10":0.375,"#, "");
        let err = serde_json::from_str::<CocoStats>(&missing).unwrap_err();
        assert!(err.to_string().contains("AR10"), "{err}");
    }
}
