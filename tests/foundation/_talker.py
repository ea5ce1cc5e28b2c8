"""Child process for the cross-process DDS test: publishes N DepthAlignment (or Image) messages."""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from endo_depth_ros.msg import DepthAlignment


def main() -> int:
    kind, count, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rclpy.init()
    node = rclpy.create_node("endo_depth_test_talker")
    if kind == "alignment":
        pub = node.create_publisher(DepthAlignment, topic, QoSProfile(depth=count))
    else:
        pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    # wait for the listener to be discovered so no message is published into the void
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print("no subscriber discovered", file=sys.stderr)
        return 3
    time.sleep(0.2)
    frame = np.zeros((512, 640, 3), np.uint8)
    for i in range(count):
        if kind == "alignment":
            msg = DepthAlignment(snippet_index=i, scale=1.0 + i, shift=-0.5 * i, fit_residual=0.01)
            msg.header.frame_id = "endoscope_optical"
            msg.n_overlap_frames = 8
            msg.scale_source = DepthAlignment.SCALE_RELATIVE
        else:
            frame[..., 0] = i
            msg = Image(height=512, width=640, encoding="rgb8", step=640 * 3)
            msg.header.frame_id = f"{i}"
            msg.data = frame.tobytes()
        pub.publish(msg)
        time.sleep(1.0 / 30.0)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
