//! The ROS 2 node, free of any ROS dependency: everything here is tested in CI. The transports
//! (r2r, ros2-client) are thin adapters behind [`transport::Transport`].

#[cfg(feature = "dds")]
pub mod dds;
pub mod open;
#[cfg(feature = "ros")]
pub mod ros;
pub mod transport;
