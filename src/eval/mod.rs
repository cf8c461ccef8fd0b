//! Offline evaluation: COCOeval in Rust and COCO result export.

pub mod coco_eval;
pub mod export;
pub mod run;
