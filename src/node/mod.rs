//! The ROS 2 node, free of any ROS dependency: everything here is tested in CI. The transports
//! (r2r, ros2-client) are thin adapters behind [`transport::Transport`].

pub mod transport;
