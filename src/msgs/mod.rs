//! The messages the replay writes (and the ROS node will publish): our
//! `yolact_ros2_msgs/msg/InstanceArray`, `vision_msgs/msg/Detection2DArray` and
//! `diagnostic_msgs/msg/DiagnosticArray`, the 3D outputs from depth (`vision_msgs/msg/Detection3DArray`,
//! `sensor_msgs/msg/PointCloud2`) and the `sensor_msgs/msg/CameraInfo` reader, as CDR bytes plus their `ros2msg` schema text
//! ([`schema`]).

pub mod camera_info;
pub mod detection3d;
pub mod point_cloud;
pub mod schema;

use crate::bag::{BagError, CdrReader, CdrWriter, Header};
use crate::output::detection::Detections;

/// `yolact_ros2_msgs/msg/Instance`; field order is that of `msg/Instance.msg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub class_id: u16,
    pub class_name: String,
    pub score: f32,
    pub class_score: f32,
    /// NaN when the model has no mask-IoU head.
    pub mask_iou: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub track_id: u32,
    pub mask_x: u32,
    pub mask_y: u32,
    pub mask_width: u32,
    pub mask_height: u32,
    pub mask_rle: String,
}

/// `yolact_ros2_msgs/msg/InstanceArray`: one image's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceArray {
    pub header: Header,
    pub image_width: u32,
    pub image_height: u32,
    pub model: String,
    pub instances: Vec<Instance>,
}

