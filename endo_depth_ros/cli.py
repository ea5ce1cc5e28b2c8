"""The ``endo-depth`` command: the model's subcommands (endo_depth_model.cli) plus the ROS ones.

The ROS subcommands import rclpy only when they run, so the command works without ROS for the others.
"""

from __future__ import annotations

import sys

from endo_depth_model import cli as model_cli

ROS_COMMANDS: dict[str, str] = {
    "bag": "endo_depth_ros.tools.bag",
    "demo": "endo_depth_ros.tools.demo",
    "loop": "endo_depth_ros.tools.closed_loop",
    "soak": "endo_depth_ros.tools.soak",
}


def main(argv: list[str] | None = None) -> int:
    return model_cli.main(argv, extra_commands=ROS_COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
