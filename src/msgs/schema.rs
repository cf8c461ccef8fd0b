//! ROS 2 message definitions (`.msg` text) and the MCAP `ros2msg` schema built from them.
//!
//! Our own types come from `msg/*.msg` (the single source of truth); the standard types are the
//! definitions of ROS 2 Humble / Jazzy with comments and defaults stripped (the std_msgs,
//! geometry_msgs and diagnostic_msgs ones checked against the `rosbags` typestore, the vision_msgs
//! ones field by field against vision_msgs 4.1.1, its `ros2` branch). A
//! schema is the root definition followed by every dependency, each after a line of 80 `=` and a
//! `MSG: pkg/Type` line, as rosbag2's MCAP storage writes it.

use crate::bag::BagError;

pub const PACKAGE: &str = "yolact_ros2_msgs";
pub const INSTANCE: &str = "yolact_ros2_msgs/msg/Instance";
pub const INSTANCE_ARRAY: &str = "yolact_ros2_msgs/msg/InstanceArray";
pub const DETECTION2D_ARRAY: &str = "vision_msgs/msg/Detection2DArray";
pub const DIAGNOSTIC_ARRAY: &str = "diagnostic_msgs/msg/DiagnosticArray";
pub const IMAGE: &str = "sensor_msgs/msg/Image";
pub const COMPRESSED_IMAGE: &str = "sensor_msgs/msg/CompressedImage";
pub const DETECTION3D_ARRAY: &str = "vision_msgs/msg/Detection3DArray";
pub const POINT_CLOUD2: &str = "sensor_msgs/msg/PointCloud2";
pub const CAMERA_INFO: &str = "sensor_msgs/msg/CameraInfo";

const SEPARATOR: &str =
    "================================================================================";

