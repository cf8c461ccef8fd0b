//! Detections as COCO result records, as the reference's `eval.py --output_coco_json` writes them
//! (docs/model.md §8.5a): integer (truncated) boxes as [x, y, w, h], detections with an empty
//! integer box dropped, category ids through the COCO label map, masks as compressed RLE.
//! A model trained on its own classes ([`CategoryMap::new`]) takes the category ids of the
//! ground truth's categories of the same names.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::YolactConfig;
use crate::error::{Error, Result};
use crate::output::detection::Detections;
use crate::output::json::{to_value, RleJson};
use crate::output::labels::CATEGORY_IDS;

/// Which score a record carries. For YOLACT++ the reference ranks boxes by the class score and
/// masks by class score x mask IoU; for YOLACT both are the class score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordScore {
    Box,
    Mask,
}

/// Model class id -> the category id its records carry (`None`: the ground truth has no such
/// class, its detections are not exported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryMap(Vec<Option<u32>>);

impl CategoryMap {
    /// COCO's label map (the released models' 80 classes).
    pub fn coco() -> Self {
        CategoryMap(CATEGORY_IDS.iter().map(|&c| Some(c)).collect())
    }

    /// The map for `cfg` against a ground truth whose `categories` list is `gt`: a model with
    /// its own class names finds each name's category id there; a COCO model uses COCO's map.
    /// An error when none of the model's classes is among the ground truth's.
    pub fn new(cfg: &YolactConfig, gt: &Value) -> Result<Self> {
        let Some(names) = &cfg.class_names else {
            return Ok(Self::coco());
        };
        let cats = gt
            .get("categories")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Invalid("COCO annotations have no `categories` list".into()))?;
        let by_name: HashMap<&str, u32> = cats
            .iter()
            .filter_map(|c| {
                let id = u32::try_from(c.get("id")?.as_u64()?).ok()?;
                Some((c.get("name")?.as_str()?, id))
            })
            .collect();
        let map: Vec<Option<u32>> = names
            .iter()
            .map(|n| by_name.get(n.as_str()).copied())
            .collect();
        if map.iter().all(Option::is_none) {
            let mut have: Vec<&str> = by_name.keys().copied().collect();
            have.sort_unstable();
            return Err(Error::Invalid(format!(
                "none of the model's classes ({}) is a category of the ground truth ({})",
                names.join(", "),
                have.join(", ")
            )));
        }
        Ok(CategoryMap(map))
    }

    pub fn category(&self, class_id: usize) -> Option<u32> {
        self.0.get(class_id).copied().flatten()
    }
}

/// The records of one image, as JSON values ([`ResultRecord`]s through
/// [`crate::output::json::to_value`], so the bytes are those the export always wrote). Each
/// holds `bbox` and `segmentation`, so one file serves both evaluations where the two scores
/// agree.
pub fn result_records(
    image_id: i64,
    dets: &Detections,
    score: RecordScore,
    categories: &CategoryMap,
) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(dets.items.len());
    for d in &dets.items {
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.trunc());
        let (w, h) = (x2 - x1, y2 - y1);
        if w * h <= 0.0 {
            continue;
        }
        let Some(category_id) = categories.category(d.class_id) else {
            continue;
        };
        let score = match score {
            RecordScore::Box => d.class_score,
            RecordScore::Mask => d.score,
        };
        out.push(to_value(&ResultRecord {
            image_id,
            category_id,
            bbox: [x1, y1, w, h],
            score,
            segmentation: RleJson::new(&d.mask),
        })?);
    }
    Ok(out)
}

/// One COCO result record, as the reference's `--output_coco_json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRecord {
    pub image_id: i64,
    pub category_id: u32,
    /// [x, y, w, h], integer-valued.
    pub bbox: [f32; 4],
    pub score: f32,
    pub segmentation: RleJson,
}

