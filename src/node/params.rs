//! The node's ROS parameters: a ROS 2 params file (`<node>: ros__parameters: {...}`) plus
//! `-p name:=value` overrides, validated into [`NodeParams`].
//!
//! Nested maps flatten to dotted names as rclcpp does (`qos: {input: {depth: 1}}` is
//! `qos.input.depth`). Only scalars and arrays of scalars are parameters. Every problem (unknown
//! name, wrong type, out-of-range value) is collected and reported in one startup error, so a
//! broken config file is fixed in one go rather than one line per restart.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::node::transport::{Durability, Qos, Reliability};
use crate::post::fast_nms::NmsKind;

/// How a camera's images arrive (image_transport's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTransport {
    /// `sensor_msgs/msg/Image` on the topic itself.
    Raw,
    /// `sensor_msgs/msg/CompressedImage` on `<topic>/compressed`.
    Compressed,
}

/// One camera input.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraParams {
    /// The name in the `cameras` list; used in diagnostics and in default topic names.
    pub name: String,
    /// Image topic as configured (relative names resolve under the node's namespace); for
    /// `compressed`, the base topic without `/compressed`.
    pub topic: String,
    pub transport: InputTransport,
    /// Namespace of this camera's outputs (`<ns>/instances`, `<ns>/detections`, ...).
    pub output_namespace: String,
    /// Aligned (registered) depth image topic; empty = no 3D outputs for this camera.
    pub depth_topic: String,
    /// The depth image's `CameraInfo` topic (resolved; defaults to `camera_info` next to
    /// `depth_topic`).
    pub depth_info_topic: String,
}

/// How depth frames are paired and turned into 3D instances (`depth.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthParams {
    /// Colour and depth stamps pair when at most this far apart, seconds.
    pub slop_s: f64,
    /// Depth frames kept waiting for a colour frame.
    pub queue_size: usize,
    /// Metres per depth unit; `None` = the encoding's convention (16UC1 mm, 32FC1 m).
    pub scale: Option<f64>,
    pub options: crate::depth::Depth3dOptions,
}

/// Which outputs are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSwitches {
    pub instances: bool,
    pub detections: bool,
    pub label_image: bool,
    pub overlay: bool,
    /// `vision_msgs/Detection3DArray` on `<ns>/detections_3d` (cameras with a depth topic).
    pub detections_3d: bool,
    /// `sensor_msgs/PointCloud2` on `<ns>/points`, only while subscribed.
    pub points: bool,
}

/// Diagnostics period and the thresholds that raise WARN / ERROR. A threshold of 0 disables the
/// check (for the minimum input rate) or never triggers (maxima are compared with `>`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiagnosticsParams {
    /// Seconds between `/diagnostics` messages.
    pub period_s: f64,
    /// Seconds without any input frame after which a camera is STALE.
    pub stale_timeout_s: f64,
    pub warn: Thresholds,
    pub error: Thresholds,
}

/// One level's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Input frames per second below this raise the level (0 = off).
    pub min_input_rate_hz: f64,
    /// End-to-end p95 latency above this raises the level (0 = off).
    pub max_latency_p95_ms: f64,
    /// dropped / received over the last period above this raises the level (0 = off).
    pub max_drop_ratio: f64,
}

/// Every parameter of the node, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeParams {
    /// Checkpoint path, or `synthetic[:SEED]`.
    pub weights: String,
    /// Config name; empty = detect from the checkpoint.
    pub config: String,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub fp16: bool,
    pub score_threshold: f64,
    pub top_k: usize,
    pub nms: NmsKind,
    pub crop_masks: bool,
    /// Class allow-list by COCO name; empty = every class.
    pub classes: Vec<String>,
    pub cameras: Vec<CameraParams>,
    pub publish: PublishSwitches,
    pub input_qos: Qos,
    pub output_qos: Qos,
    pub diagnostics: DiagnosticsParams,
    pub depth: DepthParams,
    pub autostart: bool,
    pub use_sim_time: bool,
    /// Topic remappings from `--ros-args -r from:=to`, applied to resolved topic names.
    pub remaps: Vec<(String, String)>,
}

