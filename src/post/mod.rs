//! Post-processing of the heads' outputs: box decoding, Fast NMS (class-wise, cross-class) and
//! traditional NMS, mask assembly, crop and mask-IoU rescoring.

pub mod decode;
pub mod fast_nms;
pub mod masks;
pub mod nms;
pub mod rank;
pub mod types;
