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
/// The resize reads the input as byte planes, so the result is the same as resizing the whole
/// (1, 3, H, W) f32 tensor, but the input is never held in f32 (for an 8192x8192 image 201 MB of
/// planes instead of 805 MB).
pub fn preprocess(img: &RgbImage, cfg: &YolactConfig, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    check_size(w, h).map_err(Error::Image)?;
    let (w, h) = (w as usize, h as usize);
    // One pass per plane where tensor ops took a copy, a conversion and a resize per channel.
    let mut planes = vec![0u8; 3 * h * w];
    let (r, gb) = planes.split_at_mut(h * w);
    let (g, b) = gb.split_at_mut(h * w);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        (r[i], g[i], b[i]) = (px[0], px[1], px[2]);
    }
    let s = cfg.max_size;
    let resized = crate::ops::interp::resize_u8_planes(&planes, h, w, s, s)?;
    let x = Tensor::from_vec(resized, (1, 3, s, s), &Device::Cpu)?.to_device(device)?;
    normalize(&x, cfg.transform)
}

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
    fn preprocessing_from_bytes_equals_resizing_the_f32_image() {
        let img = RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 11) as u8, (x * y) as u8])
        });
        for name in ["yolact_plus_mini", "yolact_darknet53"] {
            let cfg = YolactConfig::by_name(name).unwrap();
            let s = cfg.max_size;
            let f32_image = image_to_tensor(&img, &Device::Cpu).unwrap();
            let resized = crate::ops::interp::resize_bilinear(&f32_image, s, s).unwrap();
            let want = normalize(&resized, cfg.transform).unwrap();
            let got = preprocess(&img, &cfg, &Device::Cpu).unwrap();
            assert_eq!(got.dims(), &[1, 3, s, s]);
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&got), flat(&want), "{name}");
        }
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
