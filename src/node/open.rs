//! Picks the transport the binary was built with.

use super::transport::{Transport, TransportError};

/// Which ROS 2 transport `yolact node` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// rcl through r2r (cargo feature `ros`; needs a sourced ROS 2 installation to build).
    Ros,
    /// DDS through ros2-client (cargo feature `dds`; no ROS installation needed).
    Dds,
}

/// The node's name, namespace and DDS domain, after `--ros-args` remapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name without namespace, e.g. `yolact`.
    pub name: String,
    /// Absolute namespace, `/` for none.
    pub namespace: String,
    /// `ROS_DOMAIN_ID`.
    pub domain_id: u16,
}

/// The transport kind built into this binary, preferring rcl: what `yolact node` uses by default.
pub fn default_kind() -> Option<TransportKind> {
    if cfg!(feature = "ros") {
        Some(TransportKind::Ros)
    } else if cfg!(feature = "dds") {
        Some(TransportKind::Dds)
    } else {
        None
    }
}

/// Connects to the ROS 2 graph.
pub fn open_transport(
    kind: TransportKind,
    identity: &NodeIdentity,
) -> Result<Box<dyn Transport>, TransportError> {
    match kind {
        TransportKind::Ros => open_ros(identity),
        TransportKind::Dds => open_dds(identity),
    }
}

#[cfg(feature = "ros")]
fn open_ros(identity: &NodeIdentity) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(super::ros::RosTransport::open(identity)?))
}

#[cfg(not(feature = "ros"))]
fn open_ros(identity: &NodeIdentity) -> Result<Box<dyn Transport>, TransportError> {
    Err(TransportError::new(
        identity.name.clone(),
        "this binary was built without the `ros` feature (r2r); build it with colcon, or \
         `cargo build --release --features ros` in a sourced ROS 2 shell, or use --transport dds",
    ))
}

#[cfg(feature = "dds")]
fn open_dds(identity: &NodeIdentity) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(super::dds::DdsTransport::open(identity)?))
}

#[cfg(not(feature = "dds"))]
fn open_dds(identity: &NodeIdentity) -> Result<Box<dyn Transport>, TransportError> {
    Err(TransportError::new(
        identity.name.clone(),
        "this binary was built without the `dds` feature (ros2-client); rebuild with \
         `cargo build --release --features dds`",
    ))
}
