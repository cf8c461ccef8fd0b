//! The pinhole camera: intrinsics and its pose, in the ROS optical-frame convention (x right,
//! y down, z forward), as `sensor_msgs/CameraInfo` describes a rectified, distortion-free image.

use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, Translation3, UnitQuaternion, Vector3};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub width: u32,
    pub height: u32,
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl Intrinsics {
    /// Row-major K, as in `CameraInfo.k`.
    pub fn k(&self) -> [f64; 9] {
        [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]
    }

    /// The unit direction (optical frame) of the ray through pixel centre (u + 0.5, v + 0.5):
    /// pixel (0, 0) covers [0, 1) x [0, 1), as in OpenCV and ROS.
    pub fn ray(&self, u: u32, v: u32) -> Vector3<f64> {
        Vector3::new(
            (f64::from(u) + 0.5 - self.cx) / self.fx,
            (f64::from(v) + 0.5 - self.cy) / self.fy,
            1.0,
        )
        .normalize()
    }

    /// The pixel coordinates of an optical-frame point in front of the camera.
    pub fn project(&self, p: &Point3<f64>) -> Option<(f64, f64)> {
        (p.z > 1e-9).then(|| (self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    pub intrinsics: Intrinsics,
    /// Optical frame -> world.
    pub world_from_camera: Isometry3<f64>,
}

/// The optical-frame pose of a camera at `eye` looking at `target`, with the image's "up" towards
/// world +z. Fails when the view is straight up or down (no roll is defined then).
pub fn look_at(eye: Point3<f64>, target: Point3<f64>) -> Result<Isometry3<f64>> {
    let z = (target - eye)
        .try_normalize(1e-12)
        .ok_or_else(|| Error::Invalid("camera eye and target coincide".into()))?;
    let x = z
        .cross(&Vector3::z())
        .try_normalize(1e-9)
        .ok_or_else(|| Error::Invalid("camera looks straight up or down".into()))?;
    let y = z.cross(&x);
    let r = Rotation3::from_matrix_unchecked(Matrix3::from_columns(&[x, y, z]));
    Ok(Isometry3::from_parts(
        Translation3::from(eye.coords),
        UnitQuaternion::from_rotation_matrix(&r),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_at_puts_the_target_on_the_optical_axis_and_up_up() {
        let pose = look_at(Point3::new(0.0, -1.0, 1.0), Point3::origin()).unwrap();
        let target_cam = pose.inverse() * Point3::origin();
        assert!(target_cam.x.abs() < 1e-12 && target_cam.y.abs() < 1e-12);
        assert!((target_cam.z - 2f64.sqrt()).abs() < 1e-12);
        // A point above the target appears above it in the image (smaller y, optical y is down).
        let above = pose.inverse() * Point3::new(0.0, 0.0, 0.1);
        assert!(above.y < 0.0);
        // World +x is image right.
        let right = pose.inverse() * Point3::new(0.1, 0.0, 0.0);
        assert!(right.x > 0.0);
    }

    #[test]
    fn ray_and_project_agree() {
        let k = Intrinsics {
            width: 64,
            height: 48,
            fx: 50.0,
            fy: 52.0,
            cx: 31.0,
            cy: 25.0,
        };
        let d = k.ray(10, 40);
        let (u, v) = k.project(&Point3::from(d * 3.0)).unwrap();
        assert!((u - 10.5).abs() < 1e-9 && (v - 40.5).abs() < 1e-9);
    }
}
