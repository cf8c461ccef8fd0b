//! Training and fine-tuning (docs/training.md): the reference's data pipeline, its `MultiBoxLoss`,
//! SGD with its schedule, and checkpoints that carry their config and class names.
//!
//! The network is the one [`crate::model::Yolact`] inference runs, in its training pass
//! ([`crate::model::Yolact::forward_t`]); nothing here copies a layer.
//!
//! Stages, in the order a batch flows: [`data`] (COCO-format annotations, augmentation, the
//! loader) -> the model's training pass -> [`loss`] (matching, box / class / mask / semantic /
//! mask-IoU terms) -> [`optim`] (SGD, learning-rate schedule, checkpoints).

pub mod data;
pub mod health;
pub mod init;
pub mod loss;
pub mod optim;
pub mod trainer;
