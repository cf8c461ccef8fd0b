//! Topic names: resolution under the node's namespace, `--ros-args -r from:=to` remapping, and
//! the table of every topic the node subscribes and publishes.

use super::open::NodeIdentity;
use super::params::{InputTransport, NodeParams};
use super::transport::Qos;
use crate::bag::image_msg::{COMPRESSED_IMAGE_TYPE, IMAGE_TYPE};
use crate::msgs::schema;

pub const DIAGNOSTICS_TOPIC: &str = "/diagnostics";

/// `/ns/name` of the node.
pub fn node_fqn(id: &NodeIdentity) -> String {
    let ns = id.namespace.trim_end_matches('/');
    format!("{ns}/{}", id.name)
}

/// Resolves a topic name as rcl does: absolute stays, `~/x` is under the node, else under the
/// namespace.
pub fn resolve(name: &str, id: &NodeIdentity) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else if let Some(rest) = name.strip_prefix("~/") {
        format!("{}/{rest}", node_fqn(id))
    } else {
        let ns = id.namespace.trim_end_matches('/');
        format!("{ns}/{name}")
    }
}

/// Resolves, then applies the first remap whose (resolved) source matches.
pub fn resolve_remapped(name: &str, id: &NodeIdentity, remaps: &[(String, String)]) -> String {
    let r = resolve(name, id);
    for (from, to) in remaps {
        if resolve(from, id) == r {
            return resolve(to, id);
        }
    }
    r
}

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Input,
    Instances,
    Detections,
    LabelImage,
    Overlay,
    /// The aligned depth image of a camera (`cameras.<name>.depth_topic`).
    DepthInput,
    /// Its `CameraInfo`.
    DepthInfoInput,
    Detections3d,
    Points,
    Diagnostics,
    TransitionEvent,
}

/// One row of the topic table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicEntry {
    /// Camera name, or empty for node-wide topics.
    pub camera: String,
    pub role: Role,
    pub topic: String,
    pub type_name: String,
    pub qos: Qos,
}

impl TopicEntry {
    pub fn is_input(&self) -> bool {
        matches!(
            self.role,
            Role::Input | Role::DepthInput | Role::DepthInfoInput
        )
    }

    pub fn direction(&self) -> &'static str {
        if self.is_input() {
            "sub"
        } else {
            "pub"
        }
    }
}

/// Every topic of the node, inputs first, then per camera outputs, then `/diagnostics` and
/// `~/transition_event`.
pub fn topic_table(p: &NodeParams, id: &NodeIdentity) -> Vec<TopicEntry> {
    let r = |n: &str| resolve_remapped(n, id, &p.remaps);
    let mut out = Vec::new();
    for c in &p.cameras {
        let (topic, ty) = match c.transport {
            InputTransport::Raw => (c.topic.clone(), IMAGE_TYPE),
            InputTransport::Compressed => (
                format!("{}/compressed", c.topic.trim_end_matches('/')),
                COMPRESSED_IMAGE_TYPE,
            ),
        };
        out.push(TopicEntry {
            camera: c.name.clone(),
            role: Role::Input,
            topic: r(&topic),
            type_name: ty.into(),
            qos: p.input_qos,
        });
    }
    for c in p.cameras.iter().filter(|c| !c.depth_topic.is_empty()) {
        for (role, topic, ty) in [
            (Role::DepthInput, &c.depth_topic, IMAGE_TYPE),
            (
                Role::DepthInfoInput,
                &c.depth_info_topic,
                schema::CAMERA_INFO,
            ),
        ] {
            out.push(TopicEntry {
                camera: c.name.clone(),
                role,
                topic: r(topic),
                type_name: ty.into(),
                qos: p.input_qos,
            });
        }
    }
    for c in &p.cameras {
        let ns = c.output_namespace.trim_end_matches('/');
        let outputs = [
            (
                p.publish.instances,
                Role::Instances,
                "instances",
                schema::INSTANCE_ARRAY,
            ),
            (
                p.publish.detections,
                Role::Detections,
                "detections",
                schema::DETECTION2D_ARRAY,
            ),
            (
                p.publish.label_image,
                Role::LabelImage,
                "label_image",
                IMAGE_TYPE,
            ),
            (p.publish.overlay, Role::Overlay, "overlay", IMAGE_TYPE),
        ];
        let depth = !c.depth_topic.is_empty();
        let depth_outputs = [
            (
                depth && p.publish.detections_3d,
                Role::Detections3d,
                "detections_3d",
                schema::DETECTION3D_ARRAY,
            ),
            (
                depth && p.publish.points,
                Role::Points,
                "points",
                schema::POINT_CLOUD2,
            ),
        ];
        for (on, role, leaf, ty) in outputs.into_iter().chain(depth_outputs) {
            if on {
                out.push(TopicEntry {
                    camera: c.name.clone(),
                    role,
                    topic: r(&format!("{ns}/{leaf}")),
                    type_name: ty.into(),
                    qos: p.output_qos,
                });
            }
        }
    }
    out.push(TopicEntry {
        camera: String::new(),
        role: Role::Diagnostics,
        topic: r(DIAGNOSTICS_TOPIC),
        type_name: schema::DIAGNOSTIC_ARRAY.into(),
        qos: p.output_qos,
    });
    out.push(TopicEntry {
        camera: String::new(),
        role: Role::TransitionEvent,
        topic: r("~/transition_event"),
        type_name: super::lifecycle::TRANSITION_EVENT_TYPE.into(),
        // rclcpp's lifecycle publisher QoS: reliable, volatile, keep last 10.
        qos: Qos::DEFAULT,
    });
    out
}

