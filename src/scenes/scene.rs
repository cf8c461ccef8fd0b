//! What a frame shows: the camera, the table and wall, the light and the objects; and the
//! sampling of an environment and of a still scene from a seeded RNG.

use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};
use rand::Rng;

use super::camera::{look_at, Camera, Intrinsics};
use super::primitives::Shape;
use crate::error::Result;
use crate::output::labels::{class_by_name, CATEGORY_IDS};

/// The object classes: a primitive each, named after the COCO category it stands for (so a model
/// trained on the scenes speaks COCO's label map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A cuboid, flat on the table.
    Box,
    /// A cylinder, upright or lying on its side.
    Can,
    /// A sphere.
    Ball,
    /// A cone, upright.
    Cone,
    /// A torus, lying flat.
    Ring,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Box,
        Class::Can,
        Class::Ball,
        Class::Cone,
        Class::Ring,
    ];

    /// The COCO category name.
    pub fn coco_name(self) -> &'static str {
        match self {
            Class::Box => "book",
            Class::Can => "cup",
            Class::Ball => "sports ball",
            Class::Cone => "carrot",
            Class::Ring => "donut",
        }
    }

    /// The COCO category id of [`Self::coco_name`] (from the label map, the one source).
    pub fn category_id(self) -> u32 {
        class_by_name(self.coco_name()).map_or(0, |i| CATEGORY_IDS[i])
    }

    /// A random size of this class's primitive (metres, tabletop objects), and whether a can
    /// lies on its side.
    fn sample_shape(self, rng: &mut impl Rng) -> (Shape, bool) {
        match self {
            Class::Box => (
                Shape::Cuboid {
                    half: [
                        rng.random_range(0.04..0.09),
                        rng.random_range(0.03..0.065),
                        rng.random_range(0.015..0.045),
                    ],
                },
                false,
            ),
            Class::Can => (
                Shape::Cylinder {
                    radius: rng.random_range(0.028..0.048),
                    half_height: rng.random_range(0.04..0.07),
                },
                rng.random_bool(0.25),
            ),
            Class::Ball => (
                Shape::Sphere {
                    radius: rng.random_range(0.03..0.06),
                },
                false,
            ),
            Class::Cone => (
                Shape::Cone {
                    radius: rng.random_range(0.03..0.05),
                    half_height: rng.random_range(0.04..0.075),
                },
                false,
            ),
            Class::Ring => (
                Shape::Torus {
                    major: rng.random_range(0.035..0.06),
                    minor: rng.random_range(0.012..0.022),
                },
                false,
            ),
        }
    }
}

/// A linear-RGB colour, components in [0, 1].
pub type Rgb = [f64; 3];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub class: Class,
    pub shape: Shape,
    /// Local (bounding-box centred) frame -> world.
    pub pose: Isometry3<f64>,
    pub albedo: Rgb,
    /// Strength of the specular highlight.
    pub gloss: f64,
    /// Stable over a sequence; unique within a frame.
    pub track_id: u32,
}

/// How an object lies on the table, given where and how it is turned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub x: f64,
    pub y: f64,
    pub yaw: f64,
    /// A cylinder on its side (its axis horizontal).
    pub lying: bool,
    /// Rotation about the object's own axis (a rolling can, a spinning ball).
    pub spin: f64,
}

/// The pose of `shape` resting on the table plane z = 0.
pub fn resting_pose(shape: &Shape, p: &Placement) -> Isometry3<f64> {
    let yaw = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), p.yaw);
    let spin = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), p.spin);
    let half = shape.half_extents();
    let (rot, z) = if p.lying {
        // Local z (the axis) turned onto world x, then yawed; the centre is a radius up.
        let lay = UnitQuaternion::from_axis_angle(&Vector3::y_axis(), std::f64::consts::FRAC_PI_2);
        (yaw * lay * spin, half.x)
    } else {
        (yaw * spin, half.z)
    };
    Isometry3::from_parts(Translation3::new(p.x, p.y, z), rot)
}

