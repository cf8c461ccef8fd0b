//! Rendering a [`Scene`] by casting one ray per pixel centre: the nearest surface wins (the
//! z-buffer of a ray caster), so each pixel belongs to exactly one object or to the table or wall.
//! Shading is Lambert plus a Blinn-Phong highlight in linear light, with hard shadows from a
//! shadow ray to the point light; then gamma and the sensor's noise. Depth is the optical-frame z
//! of the hit (what an aligned depth image holds), without noise: it is the ground truth.
//!
//! Rows are rendered in parallel (rayon); every random value is a hash of its pixel, so the bytes
//! do not depend on the thread count.

use nalgebra::{Isometry3, Point3, Vector3};
use rayon::prelude::*;

use super::scene::{Rgb, Scene};
use super::texture::{gaussian, table_albedo, wall_albedo};

/// Shadow rays start this far off the surface, along its normal (metres).
const SHADOW_BIAS: f64 = 1e-5;
/// Blinn-Phong exponent of the objects' highlight.
const SHININESS: f64 = 48.0;
/// Pixel id of a pixel showing no object.
pub const BACKGROUND: u16 = 0;

/// What one render gives: RGB bytes, depth in mm (0: no surface), and per pixel the index + 1 of
/// the visible object ([`BACKGROUND`] for table, wall or nothing); all row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Render {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub depth_mm: Vec<u16>,
    pub ids: Vec<u16>,
    /// Per object, the pixels whose ray meets it at all, hidden or not (its amodal area within
    /// the image): with its visible pixel count this says how occluded it is.
    pub amodal: Vec<u64>,
}

/// An object made ready for ray tests: world -> local pose and the world bounding sphere.
struct Prepared {
    local_from_world: Isometry3<f64>,
    centre: Point3<f64>,
    radius: f64,
}

/// Whether the ray `o + t d` (unit `d`) can meet the sphere at all for t in (0, t_max).
fn sphere_may_hit(o: &Point3<f64>, d: &Vector3<f64>, c: &Point3<f64>, r: f64, t_max: f64) -> bool {
    let oc = o - c;
    let b = oc.dot(d);
    let cc = oc.dot(&oc) - r * r;
    let disc = b * b - cc;
    disc >= 0.0 && -b + disc.sqrt() > 0.0 && -b - disc.sqrt() < t_max
}

#[derive(Clone, Copy)]
enum Surface {
    Object(usize),
    Table,
    Wall,
}

struct SurfaceHit {
    t: f64,
    normal: Vector3<f64>,
    surface: Surface,
}

fn prepare(scene: &Scene) -> Vec<Prepared> {
    scene
        .objects
        .iter()
        .map(|o| Prepared {
            local_from_world: o.pose.inverse(),
            centre: Point3::from(o.pose.translation.vector),
            radius: o.shape.bounding_radius(),
        })
        .collect()
}

/// The nearest object hit along a world ray, and each object the ray meets (for the amodal area).
fn trace_objects(
    scene: &Scene,
    prepared: &[Prepared],
    o: &Point3<f64>,
    d: &Vector3<f64>,
    t_max: f64,
    mut met: impl FnMut(usize),
) -> Option<SurfaceHit> {
    let mut best: Option<SurfaceHit> = None;
    for (i, (obj, p)) in scene.objects.iter().zip(prepared).enumerate() {
        if !sphere_may_hit(o, d, &p.centre, p.radius, t_max) {
            continue;
        }
        let lo = p.local_from_world * o;
        let ld = p.local_from_world.rotation * d;
        if let Some(hit) = obj.shape.intersect(&lo, &ld) {
            if hit.t >= t_max {
                continue;
            }
            met(i);
            if best.as_ref().is_none_or(|b| hit.t < b.t) {
                best = Some(SurfaceHit {
                    t: hit.t,
                    normal: obj.pose.rotation * hit.normal,
                    surface: Surface::Object(i),
                });
            }
        }
    }
    best
}

/// Whether any object blocks the segment from `p` to the light.
fn shadowed(
    scene: &Scene,
    prepared: &[Prepared],
    p: &Point3<f64>,
    to_light: &Vector3<f64>,
    dist: f64,
) -> bool {
    trace_objects(scene, prepared, p, to_light, dist, |_| {}).is_some()
}

