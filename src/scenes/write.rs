//! The files of a generated set: PNGs (colour, 16-bit depth in mm), per-frame camera JSON, the
//! COCO annotation file, the 3D boxes, and for a sequence the rosbag2 MCAP. The JSON documents
//! are built by pure functions; only `write_*` touch the disk.

use std::path::Path;

use image::{ImageBuffer, Luma, RgbImage};
use serde_json::{json, Value};

use super::annotate::{Box3d, Instance};
use super::camera::Camera;
use super::raster::Render;
use super::scene::Class;
use crate::bag::image_msg::ImageMsg;
use crate::bag::{Header, Time};
use crate::error::{Error, Result};
use crate::msgs::camera_info::CameraInfo;
use crate::msgs::schema;
use crate::replay::BagWriter;

/// The usual driver topics (realsense2_camera), so replay and the node find them by default.
pub const COLOR_TOPIC: &str = "/camera/color/image_raw";
pub const COLOR_INFO_TOPIC: &str = "/camera/color/camera_info";
pub const DEPTH_TOPIC: &str = "/camera/aligned_depth_to_color/image_raw";
pub const DEPTH_INFO_TOPIC: &str = "/camera/aligned_depth_to_color/camera_info";
/// The optical frame both images are in (the depth is registered to colour).
pub const FRAME_ID: &str = "camera_color_optical_frame";
/// Depth image units.
pub const DEPTH_SCALE_M: f64 = 0.001;

/// One written frame, as the annotation files record it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    pub index: u64,
    /// `NNNNNN.png`: the name under `images/` and `depth/`.
    pub file_name: String,
    /// Header stamp of a sequence frame.
    pub stamp_ns: Option<u64>,
    pub camera: Camera,
    pub instances: Vec<Instance>,
    pub boxes: Vec<Box3d>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

pub fn write_rgb_png(path: &Path, r: &Render) -> Result<()> {
    let img = RgbImage::from_raw(r.width, r.height, r.rgb.clone())
        .ok_or_else(|| Error::Invalid("render buffer does not match its size".into()))?;
    img.save(path)
        .map_err(|e| Error::Image(format!("{}: {e}", path.display())))
}

pub fn write_depth_png(path: &Path, r: &Render) -> Result<()> {
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(r.width, r.height, r.depth_mm.clone())
            .ok_or_else(|| Error::Invalid("depth buffer does not match its size".into()))?;
    img.save(path)
        .map_err(|e| Error::Image(format!("{}: {e}", path.display())))
}

pub fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string(v).map_err(|e| Error::Invalid(format!("JSON: {e}")))?;
    std::fs::write(path, text).map_err(io(path))
}

fn pose_json(c: &Camera) -> Value {
    let t = c.world_from_camera.translation.vector;
    let q = c.world_from_camera.rotation;
    json!({"translation": [t.x, t.y, t.z], "quaternion_xyzw": [q.i, q.j, q.k, q.w]})
}

/// The per-frame camera file: intrinsics as `CameraInfo` holds them, depth units, and the camera's
/// pose in the table's world frame (z up, table at z = 0).
pub fn camera_json(f: &FrameRecord) -> Value {
    let k = &f.camera.intrinsics;
    json!({
        "width": k.width, "height": k.height,
        "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy,
        "k": k.k(),
        "distortion_model": "plumb_bob", "d": [0.0, 0.0, 0.0, 0.0, 0.0],
        "depth_scale_m": DEPTH_SCALE_M,
        "frame_id": FRAME_ID,
        "stamp_ns": f.stamp_ns,
        "world_from_camera": pose_json(&f.camera),
    })
}

