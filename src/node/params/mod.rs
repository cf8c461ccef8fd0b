//! The node's ROS parameters: a ROS 2 params file (`<node>: ros__parameters: {...}`) plus
//! `-p name:=value` overrides, validated into [`NodeParams`].
//!
//! `table` lists every parameter once (name, type, default, range, meaning); `file` reads the
//! params-file format; `reader` reads typed values by the table; the checks that relate values
//! (names, topics, classes) are here; `render` writes `config/yolact.yaml` and the docs table
//! from the table. Every problem (unknown name, wrong type, out-of-range value) is collected and
//! reported in one startup error, so a broken config file is fixed in one go rather than one line
//! per restart.

mod file;
mod reader;
pub mod render;
pub mod table;

pub use file::{parse_params_yaml, parse_value};
pub use reader::Resolved;
pub use table::{Param, MAX_QOS_DEPTH, MAX_TOP_K, PARAMETERS};

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::node::transport::{Durability, Qos, Reliability};
use crate::post::fast_nms::NmsKind;
use reader::Reader;

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
    resolve_params_files(params_files, overrides, node_name).map(|(p, _)| p)
}

/// [`load_params_files`], also returning every parameter's resolved value (for `--dry-run`).
pub fn resolve_params_files(
    params_files: &[&Path],
    overrides: &[(String, String)],
    node_name: &str,
) -> Result<(NodeParams, Vec<Resolved>)> {
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
    min_input_rate_hz: table::WARN_MIN_INPUT_RATE.default_double(),
    max_latency_p95_ms: table::WARN_MAX_LATENCY.default_double(),
    max_drop_ratio: table::WARN_MAX_DROP_RATIO.default_double(),
};
pub const DEFAULT_ERROR: Thresholds = Thresholds {
    min_input_rate_hz: table::ERROR_MIN_INPUT_RATE.default_double(),
    max_latency_p95_ms: table::ERROR_MAX_LATENCY.default_double(),
    max_drop_ratio: table::ERROR_MAX_DROP_RATIO.default_double(),
};

const RELIABILITY: &[(&str, Reliability)] = &[
    ("reliable", Reliability::Reliable),
    ("best_effort", Reliability::BestEffort),
];
const DURABILITY: &[(&str, Durability)] = &[
    ("volatile", Durability::Volatile),
    ("transient_local", Durability::TransientLocal),
];

