//! The ground truth of a rendered frame: each object's visible mask as COCO RLE (the encoder of
//! [`crate::output::rle`], the one the evaluation decodes with), its box and area, and its 3D box
//! in the camera's optical frame.

use nalgebra::{Point3, Rotation3, UnitQuaternion, Vector3};

use super::raster::Render;
use super::scene::Scene;
use crate::error::{Error, Result};
use crate::output::detection::Mask;
use crate::output::rle;

/// One visible object of a frame, as a COCO annotation holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Index into the scene's objects.
    pub object: usize,
    pub track_id: u32,
    pub category_id: u32,
    /// pycocotools' compressed RLE string of the full-image mask.
    pub counts: String,
    pub area: u64,
    /// COCO `[x, y, width, height]` of the mask's pixels (pycocotools' `toBbox`).
    pub bbox: [u32; 4],
    /// Visible pixels over the pixels the object would cover alone (1: unoccluded).
    pub visible_fraction: f64,
    /// Part of the object's 3D box projects outside the image (or behind the camera).
    pub truncated: bool,
}

/// One object's 3D box in the camera's optical frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Box3d {
    pub object: usize,
    pub track_id: u32,
    pub category_id: u32,
    /// The primitive (`sphere`, `box`, ...).
    pub shape: &'static str,
    /// Metres.
    pub centre: [f64; 3],
    /// Full sizes along the box's own axes (metres).
    pub size: [f64; 3],
    /// Row-major rotation, box axes -> optical frame.
    pub rotation: [f64; 9],
    pub quaternion_xyzw: [f64; 4],
    pub visible_pixels: u64,
    pub amodal_pixels: u64,
    pub truncated: bool,
}

/// Pixel bounds and count of each object in the id image.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    count: u64,
}

fn bounds(render: &Render, objects: usize) -> Vec<Option<Bounds>> {
    let mut out: Vec<Option<Bounds>> = vec![None; objects];
    let w = render.width as usize;
    for (i, &id) in render.ids.iter().enumerate() {
        let Some(slot) = (id as usize).checked_sub(1).and_then(|k| out.get_mut(k)) else {
            continue;
        };
        let (x, y) = ((i % w) as u32, (i / w) as u32);
        let b = slot.get_or_insert(Bounds {
            x0: x,
            y0: y,
            x1: x,
            y1: y,
            count: 0,
        });
        b.x0 = b.x0.min(x);
        b.x1 = b.x1.max(x);
        b.y0 = b.y0.min(y);
        b.y1 = b.y1.max(y);
        b.count += 1;
    }
    out
}

/// Whether any corner of the object's box leaves the image or lies behind the camera.
fn is_truncated(scene: &Scene, object: usize) -> bool {
    let o = &scene.objects[object];
    let k = &scene.camera.intrinsics;
    let cam_from_local = scene.camera.world_from_camera.inverse() * o.pose;
    let h = o.shape.half_extents();
    (0..8).any(|c| {
        let s = |bit: u32| if c & (1 << bit) != 0 { 1.0 } else { -1.0 };
        let p = cam_from_local * Point3::new(s(0) * h.x, s(1) * h.y, s(2) * h.z);
        match k.project(&p) {
            Some((u, v)) => u < 0.0 || v < 0.0 || u > f64::from(k.width) || v > f64::from(k.height),
            None => true,
        }
    })
}

/// The visible objects of a frame with at least `min_area` pixels, in object order.
pub fn instances(scene: &Scene, render: &Render, min_area: u64) -> Result<Vec<Instance>> {
    let (w, h) = (render.width as usize, render.height as usize);
    let mut out = Vec::new();
    for (i, b) in bounds(render, scene.objects.len()).into_iter().enumerate() {
        let Some(b) = b.filter(|b| b.count >= min_area.max(1)) else {
            continue;
        };
        let (cols, rows) = ((b.x1 - b.x0 + 1) as usize, (b.y1 - b.y0 + 1) as usize);
        let id = i as u16 + 1;
        let mut data = Vec::with_capacity(cols * rows);
        for y in b.y0 as usize..=b.y1 as usize {
            let row = &render.ids[y * w + b.x0 as usize..y * w + b.x1 as usize + 1];
            data.extend(row.iter().map(|&p| u8::from(p == id)));
        }
        let mask = Mask::window(h, w, (b.x0 as usize, b.y0 as usize, cols, rows), data)
            .map_err(Error::Invalid)?;
        let code = rle::encode(&mask);
        let amodal = render
            .amodal
            .get(i)
            .copied()
            .unwrap_or(b.count)
            .max(b.count);
        let o = &scene.objects[i];
        out.push(Instance {
            object: i,
            track_id: o.track_id,
            category_id: o.class.category_id(),
            counts: rle::to_string(&code.counts),
            area: rle::area(&code),
            bbox: [b.x0, b.y0, cols as u32, rows as u32],
            visible_fraction: b.count as f64 / amodal as f64,
            truncated: is_truncated(scene, i),
        });
    }
    Ok(out)
}

/// Every object's 3D box (visible or not), in object order.
pub fn boxes3d(scene: &Scene, render: &Render) -> Vec<Box3d> {
    let visible = bounds(render, scene.objects.len());
    let camera_from_world = scene.camera.world_from_camera.inverse();
    scene
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let pose = camera_from_world * o.pose;
            let t = pose.translation.vector;
            let r: Rotation3<f64> = pose.rotation.to_rotation_matrix();
            let m = r.matrix();
            let q: UnitQuaternion<f64> = pose.rotation;
            let size: Vector3<f64> = o.shape.half_extents() * 2.0;
            Box3d {
                object: i,
                track_id: o.track_id,
                category_id: o.class.category_id(),
                shape: o.shape.kind(),
                centre: [t.x, t.y, t.z],
                size: [size.x, size.y, size.z],
                rotation: [
                    m[(0, 0)],
                    m[(0, 1)],
                    m[(0, 2)],
                    m[(1, 0)],
                    m[(1, 1)],
                    m[(1, 2)],
                    m[(2, 0)],
                    m[(2, 1)],
                    m[(2, 2)],
                ],
                quaternion_xyzw: [q.i, q.j, q.k, q.w],
                visible_pixels: visible[i].map_or(0, |b| b.count),
                amodal_pixels: render.amodal.get(i).copied().unwrap_or(0),
                truncated: is_truncated(scene, i),
            }
        })
        .collect()
}
