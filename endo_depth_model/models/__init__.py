"""Network definitions: Video Depth Anything (DINOv2 encoder + temporal DPT head) and the pose network.

One concept per module: ``vit`` (DINOv2 encoder layers), ``dpt`` (DPT head), ``motion_module``
(temporal attention), ``video_depth_anything`` (wrapper and config registry), ``pose_net``.
"""

from .pose_net import PoseNet
from .video_depth_anything import VDA_CONFIGS, FrameFeatures, VDAConfig, VideoDepthAnything, build_vda

__all__ = ["VDAConfig", "VDA_CONFIGS", "FrameFeatures", "VideoDepthAnything", "build_vda", "PoseNet"]
