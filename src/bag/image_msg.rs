//! `sensor_msgs/msg/Image` and `sensor_msgs/msg/CompressedImage`: CDR decoding, CDR encoding and
//! conversion to an RGB frame.

use crate::engine::preprocess::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
use image::RgbImage;

use super::cdr::{CdrReader, CdrWriter, Header};
use super::BagError;

pub const IMAGE_TYPE: &str = "sensor_msgs/msg/Image";
pub const COMPRESSED_IMAGE_TYPE: &str = "sensor_msgs/msg/CompressedImage";

/// Refuses zero-sized and huge images (the pipeline's limits).
pub fn check_size(width: u32, height: u32) -> Result<(), BagError> {
    crate::engine::preprocess::check_size(width, height).map_err(BagError::Image)
}

/// A decoded `sensor_msgs/msg/Image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMsg {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub encoding: String,
    pub is_bigendian: u8,
    pub step: u32,
    pub data: Vec<u8>,
}

/// A decoded `sensor_msgs/msg/CompressedImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedImageMsg {
    pub header: Header,
    pub format: String,
    pub data: Vec<u8>,
}

/// Pixel layouts of raw images that can be turned into RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEncoding {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Mono8,
}

impl RawEncoding {
    pub fn parse(encoding: &str) -> Result<Self, BagError> {
        match encoding.trim().to_ascii_lowercase().as_str() {
            "rgb8" => Ok(Self::Rgb8),
            "bgr8" => Ok(Self::Bgr8),
            "rgba8" => Ok(Self::Rgba8),
            "bgra8" => Ok(Self::Bgra8),
            "mono8" | "8uc1" => Ok(Self::Mono8),
            _ => Err(BagError::UnknownEncoding(encoding.to_string())),
        }
    }

    pub fn channels(self) -> usize {
        match self {
            Self::Rgb8 | Self::Bgr8 => 3,
            Self::Rgba8 | Self::Bgra8 => 4,
            Self::Mono8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb8 => "rgb8",
            Self::Bgr8 => "bgr8",
            Self::Rgba8 => "rgba8",
            Self::Bgra8 => "bgra8",
            Self::Mono8 => "mono8",
        }
    }

    /// Byte positions of R, G and B within one pixel.
    fn rgb_index(self) -> [usize; 3] {
        match self {
            Self::Rgb8 | Self::Rgba8 => [0, 1, 2],
            Self::Bgr8 | Self::Bgra8 => [2, 1, 0],
            Self::Mono8 => [0, 0, 0],
        }
    }
}

impl ImageMsg {
    pub fn from_cdr(data: &[u8]) -> Result<Self, BagError> {
        let mut r = CdrReader::new(data)?;
        let header = r.read_header()?;
        let height = r.read_u32()?;
        let width = r.read_u32()?;
        let encoding = r.read_string()?;
        let is_bigendian = r.read_u8()?;
        let step = r.read_u32()?;
        let data = r.read_bytes()?.to_vec();
        Ok(Self {
            header,
            height,
            width,
            encoding,
            is_bigendian,
            step,
            data,
        })
    }

    pub fn to_cdr(&self, little_endian: bool) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(little_endian);
        w.write_header(&self.header)?;
        w.write_u32(self.height);
        w.write_u32(self.width);
        w.write_string(&self.encoding)?;
        w.write_u8(self.is_bigendian);
        w.write_u32(self.step);
        w.write_bytes(&self.data)?;
        Ok(w.finish())
    }

    /// An unpadded `rgb8` message holding `img`.
    pub fn from_rgb(header: Header, img: &RgbImage) -> Self {
        Self {
            header,
            height: img.height(),
            width: img.width(),
            encoding: "rgb8".to_string(),
            is_bigendian: 0,
            step: img.width().saturating_mul(3),
            data: img.as_raw().clone(),
        }
    }

    /// Converts to RGB, honouring `step` (row padding). Every size is checked before the
    /// output buffer is allocated.
    pub fn to_rgb(&self) -> Result<RgbImage, BagError> {
        let enc = RawEncoding::parse(&self.encoding)?;
        check_size(self.width, self.height)?;
        let ch = enc.channels() as u64;
        let row_bytes = u64::from(self.width) * ch;
        let step = u64::from(self.step);
        if step < row_bytes {
            return Err(BagError::Image(format!(
                "step {} is smaller than width {} x {} channels",
                self.step,
                self.width,
                enc.channels()
            )));
        }
        // The last row only needs its pixels, not its padding, but rosbag writers always
        // store full rows; requiring step*height matches cv_bridge and catches truncation.
        let need = step * u64::from(self.height);
        if (self.data.len() as u64) < need {
            return Err(BagError::Image(format!(
                "data has {} bytes, step {} x height {} needs {need}",
                self.data.len(),
                self.step,
                self.height
            )));
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (step, ch) = (step as usize, ch as usize);
        let idx = enc.rgb_index();
        let mut out = Vec::with_capacity(w * h * 3);
        for row in self.data.chunks_exact(step).take(h) {
            for px in row[..w * ch].chunks_exact(ch) {
                out.extend_from_slice(&[px[idx[0]], px[idx[1]], px[idx[2]]]);
            }
        }
        RgbImage::from_raw(self.width, self.height, out)
            .ok_or_else(|| BagError::Image("pixel buffer size mismatch".to_string()))
    }
}

