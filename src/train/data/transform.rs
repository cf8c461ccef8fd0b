//! The reference's transform steps on one image, and the deterministic train transform
//! (`SSDAugmentation` with its random steps off): ConvertFromInts, ToAbsoluteCoords,
//! Resize(resize_gt=True), Pad, ToPercentCoords, PrepareMasks (a no-op) and BackboneTransform.
//!
//! The working state mirrors the reference's (img, masks, boxes, labels): the image is kept in
//! cv2's BGR order so the HSV formulas of the augmentation read the channels the reference reads,
//! and boxes stay f64 (numpy's float64) until the end, where the reference's collate casts them.

use image::RgbImage;

use super::resize::{resize_image, resize_masks};
use super::sample::Truth;
use crate::config::Transform;
use crate::engine::input::{MEAN_RGB, STD_RGB};

/// `cfg.discard_box_width` / `discard_box_height` (4/550 in every config). The reference compares
/// it with box sizes in *pixels*, so it removes only boxes thinner than ~0.007 px; kept
/// as it is.
pub const DISCARD_BOX: f64 = 4.0 / 550.0;

/// The reference's MEANS in its BGR order (one source: [`MEAN_RGB`] reversed).
pub fn means_bgr() -> [f32; 3] {
    [MEAN_RGB[2], MEAN_RGB[1], MEAN_RGB[0]]
}

/// The image with its ground truth between transform steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// HWC f32 BGR, nominally 0-255 (nothing clamps it, as in the reference).
    pub image: Vec<f32>,
    pub h: usize,
    pub w: usize,
    /// (n, h, w) 0/1, in the order of `boxes`.
    pub masks: Vec<u8>,
    /// (x1, y1, x2, y2): absolute pixels after [`Work::from_rgb`], relative after
    /// [`Work::finish`].
    pub boxes: Vec<[f64; 4]>,
    /// Contiguous class or -1 for crowds (crowds last).
    pub labels: Vec<i64>,
    pub num_crowds: usize,
}

impl Work {
    /// ConvertFromInts and ToAbsoluteCoords: `rel_boxes` are the dataset's xyxy / (W, H).
    pub fn from_rgb(
        img: &RgbImage,
        masks: Vec<u8>,
        rel_boxes: &[[f64; 4]],
        labels: Vec<i64>,
        num_crowds: usize,
    ) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut image = Vec::with_capacity(h * w * 3);
        for p in img.pixels() {
            image.extend_from_slice(&[f32::from(p[2]), f32::from(p[1]), f32::from(p[0])]);
        }
        let (wf, hf) = (w as f64, h as f64);
        let boxes = rel_boxes
            .iter()
            .map(|b| [b[0] * wf, b[1] * hf, b[2] * wf, b[3] * hf])
            .collect();
        Self {
            image,
            h,
            w,
            masks,
            boxes,
            labels,
            num_crowds,
        }
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Resize(resize_gt=True) to size², aspect ratio not kept, then the discard rule.
    pub fn resize(&mut self, size: usize) {
        let n = self.len();
        self.image = resize_image(&self.image, self.h, self.w, 3, size, size);
        self.masks = resize_masks(&self.masks, n, self.h, self.w, size, size);
        let (sx, sy) = (size as f64 / self.w as f64, size as f64 / self.h as f64);
        for b in &mut self.boxes {
            b[0] *= sx;
            b[2] *= sx;
            b[1] *= sy;
            b[3] *= sy;
        }
        self.h = size;
        self.w = size;
        let keep: Vec<bool> = self
            .boxes
            .iter()
            .map(|b| b[2] - b[0] > DISCARD_BOX && b[3] - b[1] > DISCARD_BOX)
            .collect();
        self.retain(&keep);
        self.num_crowds = self.labels.iter().filter(|&&l| l < 0).count();
    }

    /// Keeps the objects whose flag is set, in order (masks, boxes, labels together).
    pub fn retain(&mut self, keep: &[bool]) {
        let plane = self.h * self.w;
        let mut masks = Vec::with_capacity(self.masks.len());
        let (mut boxes, mut labels) = (Vec::new(), Vec::new());
        for (i, &k) in keep.iter().enumerate() {
            if k {
                masks.extend_from_slice(&self.masks[i * plane..(i + 1) * plane]);
                boxes.push(self.boxes[i]);
                labels.push(self.labels[i]);
            }
        }
        self.masks = masks;
        self.boxes = boxes;
        self.labels = labels;
    }

