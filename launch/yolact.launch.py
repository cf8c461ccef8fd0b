"""Starts the yolact_ros2 node: `ros2 launch yolact_ros2 yolact.launch.py [weights:=/path/w.pth]`.

The node reads its own parameters file (`yolact node --params-file`); launch arguments become
`-p name:=value` overrides on top of it. Argument names match yolact.launch.xml (checked by
tests/it/ros_packaging.rs).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory("yolact_ros2"), "config", "yolact.yaml"
    )
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="Node parameters file (YAML); the launch arguments below override it",
        ),
        DeclareLaunchArgument(
            "weights",
            default_value="yolact_plus_mini",
            description="Model weights: yolact_plus_mini (the shipped model), a .pth or "
            ".safetensors file, a released config name, or `synthetic`",
        ),
        DeclareLaunchArgument(
            "config",
            # YAML for the empty string: detect the config from the checkpoint.
            default_value="''",
            description="Model config name, e.g. yolact_plus_resnet50; '' detects it from the weights",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="camera/image_raw",
            description="Input sensor_msgs/Image topic of the camera named `camera` (relative names "
            "resolve in the namespace)",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its topics"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use /clock as time source"
        ),
    ]

    def override(param, arg):
        return ["-p", [param, ":=", LaunchConfiguration(arg)]]

    node = Node(
        package="yolact_ros2",
        executable="yolact",
        name="yolact",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        arguments=["node", "--params-file", LaunchConfiguration("params_file")]
        + override("weights", "weights")
        + override("config", "config")
        + override("cameras.camera.topic", "image_topic")
        + override("use_sim_time", "use_sim_time"),
    )
    return LaunchDescription(args + [node])