fn mul(a: Rgb, b: Rgb) -> Rgb {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

/// Linear light to an 8-bit display value with gamma 2.2, plus noise.
fn encode(v: f64, noise: f64) -> u8 {
    let g = v.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0 + noise;
    g.round().clamp(0.0, 255.0) as u8
}

/// One pixel's colour (linear), depth (m, 0 for none) and visible object.
fn shade_pixel(
    scene: &Scene,
    prepared: &[Prepared],
    u: u32,
    v: u32,
    met: impl FnMut(usize),
) -> (Rgb, f64, u16) {
    let cam = &scene.camera;
    let ray_cam = cam.intrinsics.ray(u, v);
    let eye = Point3::from(cam.world_from_camera.translation.vector);
    let d = cam.world_from_camera.rotation * ray_cam;
    let env = &scene.env;

    let mut best = trace_objects(scene, prepared, &eye, &d, f64::INFINITY, met);
    let mut consider = |t: f64, normal: Vector3<f64>, surface: Surface| {
        if t > 0.0 && best.as_ref().is_none_or(|b| t < b.t) {
            best = Some(SurfaceHit { t, normal, surface });
        }
    };
    if d.z < -1e-12 {
        consider(-eye.z / d.z, Vector3::z(), Surface::Table);
    }
    if d.y > 1e-12 {
        consider((env.wall.y - eye.y) / d.y, -Vector3::y(), Surface::Wall);
    }
    let Some(hit) = best else {
        // Nothing but the void above the wall: a dim grey, no depth.
        return ([0.05, 0.05, 0.05], 0.0, BACKGROUND);
    };
    let p = eye + d * hit.t;
    let (albedo, gloss, id) = match hit.surface {
        Surface::Object(i) => {
            let o = &scene.objects[i];
            (o.albedo, o.gloss, i as u16 + 1)
        }
        Surface::Table => (table_albedo(&env.table, p.x, p.y), 0.05, BACKGROUND),
        Surface::Wall => (wall_albedo(&env.wall, p.x, p.z), 0.0, BACKGROUND),
    };
    let n = hit.normal;
    let to_light = env.light.position - p;
    let dist = to_light.norm();
    let l = to_light / dist;
    let lambert = n.dot(&l).max(0.0);
    let lit = if lambert > 0.0 && !shadowed(scene, prepared, &(p + n * SHADOW_BIAS), &l, dist) {
        1.0
    } else {
        0.0
    };
    let a = env.light.ambient;
    let diffuse = a + (1.0 - a) * lambert * lit;
    let h = (l - d).normalize();
    let spec = gloss * n.dot(&h).max(0.0).powf(SHININESS) * lit;
    let c = mul(albedo, env.light.colour);
    let rgb = [
        c[0] * diffuse + spec * env.light.colour[0],
        c[1] * diffuse + spec * env.light.colour[1],
        c[2] * diffuse + spec * env.light.colour[2],
    ];
    (rgb, hit.t * ray_cam.z, id)
}

struct Row {
    rgb: Vec<u8>,
    depth: Vec<u16>,
    ids: Vec<u16>,
    amodal: Vec<u64>,
}

/// Metres to the 16-bit depth image's millimetres (0 = no reading, the driver's convention).
fn to_mm(z: f64) -> u16 {
    if z > 0.0 {
        (z * 1000.0).round().clamp(1.0, f64::from(u16::MAX)) as u16
    } else {
        0
    }
}

fn render_row(scene: &Scene, prepared: &[Prepared], v: u32) -> Row {
    let w = scene.camera.intrinsics.width;
    let mut row = Row {
        rgb: Vec::with_capacity(w as usize * 3),
        depth: Vec::with_capacity(w as usize),
        ids: Vec::with_capacity(w as usize),
        amodal: vec![0; scene.objects.len()],
    };
    let mut seen = vec![false; scene.objects.len()];
    for u in 0..w {
        seen.iter_mut().for_each(|s| *s = false);
        let (rgb, z, id) = shade_pixel(scene, prepared, u, v, |i| seen[i] = true);
        for (a, &s) in row.amodal.iter_mut().zip(&seen) {
            *a += u64::from(s);
        }
        let pixel = u64::from(v) * u64::from(w) + u64::from(u);
        for (c, &value) in rgb.iter().enumerate() {
            let noise = scene.env.noise_sigma * gaussian(scene.noise_seed, pixel * 3 + c as u64);
            row.rgb.push(encode(value, noise));
        }
        row.depth.push(to_mm(z));
        row.ids.push(id);
    }
    row
}

/// Renders the scene at its camera's size.
pub fn render(scene: &Scene) -> Render {
    let prepared = prepare(scene);
    let (w, h) = (
        scene.camera.intrinsics.width,
        scene.camera.intrinsics.height,
    );
    let rows: Vec<Row> = (0..h)
        .into_par_iter()
        .map(|v| render_row(scene, &prepared, v))
        .collect();
    let n = (w as usize) * (h as usize);
    let mut out = Render {
        width: w,
        height: h,
        rgb: Vec::with_capacity(n * 3),
        depth_mm: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        amodal: vec![0; scene.objects.len()],
    };
    for row in rows {
        out.rgb.extend_from_slice(&row.rgb);
        out.depth_mm.extend_from_slice(&row.depth);
        out.ids.extend_from_slice(&row.ids);
        for (a, r) in out.amodal.iter_mut().zip(&row.amodal) {
            *a += r;
        }
    }
    out
}
