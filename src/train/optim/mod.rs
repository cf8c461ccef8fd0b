//! SGD with momentum and weight decay, the reference's learning-rate schedule, and training
//! checkpoints.