/// Name, type and default of every fixed parameter (per-camera ones are listed as
/// `cameras.<name>.*`), as documented in `docs/ros.md` and `config/yolact.yaml`.
pub const PARAMETERS: &[(&str, &str, &str)] = &[
    ("weights", "string", "\"\""),
    ("config", "string", "\"\""),
    ("device", "string", "auto"),
    ("fp16", "bool", "false"),
    ("score_threshold", "double", "0.15"),
    ("top_k", "int", "100"),
    ("nms", "string", "fast"),
    ("crop_masks", "bool", "true"),
    ("classes", "string[]", "[]"),
    ("cameras.names", "string[]", "[camera]"),
    ("cameras.<name>.topic", "string", "<name>/image_raw"),
    ("cameras.<name>.transport", "string", "raw"),
    ("cameras.<name>.output_namespace", "string", "<name>/yolact"),
    ("cameras.<name>.depth_topic", "string", "\"\""),
    ("cameras.<name>.depth_info_topic", "string", "\"\""),
    ("publish.instances", "bool", "true"),
    ("publish.detections", "bool", "true"),
    ("publish.label_image", "bool", "true"),
    ("publish.overlay", "bool", "true"),
    ("publish.detections_3d", "bool", "true"),
    ("publish.points", "bool", "true"),
    ("qos.input.reliability", "string", "best_effort"),
    ("qos.input.durability", "string", "volatile"),
    ("qos.input.depth", "int", "1"),
    ("qos.output.reliability", "string", "reliable"),
    ("qos.output.durability", "string", "volatile"),
    ("qos.output.depth", "int", "10"),
    ("diagnostics.period", "double", "1.0"),
    ("diagnostics.stale_timeout", "double", "5.0"),
    ("diagnostics.warn.min_input_rate", "double", "0.5"),
    ("diagnostics.warn.max_latency_p95_ms", "double", "2000.0"),
    ("diagnostics.warn.max_drop_ratio", "double", "0.5"),
    ("diagnostics.error.min_input_rate", "double", "0.0"),
    ("diagnostics.error.max_latency_p95_ms", "double", "10000.0"),
    ("diagnostics.error.max_drop_ratio", "double", "0.95"),
    ("depth.slop", "double", "0.02"),
    ("depth.queue_size", "int", "10"),
    ("depth.scale", "double", "0.0"),
    ("depth.erosion_px", "int", "2"),
    ("depth.min_depth", "double", "0.1"),
    ("depth.max_depth", "double", "10.0"),
    ("depth.outlier_k", "double", "3.0"),
    ("depth.max_gap", "double", "0.02"),
    ("depth.min_points", "int", "20"),
    ("autostart", "bool", "true"),
    ("use_sim_time", "bool", "false"),
];

/// Upper bound of `top_k` (the reference's max_num_detections).
pub const MAX_TOP_K: usize = 100_000;
/// Upper bound of a QoS depth; deeper queues only hold stale frames.
pub const MAX_QOS_DEPTH: i64 = 10_000;

/// Reads `params_file` (if any) for `node_name` (plain `yolact` or fully qualified `/ns/yolact`)
/// and applies `overrides` (`-p name:=value`, values parsed as YAML as ROS does).
pub fn load_params(
    params_file: Option<&Path>,
    overrides: &[(String, String)],
    node_name: &str,
) -> Result<NodeParams> {
    let files: Vec<&Path> = params_file.into_iter().collect();
    load_params_files(&files, overrides, node_name)
}

/// [`load_params`] with several params files, applied in order (later files win), as
/// `--ros-args --params-file A --params-file B` does.
pub fn load_params_files(
    params_files: &[&Path],
    overrides: &[(String, String)],
    node_name: &str,
) -> Result<NodeParams> {
    let mut raw = BTreeMap::new();
    for f in params_files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(*f, e))?;
        let entries = parse_params_yaml(&text, node_name)
            .map_err(|m| Error::Parameter(format!("file {}: {m}", f.display())))?;
        raw.extend(entries);
    }
    for (k, v) in overrides {
        raw.insert(k.clone(), parse_value(v));
    }
    from_raw(raw)
}

