//! Every node parameter, once: name, type, default, allowed range and meaning. The reader
//! (`super::from_raw`) takes defaults and ranges from here, `config/yolact.yaml` and the table in
//! docs/ros.md are rendered from here (`super::render`, checked by the tests), and `--dry-run`
//! prints every entry's resolved value.

/// A parameter value as the table states it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'static str),
    StrList(&'static [&'static str]),
}

/// What a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Bool,
    Int {
        lo: i64,
        hi: i64,
    },
    Double {
        lo: f64,
        hi: f64,
    },
    Str,
    /// A string from a fixed set.
    Choice(&'static [&'static str]),
    StrList,
}

/// One parameter. Per-camera names and defaults hold `<name>`, the camera's name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Value,
    /// What it means, one paragraph (markdown).
    pub doc: &'static str,
    /// The value `config/yolact.yaml` shows instead of the default (a required parameter's
    /// example).
    pub example: Option<Value>,
}

impl Param {
    /// The ROS type name, as `ros2 param describe` says it.
    pub const fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "bool",
            Kind::Int { .. } => "int",
            Kind::Double { .. } => "double",
            Kind::Str | Kind::Choice(_) => "string",
            Kind::StrList => "string[]",
        }
    }

    /// The name with `<name>` replaced by a camera's name.
    pub fn name_for(&self, camera: &str) -> String {
        self.name.replace("<name>", camera)
    }

    pub const fn default_bool(&self) -> bool {
        match self.default {
            Value::Bool(b) => b,
            _ => panic!("not a bool parameter"),
        }
    }

    pub const fn default_int(&self) -> i64 {
        match self.default {
            Value::Int(v) => v,
            _ => panic!("not an int parameter"),
        }
    }

    pub const fn default_double(&self) -> f64 {
        match self.default {
            Value::Double(v) => v,
            _ => panic!("not a double parameter"),
        }
    }

    pub const fn default_str(&self) -> &'static str {
        match self.default {
            Value::Str(s) => s,
            _ => panic!("not a string parameter"),
        }
    }

    pub const fn default_list(&self) -> &'static [&'static str] {
        match self.default {
            Value::StrList(l) => l,
            _ => panic!("not a string[] parameter"),
        }
    }
}

const fn p(name: &'static str, kind: Kind, default: Value, doc: &'static str) -> Param {
    Param {
        name,
        kind,
        default,
        doc,
        example: None,
    }
}

/// Upper bound of `top_k` (the reference's max_num_detections).
pub const MAX_TOP_K: usize = 100_000;
/// Upper bound of a QoS depth; deeper queues only hold stale frames.
pub const MAX_QOS_DEPTH: i64 = 10_000;

const RELIABILITY: Kind = Kind::Choice(&["reliable", "best_effort"]);
const DURABILITY: Kind = Kind::Choice(&["volatile", "transient_local"]);
const QOS_DEPTH: Kind = Kind::Int {
    lo: 1,
    hi: MAX_QOS_DEPTH,
};
const RATE: Kind = Kind::Double { lo: 0.0, hi: 1e6 };
const LATENCY: Kind = Kind::Double { lo: 0.0, hi: 1e9 };
const RATIO: Kind = Kind::Double { lo: 0.0, hi: 1.0 };

