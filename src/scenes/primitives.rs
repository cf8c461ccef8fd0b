//! The solid primitives objects are made of, each in its own local frame: centred on its bounding
//! box, symmetry axis along local z. Rays are intersected analytically (sphere, box, cylinder,
//! cone) or by sphere tracing the signed distance (torus, whose exact intersection is a quartic).

use nalgebra::{Point3, Vector3};

/// Ray parameters below this are the surface the ray starts on (shadow rays start on a surface).
const T_MIN: f64 = 1e-7;
/// Sphere tracing stops this close to the torus surface (metres: far below a pixel and a mm).
const TRACE_EPS: f64 = 1e-6;
/// Sphere-tracing step limit; a ray still outside after this many steps grazes the torus and is
/// counted as a miss.
const TRACE_STEPS: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Half sizes along the local axes.
    Cuboid {
        half: [f64; 3],
    },
    /// Axis along z, capped at z = +-half_height.
    Cylinder {
        radius: f64,
        half_height: f64,
    },
    Sphere {
        radius: f64,
    },
    /// Base of `radius` at z = -half_height, apex at z = +half_height.
    Cone {
        radius: f64,
        half_height: f64,
    },
    /// A ring lying in the local xy plane: `major` from the axis to the tube's centre, `minor`
    /// the tube's radius.
    Torus {
        major: f64,
        minor: f64,
    },
}

/// A ray's nearest hit: the ray parameter and the outward unit normal (local frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub t: f64,
    pub normal: Vector3<f64>,
}

impl Shape {
    /// The name written to the 3D ground truth.
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Cuboid { .. } => "box",
            Shape::Cylinder { .. } => "cylinder",
            Shape::Sphere { .. } => "sphere",
            Shape::Cone { .. } => "cone",
            Shape::Torus { .. } => "torus",
        }
    }

    /// Half sizes of the tight local bounding box.
    pub fn half_extents(&self) -> Vector3<f64> {
        match *self {
            Shape::Cuboid { half } => Vector3::new(half[0], half[1], half[2]),
            Shape::Cylinder {
                radius,
                half_height,
            }
            | Shape::Cone {
                radius,
                half_height,
            } => Vector3::new(radius, radius, half_height),
            Shape::Sphere { radius } => Vector3::new(radius, radius, radius),
            Shape::Torus { major, minor } => Vector3::new(major + minor, major + minor, minor),
        }
    }

    /// Radius of a sphere about the local origin holding the whole shape (the cheap reject test).
    pub fn bounding_radius(&self) -> f64 {
        match *self {
            Shape::Sphere { radius } => radius,
            Shape::Torus { major, minor } => major + minor,
            _ => self.half_extents().norm(),
        }
    }

    /// The nearest intersection with `t > T_MIN` of the ray `o + t d` (local frame; `d` a unit
    /// vector, so `t` is a distance).
    pub fn intersect(&self, o: &Point3<f64>, d: &Vector3<f64>) -> Option<Hit> {
        match *self {
            Shape::Sphere { radius } => sphere(o, d, radius),
            Shape::Cuboid { half } => cuboid(o, d, half),
            Shape::Cylinder {
                radius,
                half_height,
            } => cylinder(o, d, radius, half_height),
            Shape::Cone {
                radius,
                half_height,
            } => cone(o, d, radius, half_height),
            Shape::Torus { major, minor } => torus(o, d, major, minor),
        }
    }
}

/// Roots of `a t^2 + 2 b t + c`, smaller first.
fn quadratic(a: f64, b: f64, c: f64) -> Option<(f64, f64)> {
    if a.abs() < 1e-15 {
        if b.abs() < 1e-15 {
            return None;
        }
        let t = -c / (2.0 * b);
        return Some((t, t));
    }
    let disc = b * b - a * c;
    if disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let (t0, t1) = ((-b - s) / a, (-b + s) / a);
    Some(if t0 <= t1 { (t0, t1) } else { (t1, t0) })
}

