//! The JSON forms of the detection types ([`crate::output::detection`]): serde types that the
//! `yolact infer --json` document and the COCO result records ([`crate::eval::export`]) are
//! serialised from.
//!
//! Every document goes through [`to_value`], a `serde_json::Value`, as the hand-built `json!`
//! documents these replaced did, so the bytes are unchanged: object keys come out sorted (the
//! `Value` map is ordered by key) and each f32 is widened exactly to f64 before printing (so it
//! prints as the f64 nearest the f32, e.g. 0.1f32 as 0.10000000149011612, which a reader parsing
//! f64 gets back exactly). Tests pin both.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::detection::{Detection, Detections, Mask};
use crate::output::rle;

/// A mask as COCO compressed RLE: `size` is [height, width], `counts` the LEB128-like string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RleJson {
    pub size: [usize; 2],
    pub counts: String,
}

impl RleJson {
    pub fn new(mask: &Mask) -> Self {
        RleJson {
            size: [mask.height, mask.width],
            counts: rle::to_string(&rle::encode(mask).counts),
        }
    }
}

/// One detection of the `yolact infer --json` contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionJson {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    pub class_score: f32,
    pub mask_iou: Option<f32>,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub mask: RleJson,
}

impl DetectionJson {
    /// `label` is the class's display name under the model's class names ([`Detections::label`]).
    pub fn new(d: &Detection, label: String) -> Self {
        DetectionJson {
            class_id: d.class_id,
            label,
            score: d.score,
            class_score: d.class_score,
            mask_iou: d.mask_iou,
            bbox: d.bbox,
            mask: RleJson::new(&d.mask),
        }
    }
}

/// The image a document describes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageJson {
    pub path: String,
    pub width: usize,
    pub height: usize,
}

/// The `yolact infer --json` document of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionsJson {
    pub image: ImageJson,
    pub config: String,
    pub detections: Vec<DetectionJson>,
}

impl DetectionsJson {
    /// The document of `dets`, read from the image at `path` (as given on the command line).
    pub fn new(path: &str, dets: &Detections) -> Self {
        DetectionsJson {
            image: ImageJson {
                path: path.to_string(),
                width: dets.width,
                height: dets.height,
            },
            config: dets.config.clone(),
            detections: dets
                .items
                .iter()
                .map(|d| DetectionJson::new(d, dets.label(d.class_id)))
                .collect(),
        }
    }
}

/// `doc` as a JSON value (see the module docs for why every document goes through one).
pub fn to_value<T: Serialize>(doc: &T) -> Result<serde_json::Value> {
    serde_json::to_value(doc).map_err(|e| Error::Invalid(format!("JSON document: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dets() -> Detections {
        // One foreground pixel at row 1, column 2 of a 3x4 image.
        let mut data = vec![0u8; 12];
        data[4 + 2] = 1;
        Detections {
            width: 4,
            height: 3,
            config: "yolact_resnet50".into(),
            class_names: None,
            items: vec![
                Detection {
                    class_id: 11,
                    score: 0.1,
                    class_score: 0.5,
                    mask_iou: None,
                    bbox: [1.5, 0.25, 3.0, 2.0],
                    mask: Mask::full(3, 4, data),
                },
                Detection {
                    class_id: 80,
                    score: f32::NAN,
                    class_score: 0.75,
                    mask_iou: Some(0.2),
                    bbox: [0.0, 0.0, 4.0, 3.0],
                    mask: Mask::full(3, 4, vec![0; 12]),
                },
            ],
        }
    }

    /// The exact bytes `yolact infer --json` has always written (written out by hand): sorted
    /// keys, f32 widened to f64, NaN as null, labels past COCO's 80 as `class_<id>`. The RLE
    /// strings by pycocotools' `rleToString` by hand: the pixel is column-major index 2*3 + 1 = 7,
    /// so counts [7, 1, 4] -> "714"; the empty mask is [12] -> chr(48 + 12) = "<".
    #[test]
    fn the_infer_document_keeps_its_bytes() {
        let v = to_value(&DetectionsJson::new("dir/a b.png", &dets())).unwrap();
        let want = concat!(
            r#"{"config":"yolact_resnet50","detections":["#,
            r#"{"box":[1.5,0.25,3.0,2.0],"class_id":11,"class_score":0.5,"label":"stop sign","#,
            r#""mask":{"counts":"714","size":[3,4]},"mask_iou":null,"score":0.10000000149011612},"#,
            r#"{"box":[0.0,0.0,4.0,3.0],"class_id":80,"class_score":0.75,"label":"class_80","#,
            r#""mask":{"counts":"<","size":[3,4]},"mask_iou":0.20000000298023224,"score":null}],"#,
            r#""image":{"height":3,"path":"dir/a b.png","width":4}}"#
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), want);
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        assert!(
            pretty.starts_with("{\n  \"config\": \"yolact_resnet50\",\n  \"detections\": [\n"),
            "{pretty}"
        );
    }
}