/// The pixel window covering a box, clipped to the image: `(x, y, width, height)`.
fn box_window(b: [f32; 4], w: usize, h: usize) -> (usize, usize, usize, usize) {
    let clamp = |v: f32, hi: usize| -> usize {
        if v.is_finite() {
            (v.max(0.0) as usize).min(hi)
        } else {
            0
        }
    };
    let x0 = clamp(b[0].floor(), w);
    let y0 = clamp(b[1].floor(), h);
    let x1 = clamp(b[2].ceil(), w).max(x0);
    let y1 = clamp(b[3].ceil(), h).max(y0);
    (x0, y0, x1 - x0, y1 - y0)
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl InstanceArray {
    /// Builds the message of one frame; `track_ids[i]` belongs to `dets.items[i]` (`u32::MAX` when missing).
    pub fn from_detections(header: Header, dets: &Detections, track_ids: &[u32]) -> Self {
        let instances = dets
            .items
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (x, y, w, h) = box_window(d.bbox, d.mask.width, d.mask.height);
                let rle = crate::output::rle::encode_cropped(&d.mask, x, y, w, h);
                Instance {
                    class_id: u16::try_from(d.class_id).unwrap_or(u16::MAX),
                    class_name: dets.label(d.class_id),
                    score: d.score,
                    class_score: d.class_score,
                    mask_iou: d.mask_iou.unwrap_or(f32::NAN),
                    x1: d.bbox[0],
                    y1: d.bbox[1],
                    x2: d.bbox[2],
                    y2: d.bbox[3],
                    track_id: track_ids.get(i).copied().unwrap_or(u32::MAX),
                    mask_x: to_u32(x),
                    mask_y: to_u32(y),
                    mask_width: to_u32(w),
                    mask_height: to_u32(h),
                    mask_rle: crate::output::rle::to_string(&rle.counts),
                }
            })
            .collect();
        InstanceArray {
            header,
            image_width: to_u32(dets.width),
            image_height: to_u32(dets.height),
            model: dets.config.clone(),
            instances,
        }
    }

    pub fn to_cdr(&self) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(true);
        w.write_header(&self.header)?;
        w.write_u32(self.image_width);
        w.write_u32(self.image_height);
        w.write_string(&self.model)?;
        w.write_seq_len(self.instances.len())?;
        for i in &self.instances {
            w.write_u16(i.class_id);
            w.write_string(&i.class_name)?;
            for v in [i.score, i.class_score, i.mask_iou, i.x1, i.y1, i.x2, i.y2] {
                w.write_f32(v);
            }
            for v in [i.track_id, i.mask_x, i.mask_y, i.mask_width, i.mask_height] {
                w.write_u32(v);
            }
            w.write_string(&i.mask_rle)?;
        }
        Ok(w.finish())
    }

    pub fn from_cdr(data: &[u8]) -> Result<Self, BagError> {
        let mut r = CdrReader::new(data)?;
        let header = r.read_header()?;
        let image_width = r.read_u32()?;
        let image_height = r.read_u32()?;
        let model = r.read_string()?;
        // An Instance is at least 2 + 4 + 7*4 + 5*4 + 4 bytes; bounds the pre-allocation.
        let n = r.read_seq_len(58)?;
        let mut instances = Vec::with_capacity(n);
        for _ in 0..n {
            let class_id = r.read_u16()?;
            let class_name = r.read_string()?;
            let mut f = [0f32; 7];
            for v in &mut f {
                *v = r.read_f32()?;
            }
            let mut u = [0u32; 5];
            for v in &mut u {
                *v = r.read_u32()?;
            }
            instances.push(Instance {
                class_id,
                class_name,
                score: f[0],
                class_score: f[1],
                mask_iou: f[2],
                x1: f[3],
                y1: f[4],
                x2: f[5],
                y2: f[6],
                track_id: u[0],
                mask_x: u[1],
                mask_y: u[2],
                mask_width: u[3],
                mask_height: u[4],
                mask_rle: r.read_string()?,
            });
        }
        Ok(InstanceArray {
            header,
            image_width,
            image_height,
            model,
            instances,
        })
    }

    /// The same instances as `vision_msgs/msg/Detection2DArray`: one hypothesis per detection
    /// (class_id = class name, score = final score), an axis-aligned box, id = track ID.
    pub fn to_detection2d_cdr(&self) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(true);
        w.write_header(&self.header)?;
        w.write_seq_len(self.instances.len())?;
        for i in &self.instances {
            w.write_header(&self.header)?;
            w.write_seq_len(1)?;
            // ObjectHypothesis
            w.write_string(&i.class_name)?;
            w.write_f64(i.score.into());
            // PoseWithCovariance: identity pose, zero covariance (2D detections carry no pose).
            for v in [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0] {
                w.write_f64(v);
            }
            for _ in 0..36 {
                w.write_f64(0.0);
            }
            // BoundingBox2D: center (x, y, theta), size_x, size_y.
            let (x1, y1, x2, y2) = (
                f64::from(i.x1),
                f64::from(i.y1),
                f64::from(i.x2),
                f64::from(i.y2),
            );
            for v in [(x1 + x2) / 2.0, (y1 + y2) / 2.0, 0.0, x2 - x1, y2 - y1] {
                w.write_f64(v);
            }
            w.write_string(&i.track_id.to_string())?;
        }
        Ok(w.finish())
    }
}

/// `diagnostic_msgs/msg/DiagnosticStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticStatus {
    /// 0 OK, 1 WARN, 2 ERROR, 3 STALE.
    pub level: u8,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<(String, String)>,
}

/// `diagnostic_msgs/msg/DiagnosticArray`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticArray {
    pub header: Header,
    pub status: Vec<DiagnosticStatus>,
}

impl DiagnosticArray {
    pub fn to_cdr(&self) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(true);
        w.write_header(&self.header)?;
        w.write_seq_len(self.status.len())?;
        for s in &self.status {
            w.write_u8(s.level);
            w.write_string(&s.name)?;
            w.write_string(&s.message)?;
            w.write_string(&s.hardware_id)?;
            w.write_seq_len(s.values.len())?;
            for (k, v) in &s.values {
                w.write_string(k)?;
                w.write_string(v)?;
            }
        }
        Ok(w.finish())
    }

    pub fn from_cdr(data: &[u8]) -> Result<Self, BagError> {
        let mut r = CdrReader::new(data)?;
        let header = r.read_header()?;
        let n = r.read_seq_len(17)?;
        let mut status = Vec::with_capacity(n);
        for _ in 0..n {
            let level = r.read_u8()?;
            let name = r.read_string()?;
            let message = r.read_string()?;
            let hardware_id = r.read_string()?;
            let m = r.read_seq_len(8)?;
            let mut values = Vec::with_capacity(m);
            for _ in 0..m {
                values.push((r.read_string()?, r.read_string()?));
            }
            status.push(DiagnosticStatus {
                level,
                name,
                message,
                hardware_id,
                values,
            });
        }
        Ok(DiagnosticArray { header, status })
    }
}

