//! What one processed frame turns into: `InstanceArray`, `Detection2DArray`, the `mono16`
//! instance-label image and the `rgb8` overlay, each on its own publisher when switched on.

use image::RgbImage;

use super::transport::RawPublisher;
use crate::bag::{BagError, Header, ImageMsg};
use crate::msgs::InstanceArray;
use crate::output::detection::Detections;

/// The `mono16` label image of a frame: pixel = 1 + index into `InstanceArray.instances`
/// (= `dets.items`), 0 = background. Where masks overlap the higher-scoring instance (lower
/// index) wins. Little-endian, unpadded rows.
pub fn label_image(header: Header, dets: &Detections) -> ImageMsg {
    let (w, h) = (dets.width, dets.height);
    let mut labels = vec![0u16; w * h];
    // Painted worst first so the best instance is painted last and wins.
    for (i, d) in dets.items.iter().enumerate().rev() {
        let value = u16::try_from(i + 1).unwrap_or(u16::MAX);
        if d.mask.width != w || d.mask.height != h {
            continue;
        }
        for y in 0..h {
            let Some((x0, bytes)) = d.mask.row(y) else {
                continue;
            };
            for (l, &m) in labels[y * w + x0..].iter_mut().zip(bytes) {
                if m != 0 {
                    *l = value;
                }
            }
        }
    }
    let mut data = Vec::with_capacity(labels.len() * 2);
    for l in labels {
        data.extend_from_slice(&l.to_le_bytes());
    }
    ImageMsg {
        header,
        height: u32::try_from(h).unwrap_or(u32::MAX),
        width: u32::try_from(w).unwrap_or(u32::MAX),
        encoding: "mono16".into(),
        is_bigendian: 0,
        step: u32::try_from(w * 2).unwrap_or(u32::MAX),
        data,
    }
}

/// One camera's publishers (`None` = switched off).
#[derive(Default)]
pub struct CameraOutputs {
    pub instances: Option<Box<dyn RawPublisher>>,
    pub detections: Option<Box<dyn RawPublisher>>,
    pub label_image: Option<Box<dyn RawPublisher>>,
    pub overlay: Option<Box<dyn RawPublisher>>,
    pub detections_3d: Option<Box<dyn RawPublisher>>,
    pub points: Option<Box<dyn RawPublisher>>,
}

/// Whether anyone listens; a transport that cannot tell counts as listening.
fn wanted(p: &dyn RawPublisher) -> bool {
    p.subscription_count() != Some(0)
}

impl CameraOutputs {
    /// Encodes and publishes one frame. The overlay is only drawn while it has subscribers.
    /// Returns whether the overlay went out; the first encode/publish error is returned after
    /// trying every output.
    pub fn publish(
        &self,
        inst: &InstanceArray,
        dets: &Detections,
        image: &RgbImage,
    ) -> Result<bool, String> {
        let mut overlay_sent = false;
        let mut first_err = None;
        let mut send = |p: &dyn RawPublisher, bytes: Result<Vec<u8>, BagError>, what: &str| {
            let r = bytes
                .map_err(|e| format!("{what}: encode: {e}"))
                .and_then(|b| p.publish(&b).map_err(|e| format!("{what}: {e}")));
            match r {
                Ok(()) => true,
                Err(e) => {
                    first_err.get_or_insert(e);
                    false
                }
            }
        };
        if let Some(p) = &self.instances {
            send(p.as_ref(), inst.to_cdr(), "instances");
        }
        if let Some(p) = &self.detections {
            send(p.as_ref(), inst.to_detection2d_cdr(), "detections");
        }
        if let Some(p) = &self.label_image {
            send(
                p.as_ref(),
                label_image(inst.header.clone(), dets).to_cdr(true),
                "label_image",
            );
        }
        if let Some(p) = &self.overlay {
            if wanted(p.as_ref()) {
                let drawn = crate::output::overlay::draw(image, dets);
                overlay_sent = send(
                    p.as_ref(),
                    ImageMsg::from_rgb(inst.header.clone(), &drawn).to_cdr(true),
                    "overlay",
                );
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(overlay_sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::detection::{Detection, Mask};

    fn det(w: usize, h: usize, on: &[(usize, usize)]) -> Detection {
        let mut data = vec![0u8; w * h];
        for &(x, y) in on {
            data[y * w + x] = 1;
        }
        Detection {
            class_id: 0,
            score: 0.5,
            class_score: 0.5,
            mask_iou: None,
            bbox: [0.0, 0.0, w as f32, h as f32],
            mask: Mask::full(h, w, data),
        }
    }

    #[test]
    fn labels_are_one_plus_index_and_the_better_instance_wins_overlaps() {
        let (w, h) = (4, 3);
        let dets = Detections {
            width: w,
            height: h,
            config: "x".into(),
            class_names: None,
            items: vec![det(w, h, &[(0, 0), (1, 1)]), det(w, h, &[(1, 1), (3, 2)])],
        };
        let img = label_image(Header::default(), &dets);
        assert_eq!((img.width, img.height, img.step), (4, 3, 8));
        assert_eq!(img.encoding, "mono16");
        let px = |x: usize, y: usize| {
            let o = (y * w + x) * 2;
            u16::from_le_bytes([img.data[o], img.data[o + 1]])
        };
        assert_eq!(px(0, 0), 1);
        assert_eq!(px(1, 1), 1);
        assert_eq!(px(3, 2), 2);
        assert_eq!(px(2, 0), 0);
        let nonzero = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) != 0)
            .count();
        assert_eq!(nonzero, 3);
    }
}