    /// Pad(size, size, MEANS): the image in the top-left of a mean-filled size² canvas, masks
    /// zero-padded. After Resize the image is already size², so this changes nothing in training;
    /// it is here so the step order stays the reference's.
    pub fn pad(&mut self, size: usize) {
        if self.h >= size && self.w >= size {
            return;
        }
        let (nh, nw) = (size.max(self.h), size.max(self.w));
        let mean = means_bgr();
        let mut image: Vec<f32> = std::iter::repeat_n(mean, nh * nw).flatten().collect();
        for r in 0..self.h {
            image[r * nw * 3..(r * nw + self.w) * 3]
                .copy_from_slice(&self.image[r * self.w * 3..(r + 1) * self.w * 3]);
        }
        let n = self.len();
        let mut masks = vec![0u8; n * nh * nw];
        for i in 0..n {
            for r in 0..self.h {
                let src = &self.masks[(i * self.h + r) * self.w..(i * self.h + r + 1) * self.w];
                masks[(i * nh + r) * nw..(i * nh + r) * nw + self.w].copy_from_slice(src);
            }
        }
        self.image = image;
        self.masks = masks;
        self.h = nh;
        self.w = nw;
    }

    /// ToPercentCoords, then BackboneTransform: returns the (3, h, w) CHW RGB image and the truth
    /// with f32 boxes (the reference's collate cast).
    pub fn finish(self, transform: Transform) -> (Vec<f32>, Truth) {
        let (wf, hf) = (self.w as f64, self.h as f64);
        let boxes = self
            .boxes
            .iter()
            .map(|b| {
                [
                    (b[0] / wf) as f32,
                    (b[1] / hf) as f32,
                    (b[2] / wf) as f32,
                    (b[3] / hf) as f32,
                ]
            })
            .collect();
        let plane = self.h * self.w;
        let mut chw = vec![0f32; 3 * plane];
        // Output channel c (RGB) reads BGR channel 2 - c; the constants are RGB-ordered.
        for (p, px) in self.image.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let v = px[2 - c];
                chw[c * plane + p] = match transform {
                    Transform::ResNet => (v - MEAN_RGB[c]) / STD_RGB[c],
                    Transform::DarkNet => v / 255.0,
                };
            }
        }
        let truth = Truth {
            boxes,
            labels: self.labels,
            masks: self.masks,
            num_crowds: self.num_crowds,
        };
        (chw, truth)
    }
}

/// The deterministic train transform after ConvertFromInts / ToAbsoluteCoords (which
/// [`Work::from_rgb`] did): Resize, Pad, ToPercentCoords, BackboneTransform.
pub fn finish_train(mut work: Work, size: usize, transform: Transform) -> (Vec<f32>, Truth) {
    work.resize(size);
    work.pad(size);
    work.finish(transform)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(w: u32, h: u32, boxes: &[[f64; 4]]) -> Work {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let n = boxes.len();
        Work::from_rgb(
            &img,
            vec![1; n * (w * h) as usize],
            boxes,
            (0..n as i64).collect(),
            0,
        )
    }

    #[test]
    fn bgr_in_rgb_out_with_the_resnet_constants() {
        let w = work(4, 3, &[[0.0, 0.0, 1.0, 1.0]]);
        assert_eq!(&w.image[..3], &[7.0, 0.0, 0.0]);
        let (img, truth) = finish_train(w, 4, Transform::ResNet);
        // 4x3 -> 4x4 resizes rows only; pixel (0,0) is a row blend of y=0 and y=0 (clamped).
        let plane = 16;
        assert!((img[0] - (0.0 - 123.68) / 58.40).abs() < 1e-6);
        assert!((img[2 * plane] - (7.0 - 103.94) / 57.38).abs() < 1e-6);
        assert_eq!(truth.boxes, vec![[0.0, 0.0, 1.0, 1.0]]);
    }

    #[test]
    fn resize_scales_pixel_boxes_and_discards_only_sub_pixel_ones() {
        let mut w = work(10, 20, &[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2 + 1e-4, 0.9]]);
        w.labels[1] = -1;
        w.num_crowds = 1;
        w.resize(55);
        // 1e-4 relative of 10 px is 1e-3 px, scaled x5.5 = 5.5e-3 px < 4/550: discarded.
        assert_eq!(w.len(), 1);
        assert_eq!(w.num_crowds, 0);
        assert!((w.boxes[0][0] - 0.1 * 10.0 * 5.5).abs() < 1e-12);
        assert!((w.boxes[0][3] - 0.5 * 20.0 * 2.75).abs() < 1e-12);
        assert_eq!(w.masks.len(), 55 * 55);
    }

    #[test]
    fn pad_puts_the_image_top_left_on_the_mean() {
        let mut w = work(2, 1, &[[0.0, 0.0, 1.0, 1.0]]);
        w.pad(3);
        assert_eq!((w.h, w.w), (3, 3));
        assert_eq!(&w.image[..3], &[7.0, 0.0, 0.0]);
        assert_eq!(&w.image[6..9], &means_bgr());
        assert_eq!(w.masks, vec![1, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