/// The procedural table top: wood-like grain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Table {
    pub base: Rgb,
    pub grain: Rgb,
    /// Grain lines per metre.
    pub grain_freq: f64,
    /// Grain direction (radians from world x).
    pub grain_angle: f64,
    pub seed: u32,
}

/// The background: a tiled wall, the plane y = `y`, facing the camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wall {
    pub y: f64,
    pub base: Rgb,
    pub grout: Rgb,
    /// Tile side (m).
    pub tile: f64,
    pub seed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Light {
    pub position: Point3<f64>,
    pub colour: Rgb,
    /// The fraction of light reaching surfaces in shadow.
    pub ambient: f64,
}

/// Where the camera looks from: spherical coordinates about a target on the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub target: Point3<f64>,
    pub distance: f64,
    /// Radians above the table plane.
    pub elevation: f64,
    /// Radians about world z, 0 looking along +y.
    pub azimuth: f64,
}

impl View {
    pub fn pose(&self) -> Result<Isometry3<f64>> {
        let (ce, se) = (self.elevation.cos(), self.elevation.sin());
        let (ca, sa) = (self.azimuth.cos(), self.azimuth.sin());
        let eye = self.target + self.distance * Vector3::new(sa * ce, -ca * ce, se);
        look_at(eye, self.target)
    }
}

/// Everything but the objects: what a sequence keeps from frame to frame (the view moves).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Environment {
    pub intrinsics: Intrinsics,
    pub view: View,
    pub table: Table,
    pub wall: Wall,
    pub light: Light,
    /// Standard deviation of the sensor's noise, in 8-bit grey levels.
    pub noise_sigma: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub camera: Camera,
    pub env: Environment,
    pub objects: Vec<Object>,
    /// Seeds the per-pixel sensor noise (differs per frame).
    pub noise_seed: u64,
}

/// An HSV colour (h in turns) to linear RGB.
pub fn hsv(h: f64, s: f64, v: f64) -> Rgb {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    // sRGB-ish display values to linear light, so that shading is done in linear space.
    [(r + m).powf(2.2), (g + m).powf(2.2), (b + m).powf(2.2)]
}

/// A camera, table, wall and light, at random.
pub fn sample_environment(rng: &mut impl Rng, width: u32, height: u32) -> Environment {
    let fov = rng.random_range(55f64..66.0).to_radians();
    let fx = f64::from(width) / 2.0 / (fov / 2.0).tan();
    let intrinsics = Intrinsics {
        width,
        height,
        fx,
        fy: fx * rng.random_range(0.995..1.005),
        cx: f64::from(width) * rng.random_range(0.48..0.52),
        cy: f64::from(height) * rng.random_range(0.48..0.52),
    };
    let view = View {
        target: Point3::new(
            rng.random_range(-0.05..0.05),
            rng.random_range(-0.02..0.08),
            0.0,
        ),
        distance: rng.random_range(0.75..1.25),
        elevation: rng.random_range(32f64..62.0).to_radians(),
        azimuth: rng.random_range(-20f64..20.0).to_radians(),
    };
    let wood = rng.random_range(0.05..0.12);
    let table = Table {
        base: hsv(
            wood,
            rng.random_range(0.25..0.6),
            rng.random_range(0.45..0.8),
        ),
        grain: hsv(
            wood,
            rng.random_range(0.5..0.8),
            rng.random_range(0.25..0.45),
        ),
        grain_freq: rng.random_range(8.0..25.0),
        grain_angle: rng.random_range(-0.3..0.3),
        seed: rng.random(),
    };
    let wall = Wall {
        y: rng.random_range(0.45..0.8),
        base: hsv(
            rng.random(),
            rng.random_range(0.0..0.25),
            rng.random_range(0.6..0.92),
        ),
        grout: hsv(0.0, 0.0, rng.random_range(0.3..0.5)),
        tile: rng.random_range(0.08..0.2),
        seed: rng.random(),
    };
    let warmth = rng.random_range(-0.08..0.08);
    let power = rng.random_range(0.85..1.2);
    let light = Light {
        position: Point3::new(
            rng.random_range(-0.7..0.7),
            rng.random_range(-0.6..0.2),
            rng.random_range(0.9..1.6),
        ),
        colour: [power * (1.0 + warmth), power, power * (1.0 - warmth)],
        ambient: rng.random_range(0.18..0.38),
    };
    Environment {
        intrinsics,
        view,
        table,
        wall,
        light,
        noise_sigma: rng.random_range(1.0..3.5),
    }
}

