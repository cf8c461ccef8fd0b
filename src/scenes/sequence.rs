//! A moving scene: the camera sways smoothly about its view and objects slide across the table in
//! lanes (different distances from the camera, so they cross each other in the image without
//! touching), entering and leaving the view. Static objects stand among them.
//!
//! A mover travels along world x from -reach to +reach and starts over at -reach as a new object
//! (a new track id: a tracker cannot know it is the same one); `reach` is chosen so that both ends
//! are outside the view for every camera pose of the sway, so nothing pops in or out in sight.

use nalgebra::Point3;
use rand::Rng;

use super::camera::Camera;
use super::primitives::Shape;
use super::scene::{
    footprint, resting_pose, sample_environment, sample_object, Class, Environment, Object,
    Placement, Rgb, Scene, View,
};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Mover {
    class: Class,
    shape: Shape,
    lying: bool,
    albedo: Rgb,
    gloss: f64,
    lane_y: f64,
    /// x at t = 0 (static objects keep it).
    x0: f64,
    /// m/s along x; 0 for a static object.
    vx: f64,
    yaw0: f64,
    /// rad/s.
    yaw_rate: f64,
}

/// The sway of the camera: sinusoids about the base view, periods in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sway {
    azimuth_amp: f64,
    azimuth_period: f64,
    elevation_amp: f64,
    elevation_period: f64,
    distance_amp: f64,
    distance_period: f64,
    phase: f64,
}

impl Sway {
    fn view(&self, base: &View, t: f64) -> View {
        let s = |period: f64, phase: f64| (std::f64::consts::TAU * t / period + phase).sin();
        View {
            target: base.target,
            distance: base.distance * (1.0 + self.distance_amp * s(self.distance_period, 0.0)),
            elevation: base.elevation + self.elevation_amp * s(self.elevation_period, self.phase),
            azimuth: base.azimuth + self.azimuth_amp * s(self.azimuth_period, 2.0 * self.phase),
        }
    }

    /// The extreme poses of the sway (each sinusoid at -1, 0 and +1).
    fn extremes(&self, base: &View) -> Vec<View> {
        let mut out = Vec::with_capacity(27);
        for a in [-1.0, 0.0, 1.0] {
            for e in [-1.0, 0.0, 1.0] {
                for d in [-1.0, 0.0, 1.0] {
                    out.push(View {
                        target: base.target,
                        distance: base.distance * (1.0 + self.distance_amp * d),
                        elevation: base.elevation + self.elevation_amp * e,
                        azimuth: base.azimuth + self.azimuth_amp * a,
                    });
                }
            }
        }
        out
    }
}

/// A planned sequence; [`Self::frame`] gives any frame's scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    env: Environment,
    sway: Sway,
    movers: Vec<Mover>,
    reach: f64,
    fps: f64,
}