/// `-p` values are YAML (`-p top_k:=5` is an int, `-p classes:=[person,dog]` a list).
pub fn parse_value(text: &str) -> Value {
    serde_yaml::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Whether a params-file top-level key addresses this node (`/**`, `name`, `/ns/name`,
/// `/**/name`), following rcl's rules for the forms people actually write.
fn key_matches(key: &str, node_name: &str) -> bool {
    let fq = if node_name.starts_with('/') {
        node_name.to_string()
    } else {
        format!("/{node_name}")
    };
    let base = fq.rsplit('/').next().unwrap_or("");
    key == "/**"
        || key == "**"
        || key == fq
        || key.trim_start_matches('/') == fq.trim_start_matches('/')
        || key == base
        || key == format!("/**/{base}")
}

/// The flattened `ros__parameters` of every section that addresses `node_name`, in file order.
pub fn parse_params_yaml(
    text: &str,
    node_name: &str,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let top = match doc {
        Value::Mapping(m) => m,
        Value::Null => return Ok(Vec::new()),
        _ => return Err("expected a map of node names to `ros__parameters`".into()),
    };
    let mut out = Vec::new();
    for (k, v) in top {
        let Some(key) = k.as_str() else {
            return Err(format!("node key {k:?} is not a string"));
        };
        if !key_matches(key, node_name) {
            continue;
        }
        let Value::Mapping(section) = v else {
            return Err(format!("`{key}` must be a map holding `ros__parameters`"));
        };
        for (sk, sv) in section {
            if sk.as_str() != Some("ros__parameters") {
                return Err(format!(
                    "`{key}` holds {sk:?}; only `ros__parameters` is allowed there"
                ));
            }
            flatten("", &sv, &mut out)?;
        }
    }
    Ok(out)
}

fn flatten(
    prefix: &str,
    v: &Value,
    out: &mut Vec<(String, Value)>,
) -> std::result::Result<(), String> {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let name = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(format!("parameter name {other:?} under `{prefix}`")),
                };
                let full = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&full, child, out)?;
            }
            Ok(())
        }
        Value::Tagged(t) => flatten(prefix, &t.value, out),
        _ if prefix.is_empty() => Err("`ros__parameters` must be a map".into()),
        _ => {
            out.push((prefix.to_string(), v.clone()));
            Ok(())
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) if n.is_f64() => format!("double {n}"),
        Value::Number(n) => format!("int {n}"),
        Value::String(s) => format!("string \"{s}\""),
        Value::Sequence(_) => "an array".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => describe(&t.value),
    }
}

/// Typed access to the raw values; every read removes the name so leftovers are unknown names.
struct Reader {
    raw: BTreeMap<String, Value>,
    errors: Vec<String>,
}