#[cfg(test)]
mod tests {
    use super::schema::{self, Value};
    use super::*;
    use crate::bag::Time;

    fn sample() -> InstanceArray {
        let inst = |k: u32| Instance {
            class_id: 3 + k as u16,
            class_name: format!("class{k}"),
            score: 0.5 + k as f32 / 10.0,
            class_score: 0.25,
            mask_iou: f32::NAN,
            x1: 1.5,
            y1: 2.5,
            x2: 10.0 + k as f32,
            y2: 20.0,
            track_id: 7 + k,
            mask_x: 1,
            mask_y: 2,
            mask_width: 9 + k,
            mask_height: 18,
            mask_rle: format!("rle{k}"),
        };
        InstanceArray {
            header: Header {
                stamp: Time {
                    sec: -3,
                    nanosec: 99,
                },
                frame_id: "cam".into(),
            },
            image_width: 640,
            image_height: 480,
            model: "yolact_resnet50".into(),
            instances: vec![inst(0), inst(1)],
        }
    }

    fn field_value(i: &Instance, name: &str, ty: &str) -> Value {
        let f = |v: f32| Value::Float(v.into());
        let u = |v: u32| Value::Int(v.into());
        let v = match name {
            "class_id" => Value::Int(i.class_id.into()),
            "class_name" => Value::Str(i.class_name.clone()),
            "score" => f(i.score),
            "class_score" => f(i.class_score),
            "mask_iou" => f(i.mask_iou),
            "x1" => f(i.x1),
            "y1" => f(i.y1),
            "x2" => f(i.x2),
            "y2" => f(i.y2),
            "track_id" => u(i.track_id),
            "mask_x" => u(i.mask_x),
            "mask_y" => u(i.mask_y),
            "mask_width" => u(i.mask_width),
            "mask_height" => u(i.mask_height),
            "mask_rle" => Value::Str(i.mask_rle.clone()),
            other => panic!("Instance.msg has a field `{other}` the struct lacks"),
        };
        let expect_ty = match name {
            "class_id" => "uint16",
            "class_name" | "mask_rle" => "string",
            "score" | "class_score" | "mask_iou" | "x1" | "y1" | "x2" | "y2" => "float32",
            _ => "uint32",
        };
        assert_eq!(ty, expect_ty, "type of Instance.{name}");
        v
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
            _ => a == b,
        }
    }

    /// Decodes the encoder's bytes by walking msg/*.msg, field by field, and compares each value.
    #[test]
    fn instance_array_matches_msg_files() {
        let m = sample();
        let bytes = m.to_cdr().unwrap();
        let v = schema::decode_dynamic(schema::INSTANCE_ARRAY, &bytes).unwrap();
        let top: Vec<_> = schema::fields(schema::INSTANCE_ARRAY)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            top,
            [
                "header",
                "image_width",
                "image_height",
                "model",
                "instances"
            ]
        );
        assert_eq!(v.get("image_width"), Some(&Value::Int(640)));
        assert_eq!(v.get("image_height"), Some(&Value::Int(480)));
        assert_eq!(v.get("model"), Some(&Value::Str("yolact_resnet50".into())));
        let stamp = v.get("header").and_then(|h| h.get("stamp")).unwrap();
        assert_eq!(stamp.get("sec"), Some(&Value::Int(-3)));
        let Some(Value::Array(items)) = v.get("instances") else {
            panic!("instances not an array")
        };
        assert_eq!(items.len(), 2);
        let fields = schema::fields(schema::INSTANCE).unwrap();
        assert_eq!(fields.len(), 15);
        for (inst, item) in m.instances.iter().zip(items) {
            for f in &fields {
                let want = field_value(inst, &f.name, &f.ty);
                let got = item.get(&f.name).unwrap();
                assert!(same(got, &want), "{}: {got:?} != {want:?}", f.name);
            }
        }
        // Nothing left over: the encoder wrote exactly the fields of the definition.
        assert_eq!(InstanceArray::from_cdr(&bytes).unwrap().instances.len(), 2);
        let back = InstanceArray::from_cdr(&bytes).unwrap();
        assert_eq!(back.header, m.header);
        assert_eq!(back.instances[1].mask_rle, "rle1");
        assert!(back.instances[0].mask_iou.is_nan());
    }

    #[test]
    fn detection2d_matches_definition() {
        let m = sample();
        let bytes = m.to_detection2d_cdr().unwrap();
        let v = schema::decode_dynamic(schema::DETECTION2D_ARRAY, &bytes).unwrap();
        let Some(Value::Array(dets)) = v.get("detections") else {
            panic!()
        };
        assert_eq!(dets.len(), 2);
        let d = &dets[1];
        assert_eq!(d.get("id"), Some(&Value::Str("8".into())));
        let bbox = d.get("bbox").unwrap();
        let center = bbox.get("center").unwrap().get("position").unwrap();
        assert_eq!(center.get("x"), Some(&Value::Float((1.5 + 11.0) / 2.0)));
        assert_eq!(bbox.get("size_y"), Some(&Value::Float(17.5)));
        let Some(Value::Array(res)) = d.get("results") else {
            panic!()
        };
        let hyp = res[0].get("hypothesis").unwrap();
        assert_eq!(hyp.get("class_id"), Some(&Value::Str("class1".into())));
        let Some(Value::Array(cov)) = res[0].get("pose").unwrap().get("covariance") else {
            panic!()
        };
        assert_eq!(cov.len(), 36);
    }

    #[test]
    fn diagnostic_round_trip_and_definition() {
        let d = DiagnosticArray {
            header: sample().header,
            status: vec![DiagnosticStatus {
                level: 1,
                name: "yolact replay".into(),
                message: "done".into(),
                hardware_id: "cpu".into(),
                values: vec![("frames".into(), "3".into()), ("fps".into(), "0.5".into())],
            }],
        };
        let bytes = d.to_cdr().unwrap();
        assert_eq!(DiagnosticArray::from_cdr(&bytes).unwrap(), d);
        let v = schema::decode_dynamic(schema::DIAGNOSTIC_ARRAY, &bytes).unwrap();
        let Some(Value::Array(st)) = v.get("status") else {
            panic!()
        };
        assert_eq!(st[0].get("level"), Some(&Value::Int(1)));
    }

    #[test]
    fn schema_text_lists_each_dependency_once() {
        let s = schema::schema_text(schema::DETECTION2D_ARRAY).unwrap();
        let headers: Vec<_> = s.lines().filter(|l| l.starts_with("MSG: ")).collect();
        assert_eq!(
            headers,
            [
                "MSG: std_msgs/Header",
                "MSG: builtin_interfaces/Time",
                "MSG: vision_msgs/Detection2D",
                "MSG: vision_msgs/ObjectHypothesisWithPose",
                "MSG: vision_msgs/ObjectHypothesis",
                "MSG: geometry_msgs/PoseWithCovariance",
                "MSG: geometry_msgs/Pose",
                "MSG: geometry_msgs/Point",
                "MSG: geometry_msgs/Quaternion",
                "MSG: vision_msgs/BoundingBox2D",
                "MSG: vision_msgs/Pose2D",
                "MSG: vision_msgs/Point2D",
            ]
        );
        let s = schema::schema_text(schema::INSTANCE_ARRAY).unwrap();
        assert!(s.starts_with(include_str!("../../msg/InstanceArray.msg")));
        assert!(s.contains("\nMSG: yolact_ros2_msgs/Instance\n"));
        assert_eq!(s.matches(&"=".repeat(80)).count(), 3);
    }

    #[test]
    fn box_window_clips() {
        assert_eq!(box_window([1.2, 2.7, 5.1, 9.0], 8, 8), (1, 2, 5, 6));
        assert_eq!(box_window([-3.0, f32::NAN, 100.0, 4.0], 8, 8), (0, 0, 8, 4));
        assert_eq!(box_window([6.0, 6.0, 2.0, 2.0], 8, 8), (6, 6, 0, 0));
    }
}
