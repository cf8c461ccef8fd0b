//! The CPU integration tests, one binary (one link step) with a module per area, in ripgrep's
//! manner: `cargo test --release --test it AREA::` runs one area (e.g. `it node::`). Shared
//! helpers (the binary runner, fixtures, the DDS peer) are in `support`. `tests/cuda_gpu.rs` and
//! `tests/cuda_kernels.rs` stay separate binaries: they are the ones carried to a GPU machine.

mod support;

#[path = "../kernel_emu/mod.rs"]
mod kernel_emu;
#[path = "../kernel_emu/scenes.rs"]
mod scenes;

mod bag;
mod bench_clock;
mod bench_ops;
mod cli;
mod coco_eval;
mod cuda_emu;
mod dds_depth;
mod dds_e2e;
mod dds_node_cli;
mod dds_transport;
mod depth;
mod docs;
mod hub;
mod layout;
mod model;
mod node;
mod node_depth;
mod ops;
mod parity;
mod post;
mod real_objects;
mod real_sequence;
mod replay;
mod replay_coco;
mod replay_depth;
mod replay_interrupt;
mod replay_recovery;
mod ros_packaging;
mod store;
mod synth_scenes;
mod tracking;
mod train_data;
mod train_grad;
mod train_loop;
mod train_loss;
mod train_optim;
mod weights;
