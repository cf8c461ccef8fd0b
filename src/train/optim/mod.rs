//! SGD with momentum and weight decay, the reference's learning-rate schedule, and training
//! checkpoints.

pub mod checkpoint;
pub mod schedule;
pub mod sgd;

pub use checkpoint::{TrainCheckpoint, TrainState};
pub use schedule::Schedule;
pub use sgd::Sgd;
