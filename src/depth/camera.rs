//! The pinhole camera of a `sensor_msgs/CameraInfo`: size and the intrinsics of `K`.
//!
//! Pixel coordinates follow ROS / OpenCV: integer coordinates are pixel centres, so pixel
//! `(u, v)` looks along the ray `((u - cx) / fx, (v - cy) / fy, 1)`. Distortion is ignored: an
//! aligned (registered) depth image is published rectified, and `K` is then exact.

use super::DepthError;

/// Intrinsics and size of one camera (colour or depth).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraModel {
    pub width: u32,
    pub height: u32,
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl CameraModel {
    /// Checks the values a `CameraInfo` carries: `k` is row-major 3x3.
    pub fn from_k(k: &[f64], width: u32, height: u32) -> Result<Self, DepthError> {
        if k.len() != 9 {
            return Err(DepthError::KLength(k.len()));
        }
        Self::new(width, height, k[0], k[4], k[2], k[5])
    }

    pub fn new(
        width: u32,
        height: u32,
        fx: f64,
        fy: f64,
        cx: f64,
        cy: f64,
    ) -> Result<Self, DepthError> {
        if width == 0 || height == 0 {
            return Err(DepthError::EmptySize {
                what: "camera_info",
                width,
                height,
            });
        }
        let focal_ok = |f: f64| f.is_finite() && f > 0.0;
        if !focal_ok(fx) || !focal_ok(fy) {
            return Err(DepthError::FocalLength { fx, fy });
        }
        if !cx.is_finite() || !cy.is_finite() {
            return Err(DepthError::PrincipalPoint { cx, cy });
        }
        Ok(Self {
            width,
            height,
            fx,
            fy,
            cx,
            cy,
        })
    }

    /// The same camera resampled to `width` x `height` (same field of view), as a driver's
    /// aligned depth at another resolution than colour is. Pixel edges stay on pixel edges:
    /// `u' + 0.5 = (u + 0.5) * s`.
    pub fn scaled_to(&self, width: u32, height: u32) -> Result<Self, DepthError> {
        if width == 0 || height == 0 {
            return Err(DepthError::EmptySize {
                what: "scaled camera",
                width,
                height,
            });
        }
        let sx = f64::from(width) / f64::from(self.width);
        let sy = f64::from(height) / f64::from(self.height);
        Self::new(
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
        )
    }

    /// The ray through pixel `(u, v)`, scaled to z = 1.
    pub fn ray(&self, u: f64, v: f64) -> [f64; 2] {
        [(u - self.cx) / self.fx, (v - self.cy) / self.fy]
    }

    /// Where a z = 1 ray meets this camera's image plane, in (sub)pixels.
    pub fn project_ray(&self, ray: [f64; 2]) -> [f64; 2] {
        [self.fx * ray[0] + self.cx, self.fy * ray[1] + self.cy]
    }

    /// The 3D point at depth `z` (metres) seen by pixel `(u, v)`, in this camera's optical frame.
    pub fn back_project(&self, u: f64, v: f64, z: f64) -> [f64; 3] {
        let [x, y] = self.ray(u, v);
        [x * z, y * z, z]
    }
}

/// Maps pixels of one camera to pixels of another that shares its optical frame (an aligned /
/// registered depth image and its colour image), through both `K`s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelMap {
    /// `colour_u = a_u * depth_u + b_u`, likewise for v.
    a_u: f64,
    b_u: f64,
    a_v: f64,
    b_v: f64,
}

impl PixelMap {
    pub fn new(from: &CameraModel, to: &CameraModel) -> Self {
        let a_u = to.fx / from.fx;
        let a_v = to.fy / from.fy;
        Self {
            a_u,
            b_u: to.cx - a_u * from.cx,
            a_v,
            b_v: to.cy - a_v * from.cy,
        }
    }

    /// The continuous coordinates in the target camera.
    pub fn map(&self, u: f64, v: f64) -> [f64; 2] {
        [self.a_u * u + self.b_u, self.a_v * v + self.b_v]
    }

    /// The target pixel whose centre is nearest, or `None` outside `width` x `height`.
    pub fn map_pixel(
        &self,
        u: usize,
        v: usize,
        width: usize,
        height: usize,
    ) -> Option<(usize, usize)> {
        Some((self.map_column(u, width)?, self.map_row(v, height)?))
    }

    /// The target column nearest to source column `u` (the map is separable).
    pub fn map_column(&self, u: usize, width: usize) -> Option<usize> {
        nearest(self.a_u * u as f64 + self.b_u, width)
    }

    /// The target row nearest to source row `v`.
    pub fn map_row(&self, v: usize, height: usize) -> Option<usize> {
        nearest(self.a_v * v as f64 + self.b_v, height)
    }

    /// The inverse map (target -> source).
    pub fn inverse(&self) -> Self {
        Self {
            a_u: 1.0 / self.a_u,
            b_u: -self.b_u / self.a_u,
            a_v: 1.0 / self.a_v,
            b_v: -self.b_v / self.a_v,
        }
    }
}

fn nearest(x: f64, n: usize) -> Option<usize> {
    let x = x.round();
    (x >= 0.0 && x < n as f64).then_some(x as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_intrinsics_are_typed_errors() {
        let k = [0.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0];
        assert!(matches!(
            CameraModel::from_k(&k, 640, 480),
            Err(DepthError::FocalLength { fx, .. }) if fx == 0.0
        ));
        assert_eq!(
            CameraModel::from_k(&k[..4], 640, 480),
            Err(DepthError::KLength(4))
        );
        let k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0];
        assert!(matches!(
            CameraModel::from_k(&k, 0, 480),
            Err(DepthError::EmptySize { .. })
        ));
        let k = [500.0, 0.0, f64::NAN, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0];
        assert!(matches!(
            CameraModel::from_k(&k, 640, 480),
            Err(DepthError::PrincipalPoint { .. })
        ));
    }

    #[test]
    fn half_resolution_maps_pixel_blocks_onto_one_pixel() {
        let c = CameraModel::new(640, 480, 500.0, 500.0, 319.5, 239.5).unwrap();
        let d = c.scaled_to(320, 240).unwrap();
        assert_eq!((d.fx, d.cx, d.cy), (250.0, 159.5, 119.5));
        let m = PixelMap::new(&d, &c);
        // Depth pixel 10 covers colour pixels 20 and 21: its centre is at 20.5.
        assert_eq!(m.map(10.0, 0.0)[0], 20.5);
        let back = m.inverse().map(20.5, 0.5);
        assert!((back[0] - 10.0).abs() < 1e-12 && back[1].abs() < 1e-12);
        assert_eq!(m.map_pixel(319, 239, 640, 480), Some((639, 479)));
        assert_eq!(m.map_pixel(400, 0, 640, 480), None);
    }
}