/// Keeps the nearer of two optional hits.
fn nearer(a: Option<Hit>, b: Option<Hit>) -> Option<Hit> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.t <= y.t { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn sphere(o: &Point3<f64>, d: &Vector3<f64>, r: f64) -> Option<Hit> {
    let oc = o.coords;
    let (t0, t1) = quadratic(d.dot(d), oc.dot(d), oc.dot(&oc) - r * r)?;
    let t = if t0 > T_MIN { t0 } else { t1 };
    (t > T_MIN).then(|| Hit {
        t,
        normal: (oc + d * t) / r,
    })
}

/// Slab test; the normal is that of the slab entered last.
fn cuboid(o: &Point3<f64>, d: &Vector3<f64>, half: [f64; 3]) -> Option<Hit> {
    let (mut t_near, mut t_far) = (f64::NEG_INFINITY, f64::INFINITY);
    let (mut near_axis, mut far_axis) = (0usize, 0usize);
    for k in 0..3 {
        if d[k].abs() < 1e-15 {
            if o[k].abs() > half[k] {
                return None;
            }
            continue;
        }
        let (a, b) = ((-half[k] - o[k]) / d[k], (half[k] - o[k]) / d[k]);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        if lo > t_near {
            t_near = lo;
            near_axis = k;
        }
        if hi < t_far {
            t_far = hi;
            far_axis = k;
        }
    }
    if t_near > t_far || t_far <= T_MIN {
        return None;
    }
    let (t, axis) = if t_near > T_MIN {
        (t_near, near_axis)
    } else {
        (t_far, far_axis)
    };
    let p = o.coords + d * t;
    let mut normal = Vector3::zeros();
    normal[axis] = p[axis].signum();
    Some(Hit { t, normal })
}

/// A cap disc at height `z` of radius `r`, facing `sign` (+1 up, -1 down).
fn cap(o: &Point3<f64>, d: &Vector3<f64>, z: f64, r: f64, sign: f64) -> Option<Hit> {
    if d.z.abs() < 1e-15 {
        return None;
    }
    let t = (z - o.z) / d.z;
    if t <= T_MIN {
        return None;
    }
    let (x, y) = (o.x + t * d.x, o.y + t * d.y);
    (x * x + y * y <= r * r).then(|| Hit {
        t,
        normal: Vector3::new(0.0, 0.0, sign),
    })
}

/// The first root above T_MIN of a side surface whose hit height must lie in [-h, h].
fn side(
    o: &Point3<f64>,
    d: &Vector3<f64>,
    roots: (f64, f64),
    h: f64,
    normal_at: impl Fn(&Vector3<f64>) -> Vector3<f64>,
) -> Option<Hit> {
    [roots.0, roots.1].into_iter().find_map(|t| {
        let p = o.coords + d * t;
        (t > T_MIN && p.z.abs() <= h).then(|| Hit {
            t,
            normal: normal_at(&p),
        })
    })
}

fn cylinder(o: &Point3<f64>, d: &Vector3<f64>, r: f64, h: f64) -> Option<Hit> {
    let a = d.x * d.x + d.y * d.y;
    let wall = quadratic(a, o.x * d.x + o.y * d.y, o.x * o.x + o.y * o.y - r * r)
        .and_then(|roots| side(o, d, roots, h, |p| Vector3::new(p.x, p.y, 0.0) / r));
    nearer(wall, nearer(cap(o, d, h, r, 1.0), cap(o, d, -h, r, -1.0)))
}

/// Side: x^2 + y^2 = k^2 (h - z)^2 with k = r / 2h, for -h <= z <= h; base cap at z = -h.
fn cone(o: &Point3<f64>, d: &Vector3<f64>, r: f64, h: f64) -> Option<Hit> {
    let k2 = (r / (2.0 * h)).powi(2);
    let hz = h - o.z;
    let a = d.x * d.x + d.y * d.y - k2 * d.z * d.z;
    let b = o.x * d.x + o.y * d.y + k2 * hz * d.z;
    let c = o.x * o.x + o.y * o.y - k2 * hz * hz;
    let wall = quadratic(a, b, c).and_then(|roots| {
        side(o, d, roots, h, |p| {
            Vector3::new(p.x, p.y, k2 * (h - p.z)).normalize()
        })
    });
    nearer(wall, cap(o, d, -h, r, -1.0))
}

fn torus_sdf(p: &Vector3<f64>, major: f64, minor: f64) -> f64 {
    let q = (p.x * p.x + p.y * p.y).sqrt() - major;
    (q * q + p.z * p.z).sqrt() - minor
}

/// Sphere tracing between the ray's entry into and exit from the bounding sphere.
fn torus(o: &Point3<f64>, d: &Vector3<f64>, major: f64, minor: f64) -> Option<Hit> {
    let bound = major + minor;
    let oc = o.coords;
    let (t_in, t_out) = quadratic(1.0, oc.dot(d), oc.dot(&oc) - bound * bound)?;
    let mut t = t_in.max(T_MIN);
    // A ray that starts on the torus (a shadow ray) must leave it before looking for a hit.
    if torus_sdf(&(oc + d * t), major, minor) < TRACE_EPS * 4.0 {
        t += minor * 1e-3;
    }
    for _ in 0..TRACE_STEPS {
        if t > t_out {
            return None;
        }
        let p = oc + d * t;
        let s = torus_sdf(&p, major, minor);
        if s < TRACE_EPS {
            let rho = (p.x * p.x + p.y * p.y).sqrt().max(1e-12);
            let q = rho - major;
            let n = Vector3::new(q * p.x / rho, q * p.y / rho, p.z);
            return Some(Hit {
                t,
                normal: n.try_normalize(1e-15).unwrap_or(Vector3::z()),
            });
        }
        t += s;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down_from(x: f64, y: f64) -> (Point3<f64>, Vector3<f64>) {
        (Point3::new(x, y, 1.0), Vector3::new(0.0, 0.0, -1.0))
    }

    #[test]
    fn straight_down_hits_the_top_surface() {
        // Expected heights are the shapes' definitions: top of the sphere, box, cylinder cap;
        // the cone's height at radius 0.05 is h - 2h * 0.05 / r; the torus tube's top.
        let cases = [
            (Shape::Sphere { radius: 0.1 }, 0.0, 0.1),
            (
                Shape::Cuboid {
                    half: [0.1, 0.2, 0.05],
                },
                0.05,
                0.05,
            ),
            (
                Shape::Cylinder {
                    radius: 0.1,
                    half_height: 0.2,
                },
                0.05,
                0.2,
            ),
            (
                Shape::Cone {
                    radius: 0.1,
                    half_height: 0.1,
                },
                0.05,
                0.0,
            ),
            (
                Shape::Torus {
                    major: 0.1,
                    minor: 0.03,
                },
                0.1,
                0.03,
            ),
        ];
        for (shape, x, top) in cases {
            let (o, d) = down_from(x, 0.0);
            let hit = shape.intersect(&o, &d).expect("hit");
            assert!((1.0 - hit.t - top).abs() < 1e-5, "{shape:?}: t {}", hit.t);
            assert!(hit.normal.z > 0.0, "{shape:?}: normal {:?}", hit.normal);
        }
    }

    #[test]
    fn misses_outside_and_through_the_ring_hole() {
        let (o, d) = down_from(0.5, 0.0);
        assert!(Shape::Sphere { radius: 0.1 }.intersect(&o, &d).is_none());
        let (o, d) = down_from(0.0, 0.0);
        let ring = Shape::Torus {
            major: 0.1,
            minor: 0.03,
        };
        assert!(ring.intersect(&o, &d).is_none());
    }

    #[test]
    fn a_ray_from_inside_finds_the_far_side() {
        let o = Point3::origin();
        let d = Vector3::x();
        let hit = Shape::Sphere { radius: 0.2 }.intersect(&o, &d).unwrap();
        assert!((hit.t - 0.2).abs() < 1e-12);
    }
}