/// `(type as pkg/Type, definition)`. Order does not matter.
const DEFINITIONS: &[(&str, &str)] = &[
    (
        "yolact_ros2_msgs/Instance",
        include_str!("../../msg/Instance.msg"),
    ),
    (
        "yolact_ros2_msgs/InstanceArray",
        include_str!("../../msg/InstanceArray.msg"),
    ),
    (
        "std_msgs/Header",
        "builtin_interfaces/Time stamp\nstring frame_id\n",
    ),
    ("builtin_interfaces/Time", "int32 sec\nuint32 nanosec\n"),
    (
        "vision_msgs/Detection2DArray",
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    ),
    (
        "vision_msgs/Detection2D",
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n\
         vision_msgs/BoundingBox2D bbox\nstring id\n",
    ),
    (
        "vision_msgs/ObjectHypothesisWithPose",
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    ),
    (
        "vision_msgs/ObjectHypothesis",
        "string class_id\nfloat64 score\n",
    ),
    (
        "vision_msgs/BoundingBox2D",
        "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    ),
    (
        "vision_msgs/Pose2D",
        "vision_msgs/Point2D position\nfloat64 theta\n",
    ),
    ("vision_msgs/Point2D", "float64 x\nfloat64 y\n"),
    (
        "geometry_msgs/PoseWithCovariance",
        "geometry_msgs/Pose pose\nfloat64[36] covariance\n",
    ),
    (
        "geometry_msgs/Pose",
        "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation\n",
    ),
    ("geometry_msgs/Point", "float64 x\nfloat64 y\nfloat64 z\n"),
    (
        "geometry_msgs/Quaternion",
        "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    ),
    (
        "diagnostic_msgs/DiagnosticArray",
        "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status\n",
    ),
    (
        "diagnostic_msgs/DiagnosticStatus",
        "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\n\
         string message\nstring hardware_id\ndiagnostic_msgs/KeyValue[] values\n",
    ),
    ("diagnostic_msgs/KeyValue", "string key\nstring value\n"),
    (
        "sensor_msgs/Image",
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n\
         uint8 is_bigendian\nuint32 step\nuint8[] data\n",
    ),
    (
        "sensor_msgs/CompressedImage",
        "std_msgs/Header header\nstring format\nuint8[] data\n",
    ),
    (
        "vision_msgs/Detection3DArray",
        "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    ),
    (
        "vision_msgs/Detection3D",
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n\
         vision_msgs/BoundingBox3D bbox\nstring id\n",
    ),
    (
        "vision_msgs/BoundingBox3D",
        "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    ),
    ("geometry_msgs/Vector3", "float64 x\nfloat64 y\nfloat64 z\n"),
    (
        "sensor_msgs/PointCloud2",
        "std_msgs/Header header\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\n\
         bool is_bigendian\nuint32 point_step\nuint32 row_step\nuint8[] data\nbool is_dense\n",
    ),
    (
        "sensor_msgs/PointField",
        "uint8 INT8=1\nuint8 UINT8=2\nuint8 INT16=3\nuint8 UINT16=4\nuint8 INT32=5\n\
         uint8 UINT32=6\nuint8 FLOAT32=7\nuint8 FLOAT64=8\nstring name\nuint32 offset\n\
         uint8 datatype\nuint32 count\n",
    ),
    (
        "sensor_msgs/CameraInfo",
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\n\
         float64[] d\nfloat64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\n\
         uint32 binning_y\nsensor_msgs/RegionOfInterest roi\n",
    ),
    (
        "sensor_msgs/RegionOfInterest",
        "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify\n",
    ),
];

/// `pkg/msg/Type` or `pkg/Type` -> `pkg/Type`.
fn short_name(name: &str) -> String {
    name.replacen("/msg/", "/", 1)
}

/// The `.msg` text of a type (`pkg/msg/Type` or `pkg/Type`), as embedded.
pub fn definition(type_name: &str) -> Option<&'static str> {
    let short = short_name(type_name);
    DEFINITIONS
        .iter()
        .find(|(n, _)| *n == short)
        .map(|(_, d)| *d)
}

/// One field of a message definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Primitive name (`uint32`, `string`, ...) or a fully qualified `pkg/Type`.
    pub ty: String,
    pub name: String,
    pub array: ArrayKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayKind {
    Scalar,
    Unbounded,
    Fixed(usize),
}

const PRIMITIVES: &[&str] = &[
    "bool", "byte", "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "uint64", "float32", "float64", "string",
];

/// Parses the fields of a definition (constants and comments dropped); nested type names are
/// qualified with `package` when they have none (`Header` means `std_msgs/Header`).
pub fn parse_fields(definition: &str, package: &str) -> Result<Vec<Field>, BagError> {
    let bad = |line: &str, why: &str| BagError::Cdr {
        offset: 0,
        msg: format!("msg definition line `{line}`: {why}"),
    };
    let mut out = Vec::new();
    for raw in definition.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(ty), Some(name)) = (parts.next(), parts.next()) else {
            return Err(bad(line, "expected `type name`"));
        };
        if name.contains('=') || parts.next().is_some_and(|p| p.starts_with('=')) {
            continue; // a constant
        }
        let (base, array) = match ty.split_once('[') {
            None => (ty, ArrayKind::Scalar),
            Some((b, "]")) => (b, ArrayKind::Unbounded),
            Some((b, rest)) => {
                let n = rest
                    .strip_suffix(']')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| bad(line, "bad array bound"))?;
                (b, ArrayKind::Fixed(n))
            }
        };
        let ty = if PRIMITIVES.contains(&base) {
            base.to_string()
        } else if base == "Header" {
            "std_msgs/Header".to_string()
        } else if base.contains('/') {
            short_name(base)
        } else {
            format!("{package}/{base}")
        };
        out.push(Field {
            ty,
            name: name.to_string(),
            array,
        });
    }
    Ok(out)
}

fn package_of(short: &str) -> &str {
    short.split('/').next().unwrap_or("")
}

