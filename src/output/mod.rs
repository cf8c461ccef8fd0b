//! What a frame produces: detections in input-image pixels, COCO RLE masks, the COCO label table
//! and the overlay image.

pub mod detection;
pub mod labels;
pub mod overlay;
pub mod rle;
