//! `sensor_msgs/msg/PointCloud2` of labelled instance points: `x, y, z` (float32, metres),
//! `instance_id` (uint32, the track id, as `Detection3D.id`) and `class_id` (uint32, 0-based COCO
//! class), one unorganised row, little endian.

use crate::bag::{BagError, CdrWriter, Header};

/// `sensor_msgs/PointField` datatypes used here.
pub const FLOAT32: u8 = 7;
pub const UINT32: u8 = 6;
/// Bytes per point.
pub const POINT_STEP: u32 = 20;

/// `(name, offset, datatype)` of each field.
pub const FIELDS: [(&str, u32, u8); 5] = [
    ("x", 0, FLOAT32),
    ("y", 4, FLOAT32),
    ("z", 8, FLOAT32),
    ("instance_id", 12, UINT32),
    ("class_id", 16, UINT32),
];

/// One labelled point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledPoint {
    pub xyz: [f32; 3],
    pub instance_id: u32,
    pub class_id: u32,
}

/// The cloud's data bytes (`POINT_STEP` per point).
pub fn pack(points: &[LabelledPoint]) -> Vec<u8> {
    let mut data = Vec::with_capacity(points.len() * POINT_STEP as usize);
    for p in points {
        for v in p.xyz {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&p.instance_id.to_le_bytes());
        data.extend_from_slice(&p.class_id.to_le_bytes());
    }
    data
}

/// The serialized `PointCloud2` holding `points`.
pub fn to_cdr(header: &Header, points: &[LabelledPoint]) -> Result<Vec<u8>, BagError> {
    let n = u32::try_from(points.len()).map_err(|_| BagError::Cdr {
        offset: 0,
        msg: format!("{} points do not fit a PointCloud2", points.len()),
    })?;
    let row_step = n.checked_mul(POINT_STEP).ok_or_else(|| BagError::Cdr {
        offset: 0,
        msg: format!("{n} points overflow row_step"),
    })?;
    let mut w = CdrWriter::new(true);
    w.write_header(header)?;
    w.write_u32(1);
    w.write_u32(n);
    w.write_seq_len(FIELDS.len())?;
    for (name, offset, datatype) in FIELDS {
        w.write_string(name)?;
        w.write_u32(offset);
        w.write_u8(datatype);
        w.write_u32(1);
    }
    w.write_bool(false);
    w.write_u32(POINT_STEP);
    w.write_u32(row_step);
    w.write_bytes(&pack(points))?;
    // Every point is a real reading.
    w.write_bool(true);
    Ok(w.finish())
}