/// Fields of an embedded type.
pub fn fields(type_name: &str) -> Result<Vec<Field>, BagError> {
    let def = definition(type_name).ok_or_else(|| BagError::UnsupportedType(type_name.into()))?;
    parse_fields(def, package_of(&short_name(type_name)))
}

/// The full `ros2msg` schema text of a type: its definition, then each dependency once, depth
/// first in field order.
pub fn schema_text(type_name: &str) -> Result<String, BagError> {
    let root = short_name(type_name);
    let mut deps = Vec::new();
    collect_deps(&root, &mut deps, 0)?;
    let mut text = definition(&root)
        .ok_or_else(|| BagError::UnsupportedType(type_name.into()))?
        .to_string();
    for dep in deps {
        let def = definition(&dep).ok_or_else(|| BagError::UnsupportedType(dep.clone()))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(SEPARATOR);
        text.push_str("\nMSG: ");
        text.push_str(&dep);
        text.push('\n');
        text.push_str(def);
    }
    Ok(text)
}

fn collect_deps(ty: &str, out: &mut Vec<String>, depth: usize) -> Result<(), BagError> {
    if depth > 32 {
        return Err(BagError::UnsupportedType(format!(
            "{ty}: recursive definition"
        )));
    }
    for f in fields(ty)? {
        if PRIMITIVES.contains(&f.ty.as_str()) || out.contains(&f.ty) {
            continue;
        }
        out.push(f.ty.clone());
        collect_deps(&f.ty, out, depth + 1)?;
    }
    Ok(())
}

/// A decoded field value, for checking encoders against the definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Str(String),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
}

/// Decodes CDR bytes of an embedded type by walking its definition (independent of the
/// hand-written encoders; used by tests and for inspecting bags).
pub fn decode_dynamic(type_name: &str, data: &[u8]) -> Result<Value, BagError> {
    let mut r = crate::bag::CdrReader::new(data)?;
    decode_struct(&short_name(type_name), &mut r, 0)
}

fn decode_struct(
    ty: &str,
    r: &mut crate::bag::CdrReader<'_>,
    depth: usize,
) -> Result<Value, BagError> {
    if depth > 32 {
        return Err(BagError::UnsupportedType(format!("{ty}: too deep")));
    }
    let mut out = Vec::new();
    for f in fields(ty)? {
        let v = match f.array {
            ArrayKind::Scalar => decode_one(&f.ty, r, depth)?,
            ArrayKind::Fixed(n) => Value::Array(
                (0..n)
                    .map(|_| decode_one(&f.ty, r, depth))
                    .collect::<Result<_, _>>()?,
            ),
            ArrayKind::Unbounded => {
                let n = r.read_seq_len(1)?;
                Value::Array(
                    (0..n)
                        .map(|_| decode_one(&f.ty, r, depth))
                        .collect::<Result<_, _>>()?,
                )
            }
        };
        out.push((f.name, v));
    }
    Ok(Value::Struct(out))
}

fn decode_one(
    ty: &str,
    r: &mut crate::bag::CdrReader<'_>,
    depth: usize,
) -> Result<Value, BagError> {
    Ok(match ty {
        "bool" | "byte" | "char" | "uint8" => Value::Int(r.read_u8()?.into()),
        "int8" => Value::Int((r.read_u8()? as i8).into()),
        "uint16" => Value::Int(r.read_u16()?.into()),
        "int16" => Value::Int((r.read_u16()? as i16).into()),
        "uint32" => Value::Int(r.read_u32()?.into()),
        "int32" => Value::Int(r.read_i32()?.into()),
        "uint64" => Value::Int(r.read_u64()?.into()),
        "int64" => Value::Int(r.read_i64()?.into()),
        "float32" => Value::Float(r.read_f32()?.into()),
        "float64" => Value::Float(r.read_f64()?),
        "string" => Value::Str(r.read_string()?),
        _ => decode_struct(ty, r, depth + 1)?,
    })
}

impl Value {
    /// The named field of a struct value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fs) => fs.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}
