//! Image loading and the reference's FastBaseTransform (docs/model.md §7.1).
//!
//! The reference resizes the BGR image, normalises with BGR means/stds and flips to RGB. Every step is
//! per channel, so resizing and normalising the RGB image with the RGB-ordered constants gives the same
//! numbers.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::config::{Transform, YolactConfig};
use crate::error::{Error, Result};
use crate::ops::interp::resize_bilinear;

pub use crate::engine::input::{MEAN_RGB, STD_RGB};

/// Largest side we accept; larger images are almost certainly corrupt headers, and the mask upsample
/// allocates per-detection full-frame planes.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Largest pixel count we accept (64 Mpx): bounds the decode and mask buffers of one frame.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Decodes an image file to RGB, applying the EXIF orientation as `cv2.imread` does. Grey images are
/// replicated to three channels and alpha is dropped, as `IMREAD_COLOR` does.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        // Read again whole (compressed, so small next to the pixels) for the truncation check.
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        super::jpeg::check_complete(&bytes)
            .map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    let orientation = decoder.orientation().ok();
    let (w, h) = decoder.dimensions();
    check_size(w, h).map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    // into_: an RGB8 decode is returned as is, not copied.
    Ok(img.into_rgb8())
}

/// Rejects sizes the pipeline cannot process.
pub fn check_size(w: u32, h: u32) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("image has zero size ({w}x{h})"));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(format!(
            "image is {w}x{h}; sides over {MAX_IMAGE_SIDE} px or more than {MAX_IMAGE_PIXELS} \
             pixels are not supported"
        ));
    }
    Ok(())
}

/// HWC uint8 RGB -> (1, 3, H, W) f32 in 0..255 on `device`.
pub fn image_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    check_size(w, h).map_err(Error::Image)?;
    let t = Tensor::from_raw_buffer(
        img.as_raw(),
        DType::U8,
        &[h as usize, w as usize, 3],
        &Device::Cpu,
    )?
    .to_device(device)?
    .permute((2, 0, 1))?
    .to_dtype(DType::F32)?
    .unsqueeze(0)?;
    Ok(t)
}

/// FastBaseTransform: resize to max_size x max_size (bilinear, half-pixel, no antialias), then
/// normalise. Output (1, 3, S, S), RGB.
///
/// One channel at a time: the resize is per plane, so the result is the same as resizing the
/// whole (1, 3, H, W) f32 tensor, but only one f32 plane of the input exists at once (for an
/// 8192x8192 image 268 MB instead of 805 MB).
pub fn preprocess(img: &RgbImage, cfg: &YolactConfig, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    check_size(w, h).map_err(Error::Image)?;
    let hwc = Tensor::from_raw_buffer(
        img.as_raw(),
        DType::U8,
        &[h as usize, w as usize, 3],
        &Device::Cpu,
    )?
    .to_device(device)?;
    let planes = (0..3)
        .map(|c| {
            let plane = hwc
                .narrow(2, c, 1)?
                .permute((2, 0, 1))?
                .to_dtype(DType::F32)?
                .unsqueeze(0)?;
            resize_bilinear(&plane, cfg.max_size, cfg.max_size)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    normalize(&Tensor::cat(&planes, 1)?, cfg.transform)
}

/// Applies the config's normalisation to an RGB (N, 3, H, W) tensor in 0..255.
pub fn normalize(x: &Tensor, transform: Transform) -> Result<Tensor> {
    let dev = x.device();
    Ok(match transform {
        Transform::ResNet => {
            let mean = Tensor::new(&MEAN_RGB, dev)?.reshape((1, 3, 1, 1))?;
            let std = Tensor::new(&STD_RGB, dev)?.reshape((1, 3, 1, 1))?;
            // (x - mean) / std, divided rather than multiplied by 1/std, to round as the reference does.
            x.broadcast_sub(&mean)?.broadcast_div(&std)?
        }
        Transform::DarkNet => (x / 255.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_bgr_formula() {
        let img = RgbImage::from_fn(4, 3, |x, y| {
            image::Rgb([(x * 50) as u8, (y * 70) as u8, 200])
        });
        let t = image_to_tensor(&img, &Device::Cpu).unwrap();
        let n = normalize(&t, Transform::ResNet).unwrap();
        let v = n.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // channel 0 (R) uses the BGR table's last entry: mean 123.68, std 58.40
        let r00 = (0f32 - 123.68) / 58.40;
        assert_eq!(v[0], r00);
        let b = (200f32 - 103.94) / 57.38;
        assert_eq!(v[2 * 12], b);
        let dn = normalize(&t, Transform::DarkNet).unwrap();
        let g = dn
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(g, 140.0 / 255.0);
    }

    #[test]
    fn zero_sized_and_huge_images_are_errors() {
        assert!(check_size(0, 10).is_err());
        assert!(check_size(10, 0).is_err());
        assert!(check_size(MAX_IMAGE_SIDE + 1, 10).is_err());
        assert!(check_size(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE).is_err());
        assert!(check_size(640, 480).is_ok());
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("yolact_pre_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load_image(&p).unwrap_err().to_string();
        assert!(e.contains("bad.png"), "{e}");
        assert!(load_image(&dir.join("missing.png")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