/// Compression formats that can be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressedFormat {
    Jpeg,
    Png,
}

impl CompressedFormat {
    /// Reads the `format` field: plain "jpeg"/"png", or the image_transport form
    /// "rgb8; jpeg compressed bgr8". An empty field falls back to the file's magic bytes.
    pub fn parse(format: &str, data: &[u8]) -> Result<Self, BagError> {
        let f = format.to_ascii_lowercase();
        let has = |w: &str| {
            f.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|tok| tok == w)
        };
        if has("jpeg") || has("jpg") {
            return Ok(Self::Jpeg);
        }
        if has("png") {
            return Ok(Self::Png);
        }
        if f.trim().is_empty() {
            if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
                return Ok(Self::Jpeg);
            }
            if data.starts_with(b"\x89PNG\r\n\x1a\n") {
                return Ok(Self::Png);
            }
        }
        Err(BagError::UnknownEncoding(format.to_string()))
    }
}

impl CompressedImageMsg {
    pub fn from_cdr(data: &[u8]) -> Result<Self, BagError> {
        let mut r = CdrReader::new(data)?;
        let header = r.read_header()?;
        let format = r.read_string()?;
        let data = r.read_bytes()?.to_vec();
        Ok(Self {
            header,
            format,
            data,
        })
    }

    pub fn to_cdr(&self, little_endian: bool) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(little_endian);
        w.write_header(&self.header)?;
        w.write_string(&self.format)?;
        w.write_bytes(&self.data)?;
        Ok(w.finish())
    }

    /// Decodes the JPEG/PNG payload. The dimensions are read from the file header and
    /// checked before the pixels are decoded.
    pub fn to_rgb(&self) -> Result<RgbImage, BagError> {
        let fmt = match CompressedFormat::parse(&self.format, &self.data)? {
            CompressedFormat::Jpeg => image::ImageFormat::Jpeg,
            CompressedFormat::Png => image::ImageFormat::Png,
        };
        let decode_err = |e: image::ImageError| BagError::Image(format!("{fmt:?} decode: {e}"));
        if fmt == image::ImageFormat::Jpeg {
            crate::engine::jpeg::check_complete(&self.data).map_err(BagError::Image)?;
        }
        let reader = image::ImageReader::with_format(std::io::Cursor::new(&self.data[..]), fmt);
        let (w, h) = reader.into_dimensions().map_err(decode_err)?;
        check_size(w, h)?;
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&self.data[..]), fmt);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        // RGBA16 is the widest thing a PNG can decode to.
        limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
        reader.limits(limits);
        Ok(reader.decode().map_err(decode_err)?.to_rgb8())
    }
}

/// One image message turned into a frame.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub header: Header,
    pub image: RgbImage,
}

/// Whether `msg_type` names an image type this module decodes (ROS 2 or ROS 1 style name).
pub fn is_image_type(msg_type: &str) -> bool {
    matches!(
        msg_type,
        IMAGE_TYPE | COMPRESSED_IMAGE_TYPE | "sensor_msgs/Image" | "sensor_msgs/CompressedImage"
    )
}