/// `file_name -> id` of a COCO annotation file's images (the name without folders).
pub fn image_ids_by_file_name(gt: &Value) -> Result<HashMap<String, i64>> {
    let images = gt
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid("COCO annotations have no `images` list".into()))?;
    let mut map = HashMap::with_capacity(images.len());
    for img in images {
        let (Some(id), Some(name)) = (
            img.get("id").and_then(Value::as_i64),
            img.get("file_name").and_then(Value::as_str),
        ) else {
            return Err(Error::Invalid(format!(
                "COCO image entry without `id` and `file_name`: {img}"
            )));
        };
        let base = name.rsplit('/').next().unwrap_or(name);
        map.insert(base.to_string(), id);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::detection::{Detection, Mask};
    use crate::output::rle;
    use serde_json::json;

    fn det(class_id: usize, bbox: [f32; 4], score: f32, class_score: f32) -> Detection {
        let mut data = vec![0u8; 20 * 10];
        data[3 * 20 + 4] = 1;
        Detection {
            class_id,
            score,
            class_score,
            mask_iou: Some(score / class_score),
            bbox,
            mask: Mask::full(10, 20, data),
        }
    }

    #[test]
    fn records_follow_the_reference_export() {
        let dets = Detections {
            width: 20,
            height: 10,
            config: "yolact_plus_resnet50".into(),
            class_names: None,
            items: vec![
                det(11, [1.7, 2.2, 9.9, 8.5], 0.4, 0.5),
                // integer box of zero width: dropped, as the reference does
                det(0, [3.2, 1.0, 3.9, 6.0], 0.3, 0.3),
            ],
        };
        let boxes = result_records(7, &dets, RecordScore::Box, &CategoryMap::coco()).unwrap();
        assert_eq!(boxes.len(), 1);
        assert_eq!(
            boxes[0]["category_id"], 13,
            "class 11 (stop sign) is COCO category 13"
        );
        assert_eq!(boxes[0]["bbox"], json!([1.0, 2.0, 8.0, 6.0]));
        assert_eq!(boxes[0]["score"].as_f64().unwrap() as f32, 0.5);
        let masks = result_records(7, &dets, RecordScore::Mask, &CategoryMap::coco()).unwrap();
        assert_eq!(masks[0]["score"].as_f64().unwrap() as f32, 0.4);
        assert_eq!(masks[0]["segmentation"]["size"], json!([10, 20]));
        // one foreground pixel at row 3, column 4: 4*10 + 3 background pixels first (column-major)
        assert_eq!(
            rle::from_string(masks[0]["segmentation"]["counts"].as_str().unwrap()).unwrap(),
            vec![43, 1, 156]
        );
    }

    /// The bytes of results.json (written out by hand): sorted keys, the f32 score widened to
    /// f64. The RLE string by pycocotools' `rleToString` by hand: counts [43, 1, 156] -> 43 is
    /// (11 | 0x20) + 48 = '[' then 1 + 48 = '1'; 1 -> '1'; 156 is (28 | 0x20) + 48 = 'l' then
    /// 4 + 48 = '4'.
    #[test]
    fn a_record_keeps_its_bytes() {
        let dets = Detections {
            width: 20,
            height: 10,
            config: "yolact_plus_resnet50".into(),
            class_names: None,
            items: vec![det(11, [1.7, 2.2, 9.9, 8.5], 0.4, 0.5)],
        };
        let r = result_records(7, &dets, RecordScore::Mask, &CategoryMap::coco()).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"[{"bbox":[1.0,2.0,8.0,6.0],"category_id":13,"image_id":7,"score":0.4000000059604645,"segmentation":{"counts":"[11l4","size":[10,20]}}]"#
        );
    }

    #[test]
    fn own_classes_take_the_ground_truth_ids_of_their_names() {
        let cfg = YolactConfig::by_name("yolact_plus_mini")
            .unwrap()
            .with_classes("mine", vec!["cup".into(), "drone".into(), "book".into()]);
        let gt = json!({"categories": [{"id": 84, "name": "book"}, {"id": 47, "name": "cup"}]});
        let map = CategoryMap::new(&cfg, &gt).unwrap();
        assert_eq!(
            (
                map.category(0),
                map.category(1),
                map.category(2),
                map.category(3)
            ),
            (Some(47), None, Some(84), None)
        );
        let dets = Detections {
            width: 20,
            height: 10,
            config: "mine".into(),
            class_names: None,
            items: vec![
                det(1, [1.0, 1.0, 9.0, 8.0], 0.4, 0.5),
                det(2, [1.0, 1.0, 9.0, 8.0], 0.4, 0.5),
            ],
        };
        let r = result_records(1, &dets, RecordScore::Mask, &map).unwrap();
        assert_eq!(r.len(), 1, "the drone is not in the ground truth");
        assert_eq!(r[0]["category_id"], 84);
        // A COCO model keeps COCO's map whatever the file says.
        let coco = YolactConfig::by_name("yolact_base").unwrap();
        assert_eq!(CategoryMap::new(&coco, &gt).unwrap(), CategoryMap::coco());
        let other = json!({"categories": [{"id": 1, "name": "person"}]});
        let e = CategoryMap::new(&cfg, &other).unwrap_err().to_string();
        assert!(
            e.contains("cup, drone, book") && e.contains("person"),
            "{e}"
        );
    }

    #[test]
    fn file_names_map_to_ids() {
        let gt = json!({"images": [{"id": 3, "file_name": "val/a.jpg"}, {"id": 4, "file_name": "b.png"}]});
        let m = image_ids_by_file_name(&gt).unwrap();
        assert_eq!((m["a.jpg"], m["b.png"]), (3, 4));
        assert!(image_ids_by_file_name(&json!({"images": [{"id": 1}]})).is_err());
        assert!(image_ids_by_file_name(&json!({})).is_err());
    }
}