/// Whether a ball of radius `r` at `p` lies outside the image for every view.
fn out_of_view(env: &Environment, views: &[View], p: Point3<f64>, r: f64) -> Result<bool> {
    let k = &env.intrinsics;
    for v in views {
        let pc = v.pose()?.inverse() * p;
        if pc.z <= r {
            // Beside or behind the camera: outside the image only if entirely behind.
            if pc.z > -r {
                return Ok(false);
            }
            continue;
        }
        // The projected circle's radius is bounded by f r / (z - r).
        let margin = k.fx.max(k.fy) * r / (pc.z - r);
        if let Some((u, vv)) = k.project(&pc) {
            let inside_u = u + margin >= 0.0 && u - margin <= f64::from(k.width);
            let inside_v = vv + margin >= 0.0 && vv - margin <= f64::from(k.height);
            if inside_u && inside_v {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

impl Sequence {
    pub fn plan(rng: &mut impl Rng, width: u32, height: u32, fps: f64) -> Result<Self> {
        let env = sample_environment(rng, width, height);
        let sway = Sway {
            azimuth_amp: rng.random_range(3f64..9.0).to_radians(),
            azimuth_period: rng.random_range(6.0..12.0),
            elevation_amp: rng.random_range(1f64..4.0).to_radians(),
            elevation_period: rng.random_range(7.0..14.0),
            distance_amp: rng.random_range(0.0..0.06),
            distance_period: rng.random_range(8.0..16.0),
            phase: rng.random_range(0.0..std::f64::consts::TAU),
        };
        let mut movers: Vec<Mover> = Vec::new();
        // Lanes from near to far, each a footprint apart from the last, short of the wall.
        let mut y = env.view.target.y - 0.28;
        let far = env.wall.y - 0.08;
        let mut last_r = 0.0;
        let wanted = rng.random_range(4..=7);
        while movers.len() < wanted {
            let (class, shape, lying, albedo, gloss) = sample_object(rng);
            let r = footprint(&shape, lying);
            let lane = y + last_r + r + rng.random_range(0.005..0.05);
            if lane + r > far {
                break;
            }
            y = lane;
            last_r = r;
            let moving = rng.random_bool(0.7);
            let speed = if moving {
                rng.random_range(0.12..0.35) * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
            } else {
                0.0
            };
            movers.push(Mover {
                class,
                shape,
                lying,
                albedo,
                gloss,
                lane_y: lane,
                x0: 0.0,
                vx: speed,
                yaw0: rng.random_range(0.0..std::f64::consts::TAU),
                yaw_rate: rng.random_range(-0.8..0.8),
            });
        }
        // The smallest reach (0.2 m steps) at which every lane's ends are out of view.
        let views = sway.extremes(&env.view);
        let mut reach = 0.6;
        'grow: while reach < 8.0 {
            for m in &movers {
                let r = m.shape.bounding_radius();
                for x in [-reach, reach] {
                    if !out_of_view(&env, &views, Point3::new(x, m.lane_y, r), r)? {
                        reach += 0.2;
                        continue 'grow;
                    }
                }
            }
            break;
        }
        // A moving lane carries two movers half a lap apart, the first in view at the start, so
        // that the view is seldom empty however far off the ends are.
        let mut all = Vec::with_capacity(movers.len() * 2);
        for mut m in movers {
            m.x0 = env.view.target.x + rng.random_range(-0.3..0.3);
            all.push(m);
            if m.vx != 0.0 {
                let shifted = m.x0 + reach;
                all.push(Mover {
                    x0: if shifted >= reach {
                        shifted - 2.0 * reach
                    } else {
                        shifted
                    },
                    ..m
                });
            }
        }
        let movers = all;
        Ok(Sequence {
            env,
            sway,
            movers,
            reach,
            fps,
        })
    }

    /// The scene at frame `index`; `noise_seed` seeds its sensor noise.
    pub fn frame(&self, index: u64, noise_seed: u64) -> Result<Scene> {
        let t = index as f64 / self.fps;
        let view = self.sway.view(&self.env.view, t);
        let n = self.movers.len() as u32;
        let span = 2.0 * self.reach;
        let objects = self
            .movers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // Distance travelled from -reach, and how many times the mover has started over.
                let travelled = if m.vx == 0.0 {
                    m.x0 + self.reach
                } else {
                    (m.x0 + self.reach) + m.vx.abs() * t
                };
                let lap = (travelled / span).floor();
                let along = travelled - lap * span - self.reach;
                let x = if m.vx < 0.0 { -along } else { along };
                let placement = Placement {
                    x,
                    y: m.lane_y,
                    yaw: m.yaw0 + m.yaw_rate * t,
                    lying: m.lying,
                    // A lying can rolls with its travel; others turn with the yaw.
                    spin: if m.lying {
                        -m.vx * t / m.shape.half_extents().x
                    } else {
                        0.0
                    },
                };
                Object {
                    class: m.class,
                    shape: m.shape,
                    pose: resting_pose(&m.shape, &placement),
                    albedo: m.albedo,
                    gloss: m.gloss,
                    track_id: 1 + i as u32 + n * lap as u32,
                }
            })
            .collect();
        Ok(Scene {
            camera: Camera {
                intrinsics: self.env.intrinsics,
                world_from_camera: view.pose()?,
            },
            env: self.env,
            objects,
            noise_seed,
        })
    }
}
