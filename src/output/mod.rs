//! What a frame produces: detections in input-image pixels (`detection.rs`), their JSON forms
//! (`json.rs`), COCO RLE masks (`rle.rs`), the COCO label table (`labels.rs`) and the overlay
//! image (`overlay.rs`).

pub mod detection;
pub mod json;
pub mod labels;
pub mod overlay;
pub mod rle;