/// A random object of a random class, not yet placed, with its size and colour.
pub fn sample_object(rng: &mut impl Rng) -> (Class, Shape, bool, Rgb, f64) {
    let class = Class::ALL[rng.random_range(0..Class::ALL.len())];
    let (shape, lying) = class.sample_shape(rng);
    let albedo = hsv(
        rng.random(),
        rng.random_range(0.35..0.9),
        rng.random_range(0.35..0.95),
    );
    (class, shape, lying, albedo, rng.random_range(0.0..0.5))
}

/// Radius of the object's footprint on the table (a circle holding it, any yaw).
pub fn footprint(shape: &Shape, lying: bool) -> f64 {
    let h = shape.half_extents();
    if lying {
        (h.z * h.z + h.x * h.x).sqrt()
    } else {
        (h.x * h.x + h.y * h.y).sqrt()
    }
}

/// A still scene: 3 to 8 objects on the table, footprints apart, around the camera's target.
pub fn sample_still(rng: &mut impl Rng, width: u32, height: u32, noise_seed: u64) -> Result<Scene> {
    let env = sample_environment(rng, width, height);
    let n = rng.random_range(3..=8);
    let mut objects: Vec<Object> = Vec::with_capacity(n);
    let mut placed: Vec<(f64, f64, f64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let (class, shape, lying, albedo, gloss) = sample_object(rng);
        let r = footprint(&shape, lying);
        // Rejection sampling; an object that finds no free spot in 50 tries is left out.
        for _ in 0..50 {
            let x = env.view.target.x + rng.random_range(-0.32..0.32);
            let y = env.view.target.y + rng.random_range(-0.22..0.22);
            if placed
                .iter()
                .all(|&(px, py, pr)| (px - x).hypot(py - y) > pr + r + 0.005)
            {
                let placement = Placement {
                    x,
                    y,
                    yaw: rng.random_range(0.0..std::f64::consts::TAU),
                    lying,
                    spin: rng.random_range(0.0..std::f64::consts::TAU),
                };
                placed.push((x, y, r));
                objects.push(Object {
                    class,
                    shape,
                    pose: resting_pose(&shape, &placement),
                    albedo,
                    gloss,
                    track_id: objects.len() as u32 + 1,
                });
                break;
            }
        }
    }
    Ok(Scene {
        camera: Camera {
            intrinsics: env.intrinsics,
            world_from_camera: env.view.pose()?,
        },
        env,
        objects,
        noise_seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::labels::CLASS_NAMES;

    #[test]
    fn every_class_is_a_coco_category() {
        for c in Class::ALL {
            assert!(CLASS_NAMES.contains(&c.coco_name()), "{c:?}");
            assert_ne!(c.category_id(), 0, "{c:?}");
        }
    }

    #[test]
    fn resting_objects_touch_the_table() {
        let shapes = [
            (Shape::Sphere { radius: 0.05 }, false, 0.05),
            (
                Shape::Cylinder {
                    radius: 0.03,
                    half_height: 0.07,
                },
                true,
                0.03,
            ),
            (
                Shape::Cylinder {
                    radius: 0.03,
                    half_height: 0.07,
                },
                false,
                0.07,
            ),
        ];
        for (shape, lying, centre_z) in shapes {
            let p = Placement {
                x: 0.1,
                y: 0.2,
                yaw: 0.7,
                lying,
                spin: 0.3,
            };
            let pose = resting_pose(&shape, &p);
            assert!((pose.translation.z - centre_z).abs() < 1e-12);
            // The local axis is horizontal when lying, vertical otherwise.
            let axis = pose.rotation * Vector3::z();
            assert!((axis.z.abs() - if lying { 0.0 } else { 1.0 }).abs() < 1e-12);
        }
    }
}
