//! Serialized messages through RustDDS untouched: a pass-through (de)serializer adapter and the
//! ROS 2 ⇄ DDS name mapping.

use ros2_client::dds::rustdds;
use rustdds::bytes::Bytes;
use rustdds::no_key::{Decode, DefaultDecoder, DeserializerAdapter, SerializerAdapter};
use rustdds::RepresentationIdentifier;

use crate::node::transport::TransportError;

/// One serialized ROS message: CDR with its 4-byte encapsulation header, as the seam carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCdr(Vec<u8>);

/// Why a message cannot cross to DDS as it is.
#[derive(Debug, thiserror::Error)]
pub enum RawCdrError {
    #[error("serialized message of {0} bytes has no 4-byte CDR encapsulation header")]
    Short(usize),
    #[error("encapsulation {0:02x}{1:02x} is not plain little-endian CDR (00 01); DDS writers here emit CDR_LE")]
    NotCdrLe(u8, u8),
}

impl RawCdr {
    /// Checks the header of a message the node wants to publish. Only CDR_LE goes out because a
    /// RustDDS writer announces one representation per adapter type; our codecs write CDR_LE.
    pub fn from_message(cdr: &[u8]) -> Result<Self, RawCdrError> {
        if cdr.len() < 4 {
            return Err(RawCdrError::Short(cdr.len()));
        }
        if cdr[..2] != RepresentationIdentifier::CDR_LE.to_bytes() {
            return Err(RawCdrError::NotCdrLe(cdr[0], cdr[1]));
        }
        Ok(Self(cdr.to_vec()))
    }

    /// The message with its encapsulation header.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// RustDDS hands the adapter the payload after the encapsulation header and the representation
/// separately; the adapter glues them back together (options bytes zero, as rmw writes them).
pub struct RawAdapter;

#[derive(Debug, Clone, Copy)]
pub struct RawDecoder;

const ENCODINGS: [RepresentationIdentifier; 2] = [
    RepresentationIdentifier::CDR_LE,
    RepresentationIdentifier::CDR_BE,
];

impl DeserializerAdapter<RawCdr> for RawAdapter {
    type Error = RawCdrError;
    type Decoded = RawCdr;

    fn supported_encodings() -> &'static [RepresentationIdentifier] {
        &ENCODINGS
    }

    fn transform_decoded(decoded: RawCdr) -> RawCdr {
        decoded
    }
}

impl DefaultDecoder<RawCdr> for RawAdapter {
    type Decoder = RawDecoder;
    const DECODER: RawDecoder = RawDecoder;
}

impl<'de> Decode<'de, RawCdr> for RawDecoder {
    type Error = RawCdrError;

    fn decode_bytes(
        self,
        input_bytes: &'de [u8],
        encoding: RepresentationIdentifier,
    ) -> Result<RawCdr, RawCdrError> {
        let mut v = Vec::with_capacity(input_bytes.len() + 4);
        v.extend_from_slice(&encoding.to_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(input_bytes);
        Ok(RawCdr(v))
    }
}

impl SerializerAdapter<RawCdr> for RawAdapter {
    type Error = RawCdrError;

    fn output_encoding() -> RepresentationIdentifier {
        RepresentationIdentifier::CDR_LE
    }

    fn to_bytes(value: &RawCdr) -> Result<Bytes, RawCdrError> {
        match value.0.get(4..) {
            Some(body) => Ok(Bytes::copy_from_slice(body)),
            None => Err(RawCdrError::Short(value.0.len())),
        }
    }
}

/// `/ns/camera/image_raw` → `rt/ns/camera/image_raw` (ROS 2 topic name mapping for DDS).
pub fn dds_topic_name(topic: &str) -> Result<String, TransportError> {
    let valid = topic.len() > 1
        && topic.starts_with('/')
        && !topic.ends_with('/')
        && !topic.contains("//")
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/');
    if !valid {
        return Err(TransportError::new(
            topic,
            "not a fully qualified ROS 2 topic name (expected e.g. /ns/camera/image_raw)",
        ));
    }
    Ok(format!("rt{topic}"))
}

/// `sensor_msgs/msg/Image` → `sensor_msgs::msg::dds_::Image_`.
pub fn dds_type_name(type_name: &str) -> Result<String, String> {
    let parts: Vec<&str> = type_name.split('/').collect();
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match parts.as_slice() {
        [pkg, kind @ ("msg" | "srv"), name] if ident(pkg) && ident(name) => {
            Ok(format!("{pkg}::{kind}::dds_::{name}_"))
        }
        _ => Err(format!(
            "`{type_name}` is not a ROS 2 interface type name (expected pkg/msg/Type)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_ros2_dds_mapping() {
        assert_eq!(
            dds_topic_name("/camera/image_raw").unwrap(),
            "rt/camera/image_raw"
        );
        assert_eq!(dds_topic_name("/diagnostics").unwrap(), "rt/diagnostics");
        for bad in ["", "/", "camera", "/a//b", "/a/", "/a b"] {
            assert!(dds_topic_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            dds_type_name("sensor_msgs/msg/Image").unwrap(),
            "sensor_msgs::msg::dds_::Image_"
        );
        assert_eq!(
            dds_type_name("yolact_ros2_msgs/msg/InstanceArray").unwrap(),
            "yolact_ros2_msgs::msg::dds_::InstanceArray_"
        );
        for bad in [
            "Image",
            "sensor_msgs/Image",
            "a/b/c/d",
            "sensor_msgs/idl/Image",
            "/msg/X",
        ] {
            assert!(dds_type_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_round_trips_with_its_header() {
        let msg = [0u8, 1, 0, 0, 7, 0, 0, 0, b'a', b'b'];
        let raw = RawCdr::from_message(&msg).unwrap();
        let body = <RawAdapter as SerializerAdapter<RawCdr>>::to_bytes(&raw).unwrap();
        assert_eq!(&body[..], &msg[4..]);
        let back = RawDecoder
            .decode_bytes(&body, RawAdapter::output_encoding())
            .unwrap();
        assert_eq!(back.into_bytes(), msg);
        // A big-endian sample keeps its header on the way in.
        let be = RawDecoder
            .decode_bytes(&[0, 0, 0, 7], RepresentationIdentifier::CDR_BE)
            .unwrap();
        assert_eq!(be.into_bytes(), [0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn rejects_what_it_cannot_send() {
        assert!(matches!(
            RawCdr::from_message(&[0, 1]),
            Err(RawCdrError::Short(2))
        ));
        assert!(matches!(
            RawCdr::from_message(&[0, 0, 0, 0, 1]),
            Err(RawCdrError::NotCdrLe(0, 0))
        ));
    }
}
