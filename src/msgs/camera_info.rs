//! `sensor_msgs/msg/CameraInfo`: read (the depth camera's intrinsics) and written (tests, tools).

use crate::bag::{BagError, CdrReader, CdrWriter, Header};
use crate::depth::{CameraModel, DepthError};

/// `sensor_msgs/msg/CameraInfo`, field order of the definition.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub distortion_model: String,
    pub d: Vec<f64>,
    /// Row-major 3x3 intrinsics.
    pub k: [f64; 9],
    pub r: [f64; 9],
    pub p: [f64; 12],
    pub binning_x: u32,
    pub binning_y: u32,
    /// `sensor_msgs/RegionOfInterest`: x_offset, y_offset, height, width.
    pub roi: [u32; 4],
    pub roi_do_rectify: bool,
}

impl CameraInfo {
    /// A distortion-free camera with intrinsics `fx, fy, cx, cy` (what a registered depth
    /// stream publishes).
    pub fn pinhole(
        header: Header,
        width: u32,
        height: u32,
        fx: f64,
        fy: f64,
        cx: f64,
        cy: f64,
    ) -> Self {
        Self {
            header,
            height,
            width,
            distortion_model: "plumb_bob".into(),
            d: vec![0.0; 5],
            k: [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
            binning_x: 0,
            binning_y: 0,
            roi: [0; 4],
            roi_do_rectify: false,
        }
    }

    /// The checked pinhole model (zero focal length, empty size: typed errors).
    pub fn camera_model(&self) -> Result<CameraModel, DepthError> {
        CameraModel::from_k(&self.k, self.width, self.height)
    }

    pub fn from_cdr(data: &[u8]) -> Result<Self, BagError> {
        let mut r = CdrReader::new(data)?;
        let header = r.read_header()?;
        let height = r.read_u32()?;
        let width = r.read_u32()?;
        let distortion_model = r.read_string()?;
        let n = r.read_seq_len(8)?;
        let d = (0..n)
            .map(|_| r.read_f64())
            .collect::<Result<Vec<_>, _>>()?;
        let mut k = [0.0; 9];
        let mut rr = [0.0; 9];
        let mut p = [0.0; 12];
        for v in k.iter_mut().chain(rr.iter_mut()).chain(p.iter_mut()) {
            *v = r.read_f64()?;
        }
        let binning_x = r.read_u32()?;
        let binning_y = r.read_u32()?;
        let mut roi = [0u32; 4];
        for v in &mut roi {
            *v = r.read_u32()?;
        }
        let roi_do_rectify = r.read_bool()?;
        Ok(Self {
            header,
            height,
            width,
            distortion_model,
            d,
            k,
            r: rr,
            p,
            binning_x,
            binning_y,
            roi,
            roi_do_rectify,
        })
    }

    pub fn to_cdr(&self) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(true);
        w.write_header(&self.header)?;
        w.write_u32(self.height);
        w.write_u32(self.width);
        w.write_string(&self.distortion_model)?;
        w.write_seq_len(self.d.len())?;
        for v in self.d.iter().chain(&self.k).chain(&self.r).chain(&self.p) {
            w.write_f64(*v);
        }
        w.write_u32(self.binning_x);
        w.write_u32(self.binning_y);
        for v in self.roi {
            w.write_u32(v);
        }
        w.write_bool(self.roi_do_rectify);
        Ok(w.finish())
    }
}