pub const WEIGHTS: Param = p(
    "weights",
    Kind::Str,
    Value::Str(crate::weights::shipped::SHIPPED_NAME),
    "`yolact_plus_mini` (the model shipped in the binary, trained on generated tabletop scenes: book, cup, sports ball, carrot, donut; models/yolact_plus_mini/README.md), a checkpoint (`.pth` legacy/zip or `.safetensors`), a released config name such as `yolact_plus_resnet50` (downloaded once into the Hugging Face cache), or `synthetic[:SEED]` for deterministic random weights (meaningless detections; for trying the node)",
);
pub const CONFIG: Param = p(
    "config",
    Kind::Str,
    Value::Str(""),
    "config name (`yolact_resnet50`, `yolact_darknet53`, `yolact_base`, `yolact_im700`, `yolact_plus_resnet50`, `yolact_plus_base`, `yolact_plus_mini`); `\"\"` = the checkpoint's own or detected from it (`synthetic` defaults to `yolact_resnet50`)",
);
pub const DEVICE: Param = p(
    "device",
    Kind::Str,
    Value::Str("auto"),
    "`auto`, `cpu`, `cuda`, `cuda:N` (`auto` = the first GPU when built with `cuda`, else the CPU)",
);
pub const FP16: Param = p(
    "fp16",
    Kind::Bool,
    Value::Bool(false),
    "run the network in f16 (CUDA only: with `device: cpu`, or `auto` falling back to the CPU, configure fails with a clear error)",
);
pub const SCORE_THRESHOLD: Param = p(
    "score_threshold",
    Kind::Double { lo: 0.0, hi: 1.0 },
    Value::Double(0.15),
    "keep detections with class score > t and final score >= t",
);
pub const TOP_K: Param = p(
    "top_k",
    Kind::Int {
        lo: 1,
        hi: MAX_TOP_K as i64,
    },
    Value::Int(100),
    "at most this many instances per image",
);
pub const NMS: Param = p(
    "nms",
    Kind::Choice(&["fast", "cross_class", "traditional"]),
    Value::Str("fast"),
    "`fast` (class-wise Fast NMS, the reference), `cross_class`, `traditional`",
);
pub const CROP_MASKS: Param = p(
    "crop_masks",
    Kind::Bool,
    Value::Bool(true),
    "crop masks to their boxes (the reference default)",
);
pub const CLASSES: Param = p(
    "classes",
    Kind::StrList,
    Value::StrList(&[]),
    "allow-list of COCO class names, e.g. `[person, car]`; `[]` = all. Unknown names are an error listing the valid ones. Applied after `top_k` (and before tracking)",
);
pub const CAMERA_NAMES: Param = p(
    "cameras.names",
    Kind::StrList,
    Value::StrList(&["camera"]),
    "camera names (letters, digits, `_`; not `names`); each gets its own subscription, outputs and diagnostics status",
);
pub const CAMERA_TOPIC: Param = p(
    "cameras.<name>.topic",
    Kind::Str,
    Value::Str("<name>/image_raw"),
    "image topic; relative names resolve under the node namespace",
);
pub const CAMERA_TRANSPORT: Param = p(
    "cameras.<name>.transport",
    Kind::Choice(&["raw", "compressed"]),
    Value::Str("raw"),
    "`raw` (`sensor_msgs/msg/Image` on `topic`) or `compressed` (`sensor_msgs/msg/CompressedImage` on `<topic>/compressed`, as image_transport)",
);
pub const CAMERA_OUTPUT_NAMESPACE: Param = p(
    "cameras.<name>.output_namespace",
    Kind::Str,
    Value::Str("<name>/yolact"),
    "outputs go to `<output_namespace>/{instances,detections,label_image,overlay}`",
);
pub const CAMERA_DEPTH_TOPIC: Param = p(
    "cameras.<name>.depth_topic",
    Kind::Str,
    Value::Str(""),
    "aligned (registered) depth image (`16UC1` mm or `32FC1` m) for the 3D outputs, e.g. `camera/aligned_depth_to_color/image_raw` (realsense2_camera); `\"\"` = no 3D outputs for this camera",
);
pub const CAMERA_DEPTH_INFO_TOPIC: Param = p(
    "cameras.<name>.depth_info_topic",
    Kind::Str,
    Value::Str(""),
    "the depth image's `sensor_msgs/msg/CameraInfo`; `\"\"` = `camera_info` next to `depth_topic`",
);
pub const PUBLISH_INSTANCES: Param = p(
    "publish.instances",
    Kind::Bool,
    Value::Bool(true),
    "publish `yolact_ros2_msgs/msg/InstanceArray` on `<output_namespace>/instances`",
);
pub const PUBLISH_DETECTIONS: Param = p(
    "publish.detections",
    Kind::Bool,
    Value::Bool(true),
    "publish `vision_msgs/msg/Detection2DArray` on `<output_namespace>/detections` (id = track id)",
);
pub const PUBLISH_LABEL_IMAGE: Param = p(
    "publish.label_image",
    Kind::Bool,
    Value::Bool(true),
    "publish the `mono16` label image on `<output_namespace>/label_image` (1 + instance index, 0 = background)",
);
pub const PUBLISH_OVERLAY: Param = p(
    "publish.overlay",
    Kind::Bool,
    Value::Bool(true),
    "publish the `rgb8` overlay on `<output_namespace>/overlay` (drawn only while subscribed)",
);
pub const PUBLISH_DETECTIONS_3D: Param = p(
    "publish.detections_3d",
    Kind::Bool,
    Value::Bool(true),
    "publish `vision_msgs/msg/Detection3DArray` on `<output_namespace>/detections_3d` (cameras with a depth topic; id = track id)",
);
pub const PUBLISH_POINTS: Param = p(
    "publish.points",
    Kind::Bool,
    Value::Bool(true),
    "publish `sensor_msgs/msg/PointCloud2` on `<output_namespace>/points` (x, y, z, instance_id, class_id; built only while subscribed)",
);
pub const QOS_INPUT_RELIABILITY: Param = p(
    "qos.input.reliability",
    RELIABILITY,
    Value::Str("best_effort"),
    "subscriptions: `reliable` or `best_effort` (default: REP-2003 sensor data)",
);
pub const QOS_INPUT_DURABILITY: Param = p(
    "qos.input.durability",
    DURABILITY,
    Value::Str("volatile"),
    "`volatile` or `transient_local`",
);
pub const QOS_INPUT_DEPTH: Param = p(
    "qos.input.depth",
    QOS_DEPTH,
    Value::Int(1),
    "keep-last depth",
);
pub const QOS_OUTPUT_RELIABILITY: Param = p(
    "qos.output.reliability",
    RELIABILITY,
    Value::Str("reliable"),
    "publications: `reliable` or `best_effort`",
);
pub const QOS_OUTPUT_DURABILITY: Param = p(
    "qos.output.durability",
    DURABILITY,
    Value::Str("volatile"),
    "`volatile` or `transient_local`",
);
pub const QOS_OUTPUT_DEPTH: Param = p(
    "qos.output.depth",
    QOS_DEPTH,
    Value::Int(10),
    "keep-last depth",
);
pub const DIAG_PERIOD: Param = p(
    "diagnostics.period",
    Kind::Double {
        lo: 0.01,
        hi: 3600.0,
    },
    Value::Double(1.0),
    "seconds between `/diagnostics` messages",
);
pub const DIAG_STALE_TIMEOUT: Param = p(
    "diagnostics.stale_timeout",
    Kind::Double { lo: 0.01, hi: 1e6 },
    Value::Double(5.0),
    "seconds without input before a camera is STALE",
);
pub const WARN_MIN_INPUT_RATE: Param = p(
    "diagnostics.warn.min_input_rate",
    RATE,
    Value::Double(0.5),
    "Hz over the last period; below = WARN (0 = off)",
);
pub const WARN_MAX_LATENCY: Param = p(
    "diagnostics.warn.max_latency_p95_ms",
    LATENCY,
    Value::Double(2000.0),
    "ms, receive -> publish p95 over the last period; above = WARN (0 = off)",
);
pub const WARN_MAX_DROP_RATIO: Param = p(
    "diagnostics.warn.max_drop_ratio",
    RATIO,
    Value::Double(0.5),
    "dropped/received over the last period; above = WARN (0 = off)",
);
pub const ERROR_MIN_INPUT_RATE: Param = p(
    "diagnostics.error.min_input_rate",
    RATE,
    Value::Double(0.0),
    "as the WARN one, for ERROR",
);
pub const ERROR_MAX_LATENCY: Param = p(
    "diagnostics.error.max_latency_p95_ms",
    LATENCY,
    Value::Double(10000.0),
    "as the WARN one, for ERROR",
);
pub const ERROR_MAX_DROP_RATIO: Param = p(
    "diagnostics.error.max_drop_ratio",
    RATIO,
    Value::Double(0.95),
    "as the WARN one, for ERROR",
);
pub const DEPTH_SLOP: Param = p(
    "depth.slop",
    Kind::Double { lo: 0.0, hi: 10.0 },
    Value::Double(0.02),
    "s; colour and depth stamps pair when at most this far apart (as message_filters' ApproximateTime)",
);
pub const DEPTH_QUEUE_SIZE: Param = p(
    "depth.queue_size",
    Kind::Int { lo: 1, hi: 1000 },
    Value::Int(10),
    "depth frames kept waiting for their colour frame",
);
pub const DEPTH_SCALE: Param = p(
    "depth.scale",
    Kind::Double { lo: 0.0, hi: 1e3 },
    Value::Double(0.0),
    "metres per depth unit; 0 = the encoding's (`16UC1` mm, `32FC1` m)",
);
pub const DEPTH_EROSION_PX: Param = p(
    "depth.erosion_px",
    Kind::Int { lo: 0, hi: 100 },
    Value::Int(2),
    "mask erosion before sampling depth, colour pixels (keeps away from the outline, where depth bleeds)",
);
pub const DEPTH_MIN_DEPTH: Param = p(
    "depth.min_depth",
    Kind::Double { lo: 0.0, hi: 1e4 },
    Value::Double(0.1),
    "m; readings outside [`min_depth`, `max_depth`] are invalid",
);
pub const DEPTH_MAX_DEPTH: Param = p(
    "depth.max_depth",
    Kind::Double { lo: 0.0, hi: 1e4 },
    Value::Double(10.0),
    "m; see `min_depth`",
);
pub const DEPTH_OUTLIER_K: Param = p(
    "depth.outlier_k",
    Kind::Double { lo: 0.0, hi: 100.0 },
    Value::Double(3.0),
    "core band along the ray: median +- k * 1.4826 * MAD (0 = no rejection)",
);
pub const DEPTH_MAX_GAP: Param = p(
    "depth.max_gap",
    Kind::Double { lo: 0.0, hi: 100.0 },
    Value::Double(0.02),
    "m; the band grows over the sorted depths while consecutive readings are at most this apart",
);
pub const DEPTH_MIN_POINTS: Param = p(
    "depth.min_points",
    Kind::Int {
        lo: 1,
        hi: 1_000_000,
    },
    Value::Int(20),
    "fewer points left: the instance is reported as without enough depth, and no box is published",
);
pub const AUTOSTART: Param = p(
    "autostart",
    Kind::Bool,
    Value::Bool(true),
    "configure and activate at start-up; `false` waits for `ros2 lifecycle set <node> configure` / `activate`",
);
pub const USE_SIM_TIME: Param = p(
    "use_sim_time",
    Kind::Bool,
    Value::Bool(false),
    "accepted (launch passes it); rates and latencies use the wall clock, outputs keep the input stamps",
);

