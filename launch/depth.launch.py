"""Launch the endo_depth node.

    ros2 launch endo_depth_ros depth.launch.py image_topic:=/ecm/left/image_raw \
        camera_info_topic:=/ecm/left/camera_info model:=/path/to/weights.safetensors

Arguments: model, adapter, image_topic, camera_info_topic, robot_pose_topic, params_file, namespace,
localhost_only (loopback-only DDS discovery, default true) and shm_profile (FastDDS shared-memory
transport for large images, default the shipped config/fastdds_shm.xml; empty to disable).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "endo_depth_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("model", default_value="", description="VDA weights; empty = shipped default"),
        DeclareLaunchArgument("adapter", default_value="", description="optional SSB adapter (.safetensors)"),
        DeclareLaunchArgument(
            "image_topic", default_value="/endoscope/image_raw", description="input images"
        ),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="/endoscope/camera_info", description="input camera info"
        ),
        DeclareLaunchArgument(
            "robot_pose_topic",
            default_value="/endoscope/measured_cp",
            description="measured camera pose (PoseStamped) for kinematic scale",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "depth.yaml"]),
            description="ros__parameters YAML",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="endo_depth", description="namespace of the outputs"
        ),
        DeclareLaunchArgument(
            "localhost_only", default_value="true", description="keep DDS discovery on this host"
        ),
        DeclareLaunchArgument(
            "shm_profile",
            default_value=PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
            description="FastDDS profile file (shared memory for large images)",
        ),
    ]
    environment = [
        SetEnvironmentVariable(
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
            "LOCALHOST",
            condition=IfCondition(LaunchConfiguration("localhost_only")),
        ),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("shm_profile")),
    ]
    node = Node(
        package=PACKAGE,
        executable="depth_node",
        name="endo_depth",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"model.weights": LaunchConfiguration("model"), "model.adapter": LaunchConfiguration("adapter")},
        ],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
            ("robot_pose", LaunchConfiguration("robot_pose_topic")),
        ],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, *environment, node])
