//! One colour frame's detections and the depth frame paired with it, to the 3D outputs: the
//! per-instance results, the `Detection3DArray` and the labelled points. The node
//! (`src/node/depth3d.rs`) and the replay (`src/replay/depth.rs`) both call [`locate_frame`], so
//! the two cannot drift apart.

use super::instance::{instance_3d, Depth3dOptions, Instance3dResult};
use super::{DepthError, DepthImage};
use crate::bag::{Header, ImageMsg};
use crate::msgs::camera_info::CameraInfo;
use crate::msgs::detection3d::{Detection3D, Detection3DArray};
use crate::msgs::point_cloud::LabelledPoint;
use crate::output::detection::Detections;

/// The 3D view of one colour frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame3d {
    /// The depth image's header: the outputs are in the depth camera's optical frame, at the
    /// depth frame's stamp.
    pub header: Header,
    /// One result per detection, in `dets.items` order.
    pub results: Vec<Instance3dResult>,
    /// One detection per located instance (id = track id).
    pub detections: Detection3DArray,
    /// The located instances' points; empty unless asked for (building them costs memory).
    pub points: Vec<LabelledPoint>,
}

/// Locates every detection of a colour frame in the paired depth frame. `track_ids[i]` belongs
/// to `dets.items[i]` (`u32::MAX` when missing); `depth_cdr` is the serialized
/// `sensor_msgs/Image`; `scale` is metres per depth unit (`None`: the encoding's convention).
/// Errors are inputs that cannot be used (bad `CameraInfo`, undecodable depth, sizes that
/// disagree); an instance without enough depth is a result, not an error.
pub fn locate_frame(
    dets: &Detections,
    track_ids: &[u32],
    info: &CameraInfo,
    depth_cdr: &[u8],
    scale: Option<f64>,
    opts: &Depth3dOptions,
    want_points: bool,
) -> Result<Frame3d, DepthError> {
    let dcam = info.camera_model()?;
    let msg = ImageMsg::from_cdr(depth_cdr).map_err(|e| DepthError::Message(e.to_string()))?;
    let depth = DepthImage::from_msg(&msg, scale)?;
    // Checked here, not only per instance, so a frame without detections reports it too.
    if depth.width != dcam.width || depth.height != dcam.height {
        return Err(DepthError::SizeMismatch {
            image_w: depth.width,
            image_h: depth.height,
            info_w: dcam.width,
            info_h: dcam.height,
        });
    }
    // Aligned depth shares the colour camera's optical frame and field of view: the colour
    // intrinsics are the depth ones at the colour resolution.
    let size = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let ccam = dcam.scaled_to(size(dets.width), size(dets.height))?;
    let mut results = Vec::with_capacity(dets.items.len());
    let mut detections = Vec::new();
    let mut points = Vec::new();
    for (i, d) in dets.items.iter().enumerate() {
        let id = track_ids.get(i).copied().unwrap_or(u32::MAX);
        let r = instance_3d(&d.mask, &ccam, &dcam, &depth, opts)?;
        if let Instance3dResult::Located(x) = &r {
            detections.push(Detection3D {
                id: id.to_string(),
                class_name: dets.label(d.class_id),
                score: f64::from(d.score),
                centroid: x.stats.centroid,
                center: x.stats.obb.center,
                orientation: x.stats.obb.orientation,
                size: x.stats.obb.size,
            });
            if want_points {
                let class_id = u32::try_from(d.class_id).unwrap_or(u32::MAX);
                points.extend(x.points.iter().map(|&xyz| LabelledPoint {
                    xyz,
                    instance_id: id,
                    class_id,
                }));
            }
        }
        results.push(r);
    }
    Ok(Frame3d {
        header: msg.header.clone(),
        results,
        detections: Detection3DArray {
            header: msg.header,
            detections,
        },
        points,
    })
}
