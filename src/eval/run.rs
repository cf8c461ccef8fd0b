//! Running a model over an annotated image folder and scoring it: what `yolact eval` prints and
//! what training's validation (`yolact train --val`) logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::coco_eval::{evaluate, results_from_value, CocoGt, CocoStats, IouType};
use super::export::{image_ids_by_file_name, result_records, CategoryMap, RecordScore};
use crate::engine::preprocess::load_image;
use crate::engine::{Engine, InferOptions};
use crate::error::{Error, Result};

/// A COCO ground truth and the files of its images found in a folder (sorted by path).
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub gt: CocoGt,
    /// The annotation file as read (its categories give a model's own classes their ids).
    pub gt_json: Value,
    pub files: Vec<(PathBuf, i64)>,
}

impl EvalSet {
    /// Reads `ann` and pairs the files of `images` with its images by file name; at most
    /// `max_images` of them (in path order), and then the ground truth is that of those images
    /// only. An error when no file matches.
    pub fn open(ann: &Path, images: &Path, max_images: Option<usize>) -> Result<Self> {
        let text = std::fs::read_to_string(ann).map_err(|e| Error::io(ann, e))?;
        let mut gt_json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", ann.display())))?;
        let ids: HashMap<String, i64> = image_ids_by_file_name(&gt_json)
            .map_err(|e| Error::Invalid(format!("{}: {e}", ann.display())))?;
        let mut files: Vec<(PathBuf, i64)> = std::fs::read_dir(images)
            .map_err(|e| Error::io(images, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let id = *ids.get(p.file_name()?.to_str()?)?;
                Some((p, id))
            })
            .collect();
        files.sort();
        if let Some(n) = max_images {
            files.truncate(n);
        }
        if files.is_empty() {
            return Err(Error::Invalid(format!(
                "no file in {} has a file name listed in {}",
                images.display(),
                ann.display()
            )));
        }
        if max_images.is_some() {
            // The images left out are not scored (COCOeval's params.imgIds): their objects would
            // count as misses otherwise.
            let kept: std::collections::HashSet<i64> = files.iter().map(|(_, id)| *id).collect();
            for (list, key) in [("images", "id"), ("annotations", "image_id")] {
                if let Some(v) = gt_json.get_mut(list).and_then(Value::as_array_mut) {
                    v.retain(|x| {
                        x.get(key)
                            .and_then(Value::as_i64)
                            .is_some_and(|i| kept.contains(&i))
                    });
                }
            }
        }
        let gt = CocoGt::from_value(&gt_json)
            .map_err(|e| Error::Invalid(format!("{}: {e}", ann.display())))?;
        Ok(EvalSet { gt, gt_json, files })
    }
}

/// What a model scored on an [`EvalSet`].
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    /// Result records ranked by the mask score (YOLACT++: class score x mask IoU).
    pub mask_records: Vec<Value>,
    /// YOLACT++ only: the same detections ranked by the class score, which box AP uses.
    pub box_records: Option<Vec<Value>>,
    pub bbox: CocoStats,
    pub segm: CocoStats,
    /// Images that could not be read or segmented, with the reason; not in the figures.
    pub failed: Vec<(PathBuf, String)>,
}

/// How a COCO evaluation runs the model, `yolact eval`'s defaults and training's validation: no
/// score threshold (as the reference's eval.py), 100 detections per image (COCO's maxDets).
pub fn coco_options() -> InferOptions {
    InferOptions {
        score_threshold: 0.0,
        top_k: 100,
        ..InferOptions::default()
    }
}

/// Segments every image of `set` with `engine` and evaluates box and mask AP as the reference
/// does (YOLACT++ ranks boxes by the class score and masks by the rescored one).
/// `progress(done, total)` is called after each image.
pub fn evaluate_engine(
    engine: &Engine,
    set: &EvalSet,
    opts: &InferOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalOutcome> {
    let categories = CategoryMap::new(engine.config(), &set.gt_json)?;
    let rescored = engine.config().use_maskiou;
    let (mut masks, mut boxes, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (path, id)) in set.files.iter().enumerate() {
        match load_image(path).and_then(|img| engine.infer(&img, opts)) {
            Ok(dets) => {
                masks.extend(result_records(*id, &dets, RecordScore::Mask, &categories)?);
                if rescored {
                    boxes.extend(result_records(*id, &dets, RecordScore::Box, &categories)?);
                }
            }
            Err(e) => failed.push((path.clone(), e.to_string())),
        }
        progress(i + 1, set.files.len());
    }
    let mask_results = results_from_value(&Value::Array(masks.clone()))?;
    let box_results = if rescored {
        results_from_value(&Value::Array(boxes.clone()))?
    } else {
        mask_results.clone()
    };
    Ok(EvalOutcome {
        bbox: evaluate(&set.gt, &box_results, IouType::Bbox)?,
        segm: evaluate(&set.gt, &mask_results, IouType::Segm)?,
        mask_records: masks,
        box_records: rescored.then_some(boxes),
        failed,
    })
}