/// The table as aligned text (for `--dry-run` and the start-up log).
pub fn format_table(rows: &[TopicEntry]) -> String {
    let w_topic = rows.iter().map(|r| r.topic.len()).max().unwrap_or(5).max(5);
    let w_type = rows
        .iter()
        .map(|r| r.type_name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!("dir  {:w_topic$}  {:w_type$}  qos\n", "topic", "type");
    for r in rows {
        s.push_str(&format!(
            "{:4} {:w_topic$}  {:w_type$}  {}\n",
            r.direction(),
            r.topic,
            r.type_name,
            r.qos
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str) -> NodeIdentity {
        NodeIdentity {
            name: "yolact".into(),
            namespace: ns.into(),
            domain_id: 0,
        }
    }

    #[test]
    fn resolves_relative_private_and_absolute_names() {
        assert_eq!(resolve("cam/image_raw", &id("/")), "/cam/image_raw");
        assert_eq!(
            resolve("cam/image_raw", &id("/robot")),
            "/robot/cam/image_raw"
        );
        assert_eq!(
            resolve("~/transition_event", &id("/")),
            "/yolact/transition_event"
        );
        assert_eq!(resolve("~/x", &id("/r")), "/r/yolact/x");
        assert_eq!(resolve("/abs", &id("/r")), "/abs");
        let remaps = vec![("cam/image_raw".to_string(), "/front/image".to_string())];
        assert_eq!(
            resolve_remapped("/r/cam/image_raw", &id("/r"), &remaps),
            "/front/image"
        );
        assert_eq!(resolve_remapped("other", &id("/r"), &remaps), "/r/other");
    }

    #[test]
    fn table_lists_compressed_inputs_and_switched_outputs() {
        let mut p = NodeParams::with_weights("w").unwrap();
        p.cameras[0].transport = InputTransport::Compressed;
        p.publish.overlay = false;
        let t = topic_table(&p, &id("/r"));
        let names: Vec<&str> = t.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "/r/camera/image_raw/compressed",
                "/r/camera/yolact/instances",
                "/r/camera/yolact/detections",
                "/r/camera/yolact/label_image",
                "/diagnostics",
                "/r/yolact/transition_event"
            ]
        );
        assert_eq!(t[0].type_name, COMPRESSED_IMAGE_TYPE);
        assert_eq!(t[0].qos, Qos::SENSOR_DATA);
        assert_eq!(t[1].qos, Qos::DEFAULT);
    }
}
