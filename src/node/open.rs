//! Picks the transport the binary was built with, and the options it is opened with.

use crate::error::{Error, Result};

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

/// The variable `yolact node` reads (once, at startup) for [`DdsOptions::service_mapping`].
pub const SERVICE_MAPPING_ENV: &str = "YOLACT_DDS_SERVICE_MAPPING";

/// How the DDS transport's services carry the request id on the wire. It differs between rmw
/// implementations, and a client only understands a server that uses its own rmw's mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceMapping {
    /// Fast DDS: the sample identity in inline QoS (rmw_fastrtps, the default rmw of Humble and
    /// Jazzy).
    #[default]
    Enhanced,
    /// rmw_cyclonedds: a 16-byte client-GUID/sequence header in the payload.
    Cyclone,
    /// The DDS-RPC basic mapping: a request header in the payload.
    Basic,
}

impl ServiceMapping {
    pub const ALL: [ServiceMapping; 3] = [Self::Enhanced, Self::Cyclone, Self::Basic];

    /// The name [`SERVICE_MAPPING_ENV`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Enhanced => "enhanced",
            Self::Cyclone => "cyclone",
            Self::Basic => "basic",
        }
    }

    /// The mapping a value of [`SERVICE_MAPPING_ENV`] names (any case); unset or empty is the
    /// default, anything else is an error rather than a silent fallback (a wrong mapping shows
    /// only as lifecycle services that never answer).
    pub fn from_env_value(value: Option<&str>) -> Result<Self> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::default());
        };
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(v))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                Error::Transport(TransportError::new(
                    SERVICE_MAPPING_ENV,
                    format!("`{v}`: expected one of {}", names.join(", ")),
                ))
            })
    }
}

/// How [`open_transport`] opens the DDS transport (the `ros` transport leaves these to rcl's
/// rmw). Explicit rather than read from the environment deep in the library, so that callers
/// (tests in one process among them) each choose their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DdsOptions {
    /// The lifecycle services' request/reply mapping; must match the peers' rmw.
    pub service_mapping: ServiceMapping,
}

/// Connects to the ROS 2 graph.
pub fn open_transport(
    kind: TransportKind,
    identity: &NodeIdentity,
    dds: &DdsOptions,
) -> Result<Box<dyn Transport>, TransportError> {
    match kind {
        TransportKind::Ros => open_ros(identity),
        TransportKind::Dds => open_dds(identity, dds),
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
fn open_dds(
    identity: &NodeIdentity,
    options: &DdsOptions,
) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(super::dds::DdsTransport::open_with(
        identity, options,
    )?))
}

#[cfg(not(feature = "dds"))]
fn open_dds(
    identity: &NodeIdentity,
    _options: &DdsOptions,
) -> Result<Box<dyn Transport>, TransportError> {
    Err(TransportError::new(
        identity.name.clone(),
        "this binary was built without the `dds` feature (ros2-client); rebuild with \
         `cargo build --release --features dds`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_mapping_is_chosen_by_name_in_any_case() {
        let parse = ServiceMapping::from_env_value;
        assert_eq!(parse(None).unwrap(), ServiceMapping::Enhanced);
        assert_eq!(parse(Some("")).unwrap(), ServiceMapping::Enhanced);
        assert_eq!(parse(Some(" ")).unwrap(), ServiceMapping::Enhanced);
        assert_eq!(parse(Some("enhanced")).unwrap(), ServiceMapping::Enhanced);
        assert_eq!(parse(Some("Cyclone")).unwrap(), ServiceMapping::Cyclone);
        assert_eq!(parse(Some("BASIC")).unwrap(), ServiceMapping::Basic);
    }

    #[test]
    fn an_unknown_service_mapping_is_an_error_naming_the_variable_and_the_choices() {
        let e = ServiceMapping::from_env_value(Some("zenoh"))
            .unwrap_err()
            .to_string();
        for part in [
            SERVICE_MAPPING_ENV,
            "`zenoh`",
            "enhanced",
            "cyclone",
            "basic",
        ] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
    }
}
