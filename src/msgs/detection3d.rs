//! `vision_msgs/msg/Detection3DArray` (vision_msgs 4.x): one detection per located instance.

use crate::bag::{BagError, CdrWriter, Header};

/// One located instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection3D {
    /// Track id as text (as in our Detection2DArray).
    pub id: String,
    /// The hypothesis: class name and the mask-rescored score.
    pub class_name: String,
    pub score: f64,
    /// The centroid of the instance's points (the hypothesis pose's position, identity
    /// orientation).
    pub centroid: [f64; 3],
    /// The oriented box: centre, orientation `[x, y, z, w]`, size along its axes.
    pub center: [f64; 3],
    pub orientation: [f64; 4],
    pub size: [f64; 3],
}

/// `vision_msgs/msg/Detection3DArray`; every detection carries the array's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection3DArray {
    pub header: Header,
    pub detections: Vec<Detection3D>,
}

impl Detection3DArray {
    pub fn to_cdr(&self) -> Result<Vec<u8>, BagError> {
        let mut w = CdrWriter::new(true);
        w.write_header(&self.header)?;
        w.write_seq_len(self.detections.len())?;
        for d in &self.detections {
            w.write_header(&self.header)?;
            w.write_seq_len(1)?;
            w.write_string(&d.class_name)?;
            w.write_f64(d.score);
            // PoseWithCovariance: the centroid; the covariance is left unknown (zeros).
            for v in d.centroid.iter().chain(&[0.0, 0.0, 0.0, 1.0]) {
                w.write_f64(*v);
            }
            for _ in 0..36 {
                w.write_f64(0.0);
            }
            // BoundingBox3D: Pose center, Vector3 size.
            for v in d.center.iter().chain(&d.orientation).chain(&d.size) {
                w.write_f64(*v);
            }
            w.write_string(&d.id)?;
        }
        Ok(w.finish())
    }
}
