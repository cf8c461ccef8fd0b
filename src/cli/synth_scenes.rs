//! `yolact synth-scenes`: generated RGB-D tabletop scenes with exact ground truth
//! (src/scenes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use yolact_ros2::scenes::{generate, Mode, Options};

pub const LONG_ABOUT: &str = "Generate RGB-D tabletop scenes with exact ground truth.

Shaded primitives (box = book, can = cup, ball = sports ball, cone = carrot, ring = donut, named
after COCO categories) on a textured table before a tiled wall, seen through a pinhole camera,
with occlusion, shadows, lighting and colour variation and sensor noise. Everything follows from
--seed: the same command writes the same bytes.

Writes under --out: images/NNNNNN.png (rgb), depth/NNNNNN.png (16-bit, millimetres, aligned with
the colour image), camera_info/NNNNNN.json (intrinsics, depth units, camera pose), annotations.json
(COCO: visible-instance masks as compressed RLE, bbox, area; track_id in a sequence) and
boxes3d.json (each object's 3D box in the camera optical frame). With --sequence, the camera and
objects move smoothly (objects enter, leave and cross) and sequence.mcap holds the frames as a
rosbag2 bag on /camera/color/image_raw (rgb8), /camera/color/camera_info,
/camera/aligned_depth_to_color/image_raw (16UC1) and /camera/aligned_depth_to_color/camera_info.";

#[derive(Debug, clap::Args)]
pub struct SynthScenesArgs {
    /// Output folder (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of independent still scenes.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "sequence",
        conflicts_with = "sequence"
    )]
    pub images: Option<u64>,
    /// Instead of still scenes, one moving sequence of this many frames (also written as a bag).
    #[arg(long, value_name = "FRAMES")]
    pub sequence: Option<u64>,
    /// Seed of everything random.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Image size.
    #[arg(long, value_name = "WxH", default_value = "640x480", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Frame rate of a sequence (its stamps and motion).
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Visible instances with fewer pixels get no annotation (slivers at the image border or
    /// behind another object).
    #[arg(long, value_name = "PIXELS", default_value_t = 20)]
    pub min_area: u64,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}`: expected WxH, e.g. 640x480"))?;
    let p = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("`{s}`: {e}"));
    let (w, h) = (p(w)?, p(h)?);
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(format!("`{s}`: each side must be within 1..=8192"));
    }
    Ok((w, h))
}

pub fn run(a: SynthScenesArgs) -> Result<ExitCode> {
    let mode = match (a.images, a.sequence) {
        (Some(n), None) => Mode::Stills(n),
        (None, Some(n)) => Mode::Sequence(n),
        _ => bail!("give either --images N or --sequence FRAMES"),
    };
    let opts = Options {
        out: a.out.clone(),
        seed: a.seed,
        width: a.size.0,
        height: a.size.1,
        mode,
        fps: a.fps,
        min_area: a.min_area,
    };
    let start = Instant::now();
    let s = generate(&opts).with_context(|| format!("generating scenes in {}", a.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} frames, {} annotations in {} ({secs:.2} s, {:.1} ms/frame)",
        s.frames,
        s.annotations,
        a.out.display(),
        1000.0 * secs / s.frames.max(1) as f64
    );
    if let Some(bag) = s.bag {
        println!("bag: {}", bag.display());
    }
    Ok(ExitCode::SUCCESS)
}