fn from_raw(raw: BTreeMap<String, Value>) -> Result<(NodeParams, Vec<Resolved>)> {
    use table as t;
    let mut r = Reader::new(raw);
    let weights = r.string(&t::WEIGHTS);
    if weights.trim().is_empty() {
        r.err(
            "weights",
            "empty: `yolact_plus_mini` (the shipped model), a checkpoint path (.pth or .safetensors), a released config name or `synthetic[:SEED]`".into(),
        );
    }
    let config = r.string(&t::CONFIG);
    if !config.is_empty() && !crate::config::builtin_names().any(|n| n == config) {
        r.err(
            "config",
            format!(
                "\"{config}\" is not one of: \"\" (detect), {}",
                crate::config::builtin_names()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let device = r.string(&t::DEVICE);
    if !is_device(&device) {
        r.err(
            "device",
            format!("\"{device}\" is not one of: auto, cpu, cuda, cuda:N"),
        );
    }
    let fp16 = r.bool(&t::FP16);
    let score_threshold = r.double(&t::SCORE_THRESHOLD);
    let top_k = r.int(&t::TOP_K) as usize;
    let nms = r.choice(
        &t::NMS,
        &[
            ("fast", NmsKind::Fast),
            ("cross_class", NmsKind::FastCrossClass),
            ("traditional", NmsKind::Traditional),
        ],
    );
    let crop_masks = r.bool(&t::CROP_MASKS);
    let classes = r.string_array(&t::CLASSES);
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

    let names = r.string_array(&t::CAMERA_NAMES);
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
        let topic = r.string_at(&t::CAMERA_TOPIC, name);
        if !is_valid_topic(&topic) {
            r.err(
                &t::CAMERA_TOPIC.name_for(name),
                format!("\"{topic}\" is not a valid topic name"),
            );
        }
        let transport = r.choice_at(
            &t::CAMERA_TRANSPORT,
            name,
            &[
                ("raw", InputTransport::Raw),
                ("compressed", InputTransport::Compressed),
            ],
        );
        let output_namespace = r.string_at(&t::CAMERA_OUTPUT_NAMESPACE, name);
        if !is_valid_topic(&output_namespace) {
            r.err(
                &t::CAMERA_OUTPUT_NAMESPACE.name_for(name),
                format!("\"{output_namespace}\" is not a valid namespace"),
            );
        }
        let depth_topic = r.string_at(&t::CAMERA_DEPTH_TOPIC, name);
        if !depth_topic.is_empty() && !is_valid_topic(&depth_topic) {
            r.err(
                &t::CAMERA_DEPTH_TOPIC.name_for(name),
                format!("\"{depth_topic}\" is not a valid topic name"),
            );
        }
        let info = r.string_at(&t::CAMERA_DEPTH_INFO_TOPIC, name);
        let depth_info_topic = match (info.is_empty(), depth_topic.is_empty()) {
            (false, _) => info,
            (true, true) => String::new(),
            (true, false) => crate::depth::camera_info_next_to(&depth_topic),
        };
        if !depth_info_topic.is_empty() && !is_valid_topic(&depth_info_topic) {
            r.err(
                &t::CAMERA_DEPTH_INFO_TOPIC.name_for(name),
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
        instances: r.bool(&t::PUBLISH_INSTANCES),
        detections: r.bool(&t::PUBLISH_DETECTIONS),
        label_image: r.bool(&t::PUBLISH_LABEL_IMAGE),
        overlay: r.bool(&t::PUBLISH_OVERLAY),
        detections_3d: r.bool(&t::PUBLISH_DETECTIONS_3D),
        points: r.bool(&t::PUBLISH_POINTS),
    };
    let input_qos = Qos {
        reliability: r.choice(&t::QOS_INPUT_RELIABILITY, RELIABILITY),
        durability: r.choice(&t::QOS_INPUT_DURABILITY, DURABILITY),
        depth: r.int(&t::QOS_INPUT_DEPTH) as usize,
    };
    let output_qos = Qos {
        reliability: r.choice(&t::QOS_OUTPUT_RELIABILITY, RELIABILITY),
        durability: r.choice(&t::QOS_OUTPUT_DURABILITY, DURABILITY),
        depth: r.int(&t::QOS_OUTPUT_DEPTH) as usize,
    };
    let diagnostics = DiagnosticsParams {
        period_s: r.double(&t::DIAG_PERIOD),
        stale_timeout_s: r.double(&t::DIAG_STALE_TIMEOUT),
        warn: Thresholds {
            min_input_rate_hz: r.double(&t::WARN_MIN_INPUT_RATE),
            max_latency_p95_ms: r.double(&t::WARN_MAX_LATENCY),
            max_drop_ratio: r.double(&t::WARN_MAX_DROP_RATIO),
        },
        error: Thresholds {
            min_input_rate_hz: r.double(&t::ERROR_MIN_INPUT_RATE),
            max_latency_p95_ms: r.double(&t::ERROR_MAX_LATENCY),
            max_drop_ratio: r.double(&t::ERROR_MAX_DROP_RATIO),
        },
    };
    let slop_s = r.double(&t::DEPTH_SLOP);
    let queue_size = r.int(&t::DEPTH_QUEUE_SIZE) as usize;
    let scale = r.double(&t::DEPTH_SCALE);
    let depth = DepthParams {
        slop_s,
        queue_size,
        scale: (scale > 0.0).then_some(scale),
        options: crate::depth::Depth3dOptions {
            erosion_px: r.int(&t::DEPTH_EROSION_PX) as usize,
            min_depth: r.double(&t::DEPTH_MIN_DEPTH),
            max_depth: r.double(&t::DEPTH_MAX_DEPTH),
            outlier_k: r.double(&t::DEPTH_OUTLIER_K),
            max_gap: r.double(&t::DEPTH_MAX_GAP),
            min_points: r.int(&t::DEPTH_MIN_POINTS) as usize,
        },
    };
    if let Err(e) = depth.options.validate() {
        r.err(t::DEPTH_MIN_DEPTH.name, e.to_string());
    }
    let autostart = r.bool(&t::AUTOSTART);
    let use_sim_time = r.bool(&t::USE_SIM_TIME);

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
    let params = NodeParams {
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
    };
    Ok((params, r.resolved))
}

fn is_device(s: &str) -> bool {
    s.parse::<crate::cuda::DeviceChoice>().is_ok()
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
    /// The class ids `classes` names, for a model with `model_classes` (its own names) or
    /// COCO's (None).
    pub fn class_filter(&self, model_classes: Option<&[String]>) -> Option<Vec<usize>> {
        if self.classes.is_empty() {
            return None;
        }
        Some(
            self.classes
                .iter()
                .filter_map(|c| match model_classes {
                    Some(names) => names.iter().position(|n| n == c),
                    None => crate::output::labels::class_by_name(c),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::file::key_matches;
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
        from_raw(raw).map(|(p, _)| p)
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
        assert_eq!(p.class_filter(None), Some(vec![16, 0]));
        let own = ["cat".to_string(), "person".to_string()];
        assert_eq!(
            p.class_filter(Some(&own)),
            Some(vec![1]),
            "no dog in this model"
        );
    }

    #[test]
    fn launch_style_bools_and_default_or_empty_weights() {
        let p = load("", &[("weights", "a"), ("use_sim_time", "True")]).unwrap();
        assert!(p.use_sim_time);
        let p = load("", &[]).unwrap();
        assert_eq!(p.weights, crate::weights::shipped::SHIPPED_NAME);
        let e = load("", &[("weights", "''")]).unwrap_err().to_string();
        assert!(e.contains("`weights`: empty"), "{e}");
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

    #[test]
    fn the_reader_reads_the_table_in_its_order() {
        let raw = BTreeMap::from([("weights".to_string(), parse_value("w.pth"))]);
        let (p, resolved) = from_raw(raw).unwrap();
        let read: Vec<&str> = resolved.iter().map(|r| r.name.as_str()).collect();
        let table: Vec<String> = PARAMETERS.iter().map(|p| p.name_for("camera")).collect();
        assert_eq!(read, table);
        assert_eq!(
            resolved.iter().filter(|r| !r.default).count(),
            1,
            "{resolved:?}"
        );
        // The QoS defaults are the ROS profiles the docs name.
        assert_eq!(p.input_qos, Qos::SENSOR_DATA);
        assert_eq!(p.output_qos, Qos::DEFAULT);
    }
}