impl Reader {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.raw.remove(name)
    }

    fn err(&mut self, name: &str, msg: String) {
        self.errors.push(format!("`{name}`: {msg}"));
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.take(name) {
            None => default,
            Some(Value::Bool(b)) => b,
            // launch passes `use_sim_time:=True` (YAML 1.1 spelling, which serde_yaml reads as a string).
            Some(Value::String(s)) if matches!(s.as_str(), "true" | "True" | "TRUE") => true,
            Some(Value::String(s)) if matches!(s.as_str(), "false" | "False" | "FALSE") => false,
            Some(v) => {
                self.err(name, format!("expected a bool, got {}", describe(&v)));
                default
            }
        }
    }

    fn int(&mut self, name: &str, default: i64, lo: i64, hi: i64) -> i64 {
        match self.take(name) {
            None => default,
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                let v = n.as_i64().unwrap_or(default);
                if (lo..=hi).contains(&v) {
                    v
                } else {
                    self.err(name, format!("{v} is out of range, allowed {lo}..={hi}"));
                    default
                }
            }
            Some(v) => {
                self.err(name, format!("expected an int, got {}", describe(&v)));
                default
            }
        }
    }

    fn double(&mut self, name: &str, default: f64, lo: f64, hi: f64) -> f64 {
        match self.take(name) {
            None => default,
            // Integers are accepted for doubles (`period: 1`); rclcpp would refuse, people write it.
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= lo && v <= hi => v,
                Some(v) => {
                    self.err(name, format!("{v} is out of range, allowed {lo}..={hi}"));
                    default
                }
                None => default,
            },
            Some(v) => {
                self.err(name, format!("expected a double, got {}", describe(&v)));
                default
            }
        }
    }

    fn string(&mut self, name: &str, default: &str) -> String {
        match self.take(name) {
            None => default.to_string(),
            Some(Value::String(s)) => s,
            Some(v) => {
                self.err(name, format!("expected a string, got {}", describe(&v)));
                default.to_string()
            }
        }
    }

    fn choice<T: Copy>(&mut self, name: &str, default: T, options: &[(&str, T)]) -> T {
        let Some(v) = self.take(name) else {
            return default;
        };
        let allowed = options
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        match &v {
            Value::String(s) => match options.iter().find(|(n, _)| n == s) {
                Some((_, t)) => *t,
                None => {
                    self.err(name, format!("\"{s}\" is not one of: {allowed}"));
                    default
                }
            },
            _ => {
                self.err(
                    name,
                    format!(
                        "expected a string (one of: {allowed}), got {}",
                        describe(&v)
                    ),
                );
                default
            }
        }
    }

    fn string_array(&mut self, name: &str, default: &[&str]) -> Vec<String> {
        let owned = || default.iter().map(|s| s.to_string()).collect();
        match self.take(name) {
            None => owned(),
            Some(Value::Sequence(items)) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Value::String(s) => out.push(s),
                        other => {
                            self.err(
                                name,
                                format!("expected an array of strings, found {}", describe(&other)),
                            );
                            return owned();
                        }
                    }
                }
                out
            }
            Some(v) => {
                self.err(
                    name,
                    format!("expected an array of strings, got {}", describe(&v)),
                );
                owned()
            }
        }
    }

    fn qos(&mut self, prefix: &str, default: Qos) -> Qos {
        Qos {
            reliability: self.choice(
                &format!("{prefix}.reliability"),
                default.reliability,
                &[
                    ("reliable", Reliability::Reliable),
                    ("best_effort", Reliability::BestEffort),
                ],
            ),
            durability: self.choice(
                &format!("{prefix}.durability"),
                default.durability,
                &[
                    ("volatile", Durability::Volatile),
                    ("transient_local", Durability::TransientLocal),
                ],
            ),
            depth: self.int(
                &format!("{prefix}.depth"),
                default.depth as i64,
                1,
                MAX_QOS_DEPTH,
            ) as usize,
        }
    }

    fn thresholds(&mut self, prefix: &str, default: Thresholds) -> Thresholds {
        Thresholds {
            min_input_rate_hz: self.double(
                &format!("{prefix}.min_input_rate"),
                default.min_input_rate_hz,
                0.0,
                1e6,
            ),
            max_latency_p95_ms: self.double(
                &format!("{prefix}.max_latency_p95_ms"),
                default.max_latency_p95_ms,
                0.0,
                1e9,
            ),
            max_drop_ratio: self.double(
                &format!("{prefix}.max_drop_ratio"),
                default.max_drop_ratio,
                0.0,
                1.0,
            ),
        }
    }
}

