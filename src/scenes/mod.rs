//! Generated RGB-D scenes with exact ground truth (`yolact synth-scenes`): shaded primitives on
//! a textured table before a tiled wall, seen through a pinhole camera, written with COCO
//! annotations, aligned depth, intrinsics and 3D boxes; a sequence also as a rosbag2 MCAP.
//!
//! Stages, in the order a frame flows: [`scene`] (what is seen, sampled from a seed) or
//! [`sequence`] (the same, moving) -> [`raster`] (one ray per pixel: colour, depth, which object)
//! -> [`annotate`] (masks as COCO RLE, boxes, 3D boxes) -> [`write`] (files and bag). The
//! geometry is in [`camera`] and [`primitives`], the patterns and noise in [`texture`].
//!
//! Everything is a function of the seed: still image `i` draws from its own RNG, so a set of 10
//! starts with the same 5 images as a set of 5.

pub mod annotate;
pub mod camera;
pub mod primitives;
pub mod raster;
pub mod scene;
pub mod sequence;
pub mod texture;
pub mod write;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::error::{Error, Result};
use crate::replay::BagWriter;
use texture::mix;
use write::FrameRecord;

/// The first frame's stamp of a sequence (a fixed date, so outputs are reproducible).
pub const SEQUENCE_START_NS: u64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Independent still scenes.
    Stills(u64),
    /// One continuous sequence of this many frames.
    Sequence(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub out: PathBuf,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    /// Frames per second of a sequence (its stamps and motion).
    pub fps: f64,
    /// Visible instances smaller than this (pixels) get no annotation.
    pub min_area: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub frames: u64,
    pub annotations: u64,
    /// The sequence's bag, when one was written.
    pub bag: Option<PathBuf>,
}

/// The file names of frame `i`.
fn file_name(i: u64) -> String {
    format!("{i:06}.png")
}

fn noise_seed(seed: u64, i: u64) -> u64 {
    mix(seed ^ mix(i ^ 0x6E6F_6973_6500_0000))
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
}

/// Writes one frame's images and camera file; returns its record.
fn emit(
    opts: &Options,
    index: u64,
    scene: &scene::Scene,
    stamp_ns: Option<u64>,
    bag: Option<&mut BagWriter>,
) -> Result<FrameRecord> {
    let r = raster::render(scene);
    let name = file_name(index);
    write::write_rgb_png(&opts.out.join("images").join(&name), &r)?;
    write::write_depth_png(&opts.out.join("depth").join(&name), &r)?;
    let record = FrameRecord {
        index,
        file_name: name,
        stamp_ns,
        camera: scene.camera,
        instances: annotate::instances(scene, &r, opts.min_area)?,
        boxes: annotate::boxes3d(scene, &r),
    };
    write::write_json(
        &opts
            .out
            .join("camera_info")
            .join(record.file_name.replace(".png", ".json")),
        &write::camera_json(&record),
    )?;
    if let (Some(bag), Some(stamp)) = (bag, stamp_ns) {
        write::write_bag_frame(bag, &r, &scene.camera, stamp)?;
    }
    Ok(record)
}

/// Generates the set described by `opts` under `opts.out`.
pub fn generate(opts: &Options) -> Result<Summary> {
    if opts.width == 0 || opts.height == 0 {
        return Err(Error::Invalid("image size must be at least 1x1".into()));
    }
    if !(opts.fps.is_finite() && opts.fps > 0.0) {
        return Err(Error::Invalid(format!("fps must be > 0, got {}", opts.fps)));
    }
    for sub in ["images", "depth", "camera_info"] {
        create_dir(&opts.out.join(sub))?;
    }
    let mut frames = Vec::new();
    let mut bag_path = None;
    match opts.mode {
        Mode::Stills(n) => {
            for i in 0..n {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(opts.seed) ^ mix(i));
                let s = scene::sample_still(
                    &mut rng,
                    opts.width,
                    opts.height,
                    noise_seed(opts.seed, i),
                )?;
                frames.push(emit(opts, i, &s, None, None)?);
            }
        }
        Mode::Sequence(n) => {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(opts.seed));
            let plan = sequence::Sequence::plan(&mut rng, opts.width, opts.height, opts.fps)?;
            let path = opts.out.join("sequence.mcap");
            let mut bag = BagWriter::create(&path)?;
            for i in 0..n {
                let s = plan.frame(i, noise_seed(opts.seed, i))?;
                let stamp = SEQUENCE_START_NS + (i as f64 * 1e9 / opts.fps).round() as u64;
                frames.push(emit(opts, i, &s, Some(stamp), Some(&mut bag))?);
            }
            bag.finish()?;
            bag_path = Some(path);
        }
    }
    let (kind, count) = match opts.mode {
        Mode::Stills(n) => ("stills", n),
        Mode::Sequence(n) => ("sequence", n),
    };
    let info = json!({
        "description": "yolact synth-scenes",
        "seed": opts.seed, "kind": kind, "frames": count,
        "width": opts.width, "height": opts.height, "fps": opts.fps, "min_area": opts.min_area,
    });
    write::write_json(
        &opts.out.join("annotations.json"),
        &write::coco_json(&frames, info),
    )?;
    write::write_json(&opts.out.join("boxes3d.json"), &write::boxes_json(&frames))?;
    Ok(Summary {
        frames: frames.len() as u64,
        annotations: frames.iter().map(|f| f.instances.len() as u64).sum(),
        bag: bag_path,
    })
}