/// Decodes a CDR-serialized Image or CompressedImage into an RGB frame.
pub fn decode_image(msg_type: &str, cdr: &[u8]) -> Result<DecodedImage, BagError> {
    match msg_type {
        IMAGE_TYPE | "sensor_msgs/Image" => {
            let m = ImageMsg::from_cdr(cdr)?;
            let image = m.to_rgb()?;
            Ok(DecodedImage {
                header: m.header,
                image,
            })
        }
        COMPRESSED_IMAGE_TYPE | "sensor_msgs/CompressedImage" => {
            let m = CompressedImageMsg::from_cdr(cdr)?;
            let image = m.to_rgb()?;
            Ok(DecodedImage {
                header: m.header,
                image,
            })
        }
        other => Err(BagError::UnsupportedType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::cdr::Time;

    fn header() -> Header {
        Header {
            stamp: Time {
                sec: 12,
                nanosec: 345,
            },
            frame_id: "cam".into(),
        }
    }

    /// Builds a padded raw image whose pixel (x, y) has RGB = (x, y, x+y) in `enc`'s layout.
    fn raw(enc: RawEncoding, w: u32, h: u32, pad: u32) -> ImageMsg {
        let ch = enc.channels() as u32;
        let step = w * ch + pad;
        let mut data = vec![0xAAu8; (step * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = (x as u8, y as u8, (x + y) as u8);
                let o = (y * step + x * ch) as usize;
                let px: Vec<u8> = match enc {
                    RawEncoding::Rgb8 => vec![r, g, b],
                    RawEncoding::Bgr8 => vec![b, g, r],
                    RawEncoding::Rgba8 => vec![r, g, b, 255],
                    RawEncoding::Bgra8 => vec![b, g, r, 255],
                    RawEncoding::Mono8 => vec![r],
                };
                data[o..o + px.len()].copy_from_slice(&px);
            }
        }
        ImageMsg {
            header: header(),
            height: h,
            width: w,
            encoding: enc.name().into(),
            is_bigendian: 0,
            step,
            data,
        }
    }

    #[test]
    fn raw_encodings_with_padding_convert_and_round_trip() {
        use RawEncoding::*;
        for enc in [Rgb8, Bgr8, Rgba8, Bgra8, Mono8] {
            for little in [true, false] {
                let m = raw(enc, 5, 3, 3);
                let bytes = m.to_cdr(little).unwrap();
                let back = ImageMsg::from_cdr(&bytes).unwrap();
                assert_eq!(back, m);
                let img = back.to_rgb().unwrap();
                for (x, y, p) in img.enumerate_pixels() {
                    let want = if enc == Mono8 {
                        [x as u8; 3]
                    } else {
                        [x as u8, y as u8, (x + y) as u8]
                    };
                    assert_eq!(p.0, want, "{enc:?} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn bad_raw_images_are_errors() {
        let mut m = raw(RawEncoding::Rgb8, 4, 4, 0);
        m.encoding = "yuv422".into();
        match m.to_rgb() {
            Err(BagError::UnknownEncoding(e)) => assert_eq!(e, "yuv422"),
            other => panic!("{other:?}"),
        }
        let mut m = raw(RawEncoding::Rgb8, 4, 4, 0);
        m.step = 11;
        assert!(m.to_rgb().is_err());
        let mut m = raw(RawEncoding::Rgb8, 4, 4, 0);
        m.data.pop();
        assert!(m.to_rgb().is_err());
        let mut m = raw(RawEncoding::Rgb8, 4, 4, 0);
        m.width = 0;
        assert!(m.to_rgb().is_err());
        let mut m = raw(RawEncoding::Rgb8, 4, 4, 0);
        m.width = u32::MAX;
        m.height = u32::MAX;
        m.step = u32::MAX;
        assert!(m.to_rgb().is_err());
    }

    #[test]
    fn compressed_png_decodes_and_format_strings_parse() {
        let m = raw(RawEncoding::Rgb8, 6, 4, 0);
        let img = m.to_rgb().unwrap();
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        for format in ["png", "rgb8; png compressed rgb8", ""] {
            let c = CompressedImageMsg {
                header: header(),
                format: format.into(),
                data: png.clone(),
            };
            let back = CompressedImageMsg::from_cdr(&c.to_cdr(true).unwrap()).unwrap();
            assert_eq!(back, c);
            assert_eq!(back.to_rgb().unwrap(), img);
        }
        assert_eq!(
            CompressedFormat::parse("rgb8; jpeg compressed bgr8", &[]).unwrap(),
            CompressedFormat::Jpeg
        );
        assert!(matches!(
            CompressedFormat::parse("tiff", &png),
            Err(BagError::UnknownEncoding(_))
        ));
        let c = CompressedImageMsg {
            header: header(),
            format: "png".into(),
            data: png[..png.len() / 2].to_vec(),
        };
        assert!(c.to_rgb().is_err());
    }
}