/// The COCO annotation file: images, the classes as COCO categories, and one annotation per
/// visible instance (`track_id`, `visible_fraction` and `truncated` are extra fields).
pub fn coco_json(frames: &[FrameRecord], info: Value) -> Value {
    let images: Vec<Value> = frames
        .iter()
        .map(|f| {
            let mut img = json!({
                "id": f.index + 1,
                "file_name": f.file_name,
                "width": f.camera.intrinsics.width,
                "height": f.camera.intrinsics.height,
                "depth_file": format!("depth/{}", f.file_name),
                "camera_file": format!("camera_info/{}", f.file_name.replace(".png", ".json")),
            });
            if let Some(s) = f.stamp_ns {
                img["stamp_ns"] = json!(s);
                img["frame_index"] = json!(f.index);
            }
            img
        })
        .collect();
    let categories: Vec<Value> = Class::ALL
        .iter()
        .map(|c| json!({"id": c.category_id(), "name": c.coco_name(), "supercategory": "object"}))
        .collect();
    let mut annotations = Vec::new();
    for f in frames {
        for inst in &f.instances {
            let mut a = json!({
                "id": annotations.len() + 1,
                "image_id": f.index + 1,
                "category_id": inst.category_id,
                "segmentation": {
                    "size": [f.camera.intrinsics.height, f.camera.intrinsics.width],
                    "counts": inst.counts,
                },
                "area": inst.area,
                "bbox": inst.bbox,
                "iscrowd": 0,
                "visible_fraction": inst.visible_fraction,
                "truncated": inst.truncated,
            });
            if f.stamp_ns.is_some() {
                a["track_id"] = json!(inst.track_id);
            }
            annotations.push(a);
        }
    }
    json!({"info": info, "images": images, "categories": categories, "annotations": annotations})
}

/// The 3D ground truth: per frame, every object's box in the optical frame, with the id of its
/// COCO annotation (null when it is not visible or below the minimum area).
pub fn boxes_json(frames: &[FrameRecord]) -> Value {
    let mut next_ann = 1u64;
    let out: Vec<Value> = frames
        .iter()
        .map(|f| {
            let objects: Vec<Value> = f
                .boxes
                .iter()
                .map(|b| {
                    let ann = f
                        .instances
                        .iter()
                        .position(|i| i.object == b.object)
                        .map(|k| next_ann + k as u64);
                    json!({
                        "annotation_id": ann,
                        "track_id": b.track_id,
                        "category_id": b.category_id,
                        "shape": b.shape,
                        "centre": b.centre, "size": b.size,
                        "rotation": b.rotation, "quaternion_xyzw": b.quaternion_xyzw,
                        "visible_pixels": b.visible_pixels,
                        "amodal_pixels": b.amodal_pixels,
                        "truncated": b.truncated,
                    })
                })
                .collect();
            next_ann += f.instances.len() as u64;
            json!({"image_id": f.index + 1, "file_name": f.file_name, "stamp_ns": f.stamp_ns,
                   "frame": FRAME_ID, "objects": objects})
        })
        .collect();
    json!({"frame": "camera optical frame (x right, y down, z forward), metres", "frames": out})
}

fn header(stamp_ns: u64) -> Header {
    Header {
        stamp: Time {
            sec: i32::try_from(stamp_ns / 1_000_000_000).unwrap_or(i32::MAX),
            nanosec: (stamp_ns % 1_000_000_000) as u32,
        },
        frame_id: FRAME_ID.to_string(),
    }
}

/// Writes one frame to the bag: colour and depth camera info, colour `rgb8`, depth `16UC1`, all
/// stamped alike and logged at the stamp.
pub fn write_bag_frame(
    bag: &mut BagWriter,
    r: &Render,
    camera: &Camera,
    stamp_ns: u64,
) -> Result<()> {
    let h = header(stamp_ns);
    let k = &camera.intrinsics;
    let info =
        CameraInfo::pinhole(h.clone(), k.width, k.height, k.fx, k.fy, k.cx, k.cy).to_cdr()?;
    let colour = ImageMsg {
        header: h.clone(),
        height: r.height,
        width: r.width,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: r.width * 3,
        data: r.rgb.clone(),
    }
    .to_cdr(true)?;
    let depth = ImageMsg {
        header: h,
        height: r.height,
        width: r.width,
        encoding: "16UC1".into(),
        is_bigendian: 0,
        step: r.width * 2,
        data: r.depth_mm.iter().flat_map(|d| d.to_le_bytes()).collect(),
    }
    .to_cdr(true)?;
    bag.write(COLOR_INFO_TOPIC, schema::CAMERA_INFO, stamp_ns, &info)?;
    bag.write(DEPTH_INFO_TOPIC, schema::CAMERA_INFO, stamp_ns, &info)?;
    bag.write(COLOR_TOPIC, schema::IMAGE, stamp_ns, &colour)?;
    bag.write(DEPTH_TOPIC, schema::IMAGE, stamp_ns, &depth)?;
    bag.end_frame()
}
