"""Closed loop in simulation: simulated endoscope -> endo_depth node -> stand-off controller.

    ros2 launch endo_depth_ros closed_loop.launch.py standoff_m:=0.015 rate_hz:=15.0 seed:=1

The simulator is the clock (``/clock``); the depth node and the controller run on it (use_sim_time). The
simulator advances in lockstep with the controller's commands (``lockstep_max_lag`` frames at most ahead),
at ``real_time_factor`` × wall time when the machine keeps up. ``endo-depth loop`` runs the same three
nodes headless and writes a report (docs/integration.md).

Arguments: standoff_m, rate_hz, seed, preset, real_time_factor, lockstep_max_lag, params_file (depth node
YAML), localhost_only.
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
        DeclareLaunchArgument("standoff_m", default_value="0.015", description="stand-off from tissue (m)"),
        DeclareLaunchArgument("rate_hz", default_value="15.0", description="camera frames per simulated s"),
        DeclareLaunchArgument("seed", default_value="1", description="simulator seed (scene)"),
        DeclareLaunchArgument("preset", default_value="target", description="simulator domain preset"),
        DeclareLaunchArgument(
            "real_time_factor",
            default_value="1.0",
            description="simulated s per wall s; 0 = as fast as possible",
        ),
        DeclareLaunchArgument(
            "lockstep_max_lag", default_value="10", description="frames images may lead the commands"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "depth.yaml"]),
            description="ros__parameters YAML of the depth node",
        ),
        DeclareLaunchArgument(
            "localhost_only", default_value="true", description="keep DDS discovery on this host"
        ),
    ]
    environment = [
        SetEnvironmentVariable(
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
            "LOCALHOST",
            condition=IfCondition(LaunchConfiguration("localhost_only")),
        ),
    ]
    sim = Node(
        package=PACKAGE,
        executable="sim_endoscope",
        name="sim_endoscope",
        namespace="endoscope",
        parameters=[
            {
                "rate_hz": LaunchConfiguration("rate_hz"),
                "seed": LaunchConfiguration("seed"),
                "preset": LaunchConfiguration("preset"),
                "real_time_factor": LaunchConfiguration("real_time_factor"),
                "lockstep_max_lag": LaunchConfiguration("lockstep_max_lag"),
            }
        ],
        output="screen",
    )
    depth = Node(
        package=PACKAGE,
        executable="depth_node",
        name="endo_depth",
        namespace="endo_depth",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "use_sim_time": True,
                "input_height": 56,
                "input_width": 70,
                "window": 8,
                "overlap": 4,
                "stride": 2,
                "blend": 2,
                "scale_mode": "kinematic",
                "kinematic_window": 30,
                "kinematic_min_pairs": 10,
                "kinematic_source": "photometric",
                "qos": "reliable",
                "queue_size": 64,
                "queue_policy": "drop_newest",
            },
        ],
        remappings=[
            ("image", "/endoscope/image"),
            ("camera_info", "/endoscope/camera_info"),
            ("robot_pose", "/endoscope/measured_cp"),
        ],
        output="screen",
    )
    controller = Node(
        package=PACKAGE,
        executable="standoff_controller",
        name="standoff_controller",
        namespace="standoff",
        parameters=[{"use_sim_time": True, "standoff_m": LaunchConfiguration("standoff_m")}],
        remappings=[
            ("depth/image", "/endo_depth/depth/image"),
            ("depth/alignment", "/endo_depth/depth/alignment"),
            ("depth/confidence", "/endo_depth/depth/confidence"),
            ("measured_cp", "/endoscope/measured_cp"),
            ("cmd_twist", "/endoscope/cmd_twist"),
        ],
        output="screen",
    )
    return LaunchDescription([*arguments, *environment, sim, depth, controller])
