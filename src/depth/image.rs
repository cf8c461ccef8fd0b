//! Depth images to metres: `16UC1` (also `mono16`) holds integer units, millimetres by the
//! convention of REP-118 and every RGB-D driver; `32FC1` holds metres. A units scale parameter
//! covers sensors that break the convention.

use super::DepthError;
use crate::bag::ImageMsg;

/// The two depth encodings of REP-118.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthEncoding {
    /// `16UC1` / `mono16`: unsigned integer units (default millimetres), 0 = no reading.
    U16,
    /// `32FC1`: metres as f32; 0, NaN and inf = no reading.
    F32,
}

impl DepthEncoding {
    pub fn parse(encoding: &str) -> Result<Self, DepthError> {
        match encoding.trim().to_ascii_lowercase().as_str() {
            "16uc1" | "mono16" => Ok(Self::U16),
            "32fc1" => Ok(Self::F32),
            _ => Err(DepthError::Encoding(encoding.to_string())),
        }
    }

    /// Metres per stored unit when no scale is configured.
    pub fn default_scale(self) -> f64 {
        match self {
            Self::U16 => 0.001,
            Self::F32 => 1.0,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::F32 => 4,
        }
    }
}

/// A depth image in metres, row-major; NaN where the sensor gave no reading.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthImage {
    pub width: u32,
    pub height: u32,
    pub metres: Vec<f32>,
}

impl DepthImage {
    /// Depth at pixel `(u, v)` (NaN = none); the caller keeps `u < width`, `v < height`.
    pub fn at(&self, u: usize, v: usize) -> f32 {
        self.metres
            .get(v * self.width as usize + u)
            .copied()
            .unwrap_or(f32::NAN)
    }

    /// Decodes a `sensor_msgs/Image`. `scale` is metres per stored unit; `None` takes the
    /// encoding's convention (1 mm for 16UC1, 1 m for 32FC1). Honours `step` and `is_bigendian`.
    pub fn from_msg(msg: &ImageMsg, scale: Option<f64>) -> Result<Self, DepthError> {
        let enc = DepthEncoding::parse(&msg.encoding)?;
        let scale = scale.unwrap_or(enc.default_scale());
        if !scale.is_finite() || scale <= 0.0 {
            return Err(DepthError::Scale(scale));
        }
        if msg.width == 0 || msg.height == 0 {
            return Err(DepthError::EmptySize {
                what: "depth image",
                width: msg.width,
                height: msg.height,
            });
        }
        crate::bag::image_msg::check_size(msg.width, msg.height)
            .map_err(|e| DepthError::Layout(e.to_string()))?;
        let (w, h) = (msg.width as usize, msg.height as usize);
        let row = w * enc.bytes();
        let step = msg.step as usize;
        if step < row {
            return Err(DepthError::Layout(format!(
                "step {step} is smaller than width {w} x {} bytes",
                enc.bytes()
            )));
        }
        let need = step * h;
        if msg.data.len() < need {
            return Err(DepthError::Layout(format!(
                "data has {} bytes, step {step} x height {h} needs {need}",
                msg.data.len()
            )));
        }
        let big = msg.is_bigendian != 0;
        let mut metres = Vec::with_capacity(w * h);
        for r in msg.data.chunks_exact(step).take(h) {
            let r = &r[..row];
            match enc {
                DepthEncoding::U16 => metres.extend(r.chunks_exact(2).map(|b| {
                    let raw = if big {
                        u16::from_be_bytes([b[0], b[1]])
                    } else {
                        u16::from_le_bytes([b[0], b[1]])
                    };
                    if raw == 0 {
                        f32::NAN
                    } else {
                        (f64::from(raw) * scale) as f32
                    }
                })),
                DepthEncoding::F32 => metres.extend(r.chunks_exact(4).map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    let raw = if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    };
                    if raw == 0.0 || !raw.is_finite() {
                        f32::NAN
                    } else {
                        (f64::from(raw) * scale) as f32
                    }
                })),
            }
        }
        Ok(Self {
            width: msg.width,
            height: msg.height,
            metres,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::Header;

    fn msg(encoding: &str, w: u32, h: u32, step: u32, data: Vec<u8>, big: bool) -> ImageMsg {
        ImageMsg {
            header: Header::default(),
            height: h,
            width: w,
            encoding: encoding.into(),
            is_bigendian: u8::from(big),
            step,
            data,
        }
    }

    #[test]
    fn u16_millimetres_with_padding_and_both_endians() {
        for big in [false, true] {
            let px: [u16; 4] = [1000, 0, 2500, 65535];
            let mut data = Vec::new();
            for row in px.chunks(2) {
                for &v in row {
                    data.extend_from_slice(&if big {
                        v.to_be_bytes()
                    } else {
                        v.to_le_bytes()
                    });
                }
                data.extend_from_slice(&[0xEE, 0xEE]); // row padding
            }
            let d = DepthImage::from_msg(&msg("16UC1", 2, 2, 6, data, big), None).unwrap();
            assert_eq!(d.at(0, 0), 1.0);
            assert!(d.at(1, 0).is_nan());
            assert_eq!(d.at(0, 1), 2.5);
            assert!((d.at(1, 1) - 65.535).abs() < 1e-4);
        }
    }

    #[test]
    fn f32_metres_invalid_readings_and_scale() {
        let mut data = Vec::new();
        for v in [1.25f32, 0.0, f32::NAN, f32::INFINITY] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let m = msg("32FC1", 4, 1, 16, data, false);
        let d = DepthImage::from_msg(&m, None).unwrap();
        assert_eq!(d.at(0, 0), 1.25);
        assert!((1..4).all(|u| d.at(u, 0).is_nan()));
        let d = DepthImage::from_msg(&m, Some(0.5)).unwrap();
        assert_eq!(d.at(0, 0), 0.625);
    }

    #[test]
    fn bad_depth_images_are_typed_errors() {
        let e = DepthImage::from_msg(&msg("rgb8", 1, 1, 3, vec![0; 3], false), None);
        assert_eq!(e, Err(DepthError::Encoding("rgb8".into())));
        let e = DepthImage::from_msg(&msg("16UC1", 2, 2, 3, vec![0; 12], false), None);
        assert!(matches!(e, Err(DepthError::Layout(_))), "{e:?}");
        let e = DepthImage::from_msg(&msg("16UC1", 2, 2, 4, vec![0; 7], false), None);
        assert!(matches!(e, Err(DepthError::Layout(_))), "{e:?}");
        let e = DepthImage::from_msg(&msg("16UC1", 1, 1, 2, vec![0; 2], false), Some(0.0));
        assert_eq!(e, Err(DepthError::Scale(0.0)));
    }
}
