//! What a set of 3D points says about the object: centroid, axis-aligned box, and the oriented box
//! along the points' principal axes (PCA of their covariance through nalgebra's
//! `SymmetricEigen`), all in the frame the points are in.

use nalgebra::{Matrix3, Rotation3, SymmetricEigen, UnitQuaternion, Vector3};

/// Axis-aligned box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aabb {
    pub min: [f64; 3],
    pub max: [f64; 3],
}

impl Aabb {
    pub fn center(&self) -> [f64; 3] {
        std::array::from_fn(|i| (self.min[i] + self.max[i]) / 2.0)
    }
    pub fn size(&self) -> [f64; 3] {
        std::array::from_fn(|i| self.max[i] - self.min[i])
    }
}

/// Box along the principal axes: `rotation` maps box axes to the frame (columns = axes, largest
/// variance first, right-handed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrientedBox {
    pub center: [f64; 3],
    pub size: [f64; 3],
    /// Unit quaternion `[x, y, z, w]` (geometry_msgs order).
    pub orientation: [f64; 4],
    /// Variances along the axes (the covariance's eigenvalues), descending.
    pub variances: [f64; 3],
}

/// Summary of one instance's points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointStats {
    pub count: usize,
    pub centroid: [f64; 3],
    pub aabb: Aabb,
    pub obb: OrientedBox,
}

impl PointStats {
    /// `None` for no points. One point gives a zero-size box.
    pub fn from_points(points: &[[f32; 3]]) -> Option<Self> {
        if points.is_empty() {
            return None;
        }
        let n = points.len() as f64;
        let v = |p: &[f32; 3]| Vector3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
        let mean = points.iter().map(v).sum::<Vector3<f64>>() / n;
        let mut cov = Matrix3::zeros();
        let mut min = [f64::INFINITY; 3];
        let mut max = [f64::NEG_INFINITY; 3];
        for p in points {
            let q = v(p);
            let d = q - mean;
            cov += d * d.transpose();
            for i in 0..3 {
                min[i] = min[i].min(q[i]);
                max[i] = max[i].max(q[i]);
            }
        }
        cov /= n;
        let obb = oriented_box(points, &mean, &cov);
        Some(Self {
            count: points.len(),
            centroid: [mean.x, mean.y, mean.z],
            aabb: Aabb { min, max },
            obb,
        })
    }
}

fn oriented_box(points: &[[f32; 3]], mean: &Vector3<f64>, cov: &Matrix3<f64>) -> OrientedBox {
    let eig = SymmetricEigen::new(*cov);
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut axes = Matrix3::from_columns(&[
        eig.eigenvectors.column(order[0]).into_owned(),
        eig.eigenvectors.column(order[1]).into_owned(),
        eig.eigenvectors.column(order[2]).into_owned(),
    ]);
    if axes.determinant() < 0.0 {
        axes.set_column(2, &(-axes.column(2)));
    }
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in points {
        let d = Vector3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2])) - mean;
        let local = axes.transpose() * d;
        for i in 0..3 {
            lo[i] = lo[i].min(local[i]);
            hi[i] = hi[i].max(local[i]);
        }
    }
    let mid = Vector3::new(
        (lo[0] + hi[0]) / 2.0,
        (lo[1] + hi[1]) / 2.0,
        (lo[2] + hi[2]) / 2.0,
    );
    let center = mean + axes * mid;
    let rot = Rotation3::from_matrix_unchecked(axes);
    let q = UnitQuaternion::from_rotation_matrix(&rot);
    OrientedBox {
        center: [center.x, center.y, center.z],
        size: std::array::from_fn(|i| hi[i] - lo[i]),
        orientation: [q.i, q.j, q.k, q.w],
        variances: std::array::from_fn(|i| eig.eigenvalues[order[i]].max(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0.4 x 0.2 x 0.1 grid of points rotated 30 degrees about z: the oriented box recovers the
    /// extents and the rotation, the axis-aligned one is larger.
    #[test]
    fn pca_box_of_a_rotated_slab() {
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let mut pts = Vec::new();
        for i in 0..=40 {
            for j in 0..=20 {
                for k in 0..=10 {
                    let (x, y, z) = (
                        -0.2 + 0.01 * f64::from(i),
                        -0.1 + 0.01 * f64::from(j),
                        -0.05 + 0.01 * f64::from(k),
                    );
                    pts.push([
                        (1.0 + c * x - s * y) as f32,
                        (0.5 + s * x + c * y) as f32,
                        (2.0 + z) as f32,
                    ]);
                }
            }
        }
        let st = PointStats::from_points(&pts).unwrap();
        for (got, want) in st.centroid.iter().zip([1.0, 0.5, 2.0]) {
            assert!((got - want).abs() < 1e-5, "{:?}", st.centroid);
        }
        for (got, want) in st.obb.size.iter().zip([0.4, 0.2, 0.1]) {
            assert!((got - want).abs() < 1e-5, "{:?}", st.obb.size);
        }
        // The first axis is the box's long side: +-(cos 30, sin 30, 0).
        let q = st.obb.orientation;
        let uq = UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q[3], q[0], q[1], q[2]));
        let axis0 = uq * Vector3::x();
        assert!(
            (axis0.x.abs() - c).abs() < 1e-6 && (axis0.y.abs() - s).abs() < 1e-6,
            "{axis0}"
        );
        assert!(axis0.x * axis0.y > 0.0);
        let size = st.aabb.size();
        assert!((size[0] - (0.4 * c + 0.2 * s)).abs() < 1e-5, "{size:?}");
        assert!(PointStats::from_points(&[]).is_none());
    }
}
