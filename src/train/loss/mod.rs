//! The reference's `MultiBoxLoss`: prior matching, the box, confidence (OHEM), lincomb mask,
//! semantic segmentation and mask-IoU terms, normalised as the reference does.
