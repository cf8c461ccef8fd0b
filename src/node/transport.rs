//! The one seam between the ROS-free node and a ROS 2 transport.
//!
//! Everything the node does (parameters, latest-frame policy, batching, inference, messages,
//! diagnostics, lifecycle) is transport-independent and tested in CI. A transport only moves
//! serialized messages: CDR bytes *including* the 4-byte encapsulation header, exactly as they
//! travel on the wire and sit in bags. Our own codecs (`crate::bag`, `crate::msgs`) read and write
//! them, so an adapter never needs generated message types; that is what lets the r2r adapter
//! type-check without ROS (r2r's `subscribe_raw` / `publish_raw` take the type as a string) and the
//! ros2-client adapter speak DDS without a ROS installation.
//!
//! Implementations: the r2r adapter (feature `ros`), the ros2-client adapter (feature `dds`) and
//! an in-process loopback used by the tests.

use std::fmt;

/// Reliability policy (REP-2003: best effort for sensor subscriptions, reliable for outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    Reliable,
    BestEffort,
}

/// Durability policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Volatile,
    TransientLocal,
}

/// The QoS subset that every transport here can express: history is always KEEP_LAST(depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Qos {
    pub reliability: Reliability,
    pub durability: Durability,
    /// KEEP_LAST depth; at least 1.
    pub depth: usize,
}

impl Qos {
    /// rclcpp's `SensorDataQoS`: best effort, volatile, keep last. Depth 1 here because the node
    /// only ever wants the newest frame.
    pub const SENSOR_DATA: Qos = Qos {
        reliability: Reliability::BestEffort,
        durability: Durability::Volatile,
        depth: 1,
    };

    /// rclcpp's default publisher QoS: reliable, volatile, keep last 10.
    pub const DEFAULT: Qos = Qos {
        reliability: Reliability::Reliable,
        durability: Durability::Volatile,
        depth: 10,
    };
}

impl fmt::Display for Qos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rel = match self.reliability {
            Reliability::Reliable => "reliable",
            Reliability::BestEffort => "best_effort",
        };
        let dur = match self.durability {
            Durability::Volatile => "volatile",
            Durability::TransientLocal => "transient_local",
        };
        write!(f, "{rel}, {dur}, keep_last({})", self.depth)
    }
}

/// A transport failure, with the topic it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{topic}: {message}")]
pub struct TransportError {
    pub topic: String,
    pub message: String,
}

impl TransportError {
    pub fn new(topic: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            topic: topic.into(),
            message: message.to_string(),
        }
    }
}

/// Receives every message of one subscription as serialized CDR (with encapsulation header).
/// Called from the transport's own thread or task; it must return quickly (the node only stores
/// the bytes in the camera's latest-frame slot).
pub type RawSink = Box<dyn FnMut(Vec<u8>) + Send>;

/// Identifies a subscription for [`Transport::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// A publisher of one topic and type.
pub trait RawPublisher: Send + Sync {
    /// Publishes one serialized message (CDR with encapsulation header).
    fn publish(&self, cdr: &[u8]) -> Result<(), TransportError>;

    /// How many subscriptions are matched right now; `None` when the transport cannot tell, in
    /// which case the node treats the topic as subscribed. The overlay image is only computed
    /// while this is non-zero.
    fn subscription_count(&self) -> Option<usize>;
}

/// A ROS 2 transport: topics by fully qualified name (`/ns/camera/image_raw`) and ROS type name
/// (`sensor_msgs/msg/Image`).
pub trait Transport: Send {
    /// Starts delivering the messages of `topic` to `sink`.
    fn subscribe(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
        sink: RawSink,
    ) -> Result<SubscriptionId, TransportError>;

    /// Stops a subscription; messages already in flight may still reach its sink.
    fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), TransportError>;

    /// Creates a publisher.
    fn advertise(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
    ) -> Result<Box<dyn RawPublisher>, TransportError>;

    /// Offers the standard lifecycle services under the node's name (`<node>/change_state`,
    /// `<node>/get_state`, ...), answering from `control`. Called once when the node starts.
    fn serve_lifecycle(
        &mut self,
        control: std::sync::Arc<dyn LifecycleControl>,
    ) -> Result<(), TransportError>;
}

/// A lifecycle state as `lifecycle_msgs/msg/State` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleState {
    /// `lifecycle_msgs/msg/State` constant (1 unconfigured, 2 inactive, 3 active, 4 finalized,
    /// 10..15 the transition states).
    pub id: u8,
    pub label: String,
}

/// A transition as `lifecycle_msgs/msg/TransitionDescription` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleTransition {
    /// `lifecycle_msgs/msg/Transition` constant (1 configure, 2 cleanup, 3 activate, 4 deactivate,
    /// 5/6/7 shutdown from unconfigured/inactive/active).
    pub id: u8,
    pub label: String,
    pub start: LifecycleState,
    pub goal: LifecycleState,
}

/// What a transport's lifecycle services (`~/change_state`, `~/get_state`,
/// `~/get_available_states`, `~/get_available_transitions`, `~/get_transition_graph`) call. The
/// node publishes `~/transition_event` itself through [`Transport::advertise`].
pub trait LifecycleControl: Send + Sync {
    fn current_state(&self) -> LifecycleState;
    /// Runs a transition by `lifecycle_msgs/msg/Transition` id (0 = look it up by `label`), as
    /// `~/change_state` does; `false` when it is not valid from the current state or it failed.
    fn change_state(&self, transition_id: u8, label: &str) -> bool;
    fn available_states(&self) -> Vec<LifecycleState>;
    /// Transitions valid from the current state.
    fn available_transitions(&self) -> Vec<LifecycleTransition>;
    /// Every transition of the graph.
    fn transition_graph(&self) -> Vec<LifecycleTransition>;
}