/// A valid ROS name token: letters, digits, underscores, not starting with a digit.
fn is_name_token(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A topic name as ROS accepts it: optional leading `/` or `~/`, tokens separated by `/`.
pub fn is_valid_topic(t: &str) -> bool {
    let body = t
        .strip_prefix("~/")
        .or_else(|| t.strip_prefix('/'))
        .unwrap_or(t);
    !body.is_empty() && body.split('/').all(is_name_token)
}

pub const DEFAULT_WARN: Thresholds = Thresholds {
    min_input_rate_hz: 0.5,
    max_latency_p95_ms: 2000.0,
    max_drop_ratio: 0.5,
};
pub const DEFAULT_ERROR: Thresholds = Thresholds {
    min_input_rate_hz: 0.0,
    max_latency_p95_ms: 10000.0,
    max_drop_ratio: 0.95,
};

fn from_raw(raw: BTreeMap<String, Value>) -> Result<NodeParams> {
    let mut r = Reader {
        raw,
        errors: Vec::new(),
    };
    let weights = r.string("weights", "");
    if weights.trim().is_empty() {
        r.err(
            "weights",
            "required: a checkpoint path (.pth or .safetensors) or `synthetic[:SEED]`".into(),
        );
    }
    let config = r.string("config", "");
    if !config.is_empty() && !crate::config::CONFIG_NAMES.contains(&config.as_str()) {
        r.err(
            "config",
            format!(
                "\"{config}\" is not one of: \"\" (detect), {}",
                crate::config::CONFIG_NAMES.join(", ")
            ),
        );
    }
    let device = r.string("device", "auto");
    if !is_device(&device) {
        r.err(
            "device",
            format!("\"{device}\" is not one of: auto, cpu, cuda, cuda:N"),
        );
    }
    let fp16 = r.bool("fp16", false);
    let score_threshold = r.double("score_threshold", 0.15, 0.0, 1.0);
    let top_k = r.int("top_k", 100, 1, MAX_TOP_K as i64) as usize;
    let nms = r.choice(
        "nms",
        NmsKind::Fast,
        &[
            ("fast", NmsKind::Fast),
            ("cross_class", NmsKind::FastCrossClass),
            ("traditional", NmsKind::Traditional),
        ],
    );
    let crop_masks = r.bool("crop_masks", true);
    let classes = r.string_array("classes", &[]);
    let unknown: Vec<&String> = classes
        .iter()
        .filter(|c| crate::output::labels::class_by_name(c).is_none())
        .collect();
    if !unknown.is_empty() {
        let names = unknown
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        r.err(
            "classes",
            format!(
                "unknown class {names}; valid COCO names: {}",
                crate::output::labels::CLASS_NAMES.join(", ")
            ),
        );
    }

    let names = r.string_array("cameras.names", &["camera"]);
    if names.is_empty() {
        r.err("cameras.names", "needs at least one camera name".into());
    }
    let mut cameras: Vec<CameraParams> = Vec::new();
    for name in &names {
        if !is_name_token(name) || name == "names" {
            r.err(
                "cameras.names",
                format!("\"{name}\" is not a valid name (letters, digits, underscores)"),
            );
            continue;
        }
        if cameras.iter().any(|c| &c.name == name) {
            r.err("cameras.names", format!("\"{name}\" is listed twice"));
            continue;
        }
        let topic = r.string(
            &format!("cameras.{name}.topic"),
            &format!("{name}/image_raw"),
        );
        if !is_valid_topic(&topic) {
            r.err(
                &format!("cameras.{name}.topic"),
                format!("\"{topic}\" is not a valid topic name"),
            );
        }
        let transport = r.choice(
            &format!("cameras.{name}.transport"),
            InputTransport::Raw,
            &[
                ("raw", InputTransport::Raw),
                ("compressed", InputTransport::Compressed),
            ],
        );
        let output_namespace = r.string(
            &format!("cameras.{name}.output_namespace"),
            &format!("{name}/yolact"),
        );
        if !is_valid_topic(&output_namespace) {
            r.err(
                &format!("cameras.{name}.output_namespace"),
                format!("\"{output_namespace}\" is not a valid namespace"),
            );
        }
        let depth_topic = r.string(&format!("cameras.{name}.depth_topic"), "");
        if !depth_topic.is_empty() && !is_valid_topic(&depth_topic) {
            r.err(
                &format!("cameras.{name}.depth_topic"),
                format!("\"{depth_topic}\" is not a valid topic name"),
            );
        }
        let info = r.string(&format!("cameras.{name}.depth_info_topic"), "");
        let depth_info_topic = match (info.is_empty(), depth_topic.rsplit_once('/')) {
            (false, _) => info,
            (true, Some((dir, _))) => format!("{dir}/camera_info"),
            (true, None) if depth_topic.is_empty() => String::new(),
            (true, None) => "camera_info".to_string(),
        };
        if !depth_info_topic.is_empty() && !is_valid_topic(&depth_info_topic) {
            r.err(
                &format!("cameras.{name}.depth_info_topic"),
                format!("\"{depth_info_topic}\" is not a valid topic name"),
            );
        }
        cameras.push(CameraParams {
            name: name.clone(),
            topic,
            transport,
            output_namespace,
            depth_topic,
            depth_info_topic,
        });
    }
    let publish = PublishSwitches {
        instances: r.bool("publish.instances", true),
        detections: r.bool("publish.detections", true),
        label_image: r.bool("publish.label_image", true),
        overlay: r.bool("publish.overlay", true),
        detections_3d: r.bool("publish.detections_3d", true),
        points: r.bool("publish.points", true),
    };
    let input_qos = r.qos("qos.input", Qos::SENSOR_DATA);
    let output_qos = r.qos("qos.output", Qos::DEFAULT);
    let diagnostics = DiagnosticsParams {
        period_s: r.double("diagnostics.period", 1.0, 0.01, 3600.0),
        stale_timeout_s: r.double("diagnostics.stale_timeout", 5.0, 0.01, 1e6),
        warn: r.thresholds("diagnostics.warn", DEFAULT_WARN),
        error: r.thresholds("diagnostics.error", DEFAULT_ERROR),
    };
    let scale = r.double("depth.scale", 0.0, 0.0, 1e3);
    let depth = DepthParams {
        slop_s: r.double("depth.slop", 0.02, 0.0, 10.0),
        queue_size: r.int("depth.queue_size", 10, 1, 1000) as usize,
        scale: (scale > 0.0).then_some(scale),
        options: crate::depth::Depth3dOptions {
            erosion_px: r.int("depth.erosion_px", 2, 0, 100) as usize,
            min_depth: r.double("depth.min_depth", 0.1, 0.0, 1e4),
            max_depth: r.double("depth.max_depth", 10.0, 0.0, 1e4),
            outlier_k: r.double("depth.outlier_k", 3.0, 0.0, 100.0),
            max_gap: r.double("depth.max_gap", 0.02, 0.0, 100.0),
            min_points: r.int("depth.min_points", 20, 1, 1_000_000) as usize,
        },
    };
    if let Err(e) = depth.options.validate() {
        r.err("depth.min_depth", e.to_string());
    }
    let autostart = r.bool("autostart", true);
    let use_sim_time = r.bool("use_sim_time", false);

    // Anything left was never read: misspelt, or a camera's key for a camera not in `cameras`.
    let leftovers: Vec<String> = r.raw.keys().cloned().collect();
    for name in leftovers {
        let hint = match name.strip_prefix("cameras.") {
            Some(rest) if rest.contains('.') => format!(
                "unknown parameter (camera `{}` is not in `cameras.names` {:?}, or the key is not one of topic, transport, output_namespace, depth_topic, depth_info_topic)",
                rest.split('.').next().unwrap_or(""),
                names
            ),
            _ => "unknown parameter; see docs/ros.md for the list".to_string(),
        };
        r.err(&name, hint);
    }
    if !r.errors.is_empty() {
        return Err(Error::Parameter(r.errors.join("; ")));
    }
    Ok(NodeParams {
        weights,
        config,
        device,
        fp16,
        score_threshold,
        top_k,
        nms,
        crop_masks,
        classes,
        cameras,
        publish,
        input_qos,
        output_qos,
        diagnostics,
        depth,
        autostart,
        use_sim_time,
        remaps: Vec::new(),
    })
}

fn is_device(s: &str) -> bool {
    match s {
        "auto" | "cpu" | "cuda" => true,
        _ => s
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()),
    }
}

