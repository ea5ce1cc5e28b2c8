"""endo_depth_model: EndoDAV (Video Depth Anything adapted to endoscopy) as an offline PyTorch package.

This package never imports rclpy or ROS messages; the ROS node lives in ``endo_depth_ros``.
"""

__version__ = "0.1.0"