/// Every parameter, in the order of `config/yolact.yaml` (grouped by prefix).
pub const PARAMETERS: &[Param] = &[
    WEIGHTS,
    CONFIG,
    DEVICE,
    FP16,
    SCORE_THRESHOLD,
    TOP_K,
    NMS,
    CROP_MASKS,
    CLASSES,
    CAMERA_NAMES,
    CAMERA_TOPIC,
    CAMERA_TRANSPORT,
    CAMERA_OUTPUT_NAMESPACE,
    CAMERA_DEPTH_TOPIC,
    CAMERA_DEPTH_INFO_TOPIC,
    PUBLISH_INSTANCES,
    PUBLISH_DETECTIONS,
    PUBLISH_LABEL_IMAGE,
    PUBLISH_OVERLAY,
    PUBLISH_DETECTIONS_3D,
    PUBLISH_POINTS,
    QOS_INPUT_RELIABILITY,
    QOS_INPUT_DURABILITY,
    QOS_INPUT_DEPTH,
    QOS_OUTPUT_RELIABILITY,
    QOS_OUTPUT_DURABILITY,
    QOS_OUTPUT_DEPTH,
    DIAG_PERIOD,
    DIAG_STALE_TIMEOUT,
    WARN_MIN_INPUT_RATE,
    WARN_MAX_LATENCY,
    WARN_MAX_DROP_RATIO,
    ERROR_MIN_INPUT_RATE,
    ERROR_MAX_LATENCY,
    ERROR_MAX_DROP_RATIO,
    DEPTH_SLOP,
    DEPTH_QUEUE_SIZE,
    DEPTH_SCALE,
    DEPTH_EROSION_PX,
    DEPTH_MIN_DEPTH,
    DEPTH_MAX_DEPTH,
    DEPTH_OUTLIER_K,
    DEPTH_MAX_GAP,
    DEPTH_MIN_POINTS,
    AUTOSTART,
    USE_SIM_TIME,
];

/// The parameter whose (template) name is `name`.
pub fn find(name: &str) -> Option<&'static Param> {
    PARAMETERS.iter().find(|p| p.name == name)
}