impl NodeParams {
    /// Parameters for `weights` with every other value at its default (for tests and tools).
    pub fn with_weights(weights: &str) -> Result<Self> {
        load_params(None, &[("weights".into(), weights.into())], "yolact")
    }

    /// The detector options these parameters ask for.
    pub fn infer_options(&self) -> crate::engine::InferOptions {
        crate::engine::InferOptions {
            score_threshold: self.score_threshold as f32,
            top_k: self.top_k,
            nms: self.nms,
            crop: self.crop_masks,
        }
    }

    /// Class ids of the allow-list; `None` = every class.
    pub fn class_filter(&self) -> Option<Vec<usize>> {
        if self.classes.is_empty() {
            None
        } else {
            Some(
                self.classes
                    .iter()
                    .filter_map(|c| crate::output::labels::class_by_name(c))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(yaml: &str, overrides: &[(&str, &str)]) -> Result<NodeParams> {
        let mut raw = BTreeMap::new();
        raw.extend(parse_params_yaml(yaml, "/ns/yolact").map_err(Error::Parameter)?);
        for (k, v) in ov(overrides) {
            raw.insert(k, parse_value(&v));
        }
        from_raw(raw)
    }

    #[test]
    fn nested_maps_flatten_to_dotted_names() {
        let p = load(
            "/**:\n  ros__parameters:\n    weights: w.pth\n    qos:\n      input:\n        depth: 3\n        reliability: reliable\n    diagnostics:\n      warn:\n        max_drop_ratio: 0.25\n",
            &[],
        )
        .unwrap();
        assert_eq!(p.input_qos.depth, 3);
        assert_eq!(p.input_qos.reliability, Reliability::Reliable);
        assert_eq!(p.diagnostics.warn.max_drop_ratio, 0.25);
        assert_eq!(p.output_qos, Qos::DEFAULT);
    }

    #[test]
    fn sections_for_other_nodes_are_ignored_and_later_ones_win() {
        let yaml = "other:\n  ros__parameters:\n    top_k: 3\n/**:\n  ros__parameters:\n    weights: a\n    top_k: 5\n/ns/yolact:\n  ros__parameters:\n    top_k: 7\n";
        assert_eq!(load(yaml, &[]).unwrap().top_k, 7);
        assert_eq!(load(yaml, &[("top_k", "9")]).unwrap().top_k, 9);
        assert!(key_matches("yolact", "/ns/yolact"));
        assert!(key_matches("/**/yolact", "/ns/yolact"));
        assert!(!key_matches("/other/yolact", "/ns/yolact"));
    }

    #[test]
    fn cameras_get_per_camera_keys_and_defaults() {
        let p = load(
            "/**:\n  ros__parameters:\n    weights: a\n    cameras:\n      names: [front, rear]\n      rear:\n        topic: /rear/img\n        transport: compressed\n",
            &[],
        )
        .unwrap();
        assert_eq!(p.cameras.len(), 2);
        assert_eq!(p.cameras[0].topic, "front/image_raw");
        assert_eq!(p.cameras[0].transport, InputTransport::Raw);
        assert_eq!(p.cameras[1].topic, "/rear/img");
        assert_eq!(p.cameras[1].transport, InputTransport::Compressed);
        assert_eq!(p.cameras[1].output_namespace, "rear/yolact");
    }

    #[test]
    fn every_problem_is_named_in_one_error() {
        let e = load(
            "",
            &[
                ("weights", "a"),
                ("top_kk", "3"),
                ("score_threshold", "high"),
                ("top_k", "0"),
                ("nms", "fastest"),
                ("cameras.ghost.topic", "/x"),
            ],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`top_kk`: unknown parameter",
            "`score_threshold`: expected a double, got string \"high\"",
            "`top_k`: 0 is out of range, allowed 1..=100000",
            "`nms`: \"fastest\" is not one of: fast, cross_class, traditional",
            "camera `ghost` is not in `cameras.names`",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
    }

    #[test]
    fn unknown_class_lists_the_valid_names() {
        let e = load("", &[("weights", "a"), ("classes", "[person, unicorn]")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"unicorn\""), "{e}");
        assert!(e.contains("toothbrush"), "{e}");
        assert!(!e.contains("\"person\""), "{e}");
        let p = load("", &[("weights", "a"), ("classes", "[dog, person]")]).unwrap();
        assert_eq!(p.class_filter(), Some(vec![16, 0]));
    }

    #[test]
    fn launch_style_bools_and_missing_weights() {
        let p = load("", &[("weights", "a"), ("use_sim_time", "True")]).unwrap();
        assert!(p.use_sim_time);
        let e = load("", &[]).unwrap_err().to_string();
        assert!(e.contains("`weights`: required"), "{e}");
        let e = load("", &[("weights", "a"), ("autostart", "3")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`autostart`: expected a bool, got int 3"), "{e}");
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(is_valid_topic("/a/b_c"));
        assert!(is_valid_topic("cam/image_raw"));
        assert!(is_valid_topic("~/out"));
        assert!(!is_valid_topic("/a//b"));
        assert!(!is_valid_topic("/a/1b"));
        assert!(!is_valid_topic("a b"));
        let e = load(
            "",
            &[("weights", "a"), ("cameras.camera.topic", "bad topic")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`cameras.camera.topic`"), "{e}");
    }
}
