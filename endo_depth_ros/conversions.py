"""ROS message <-> numpy for the node: images (through the project's one codec), camera info, depth
images (REP 118), point clouds and poses. No rclpy node state here: pure functions on messages."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from endo_depth_model import geometry
from endo_depth_model.image_encoding import ImageEncodingError, image_to_numpy, numpy_to_image_fields, to_rgb8

__all__ = [
    "ImageEncodingError",
    "image_msg_to_rgb",
    "array_to_image_msg",
    "camera_info_to_K",
    "make_camera_info",
    "depth_to_pointcloud2",
    "pointcloud2_to_xyz",
    "matrix_to_pose",
    "pose_to_matrix",
    "pose_msgs",
    "stamp_to_ns",
]


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Colour or grey ``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB; ImageEncodingError says why not."""
    array = image_to_numpy(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)
    if msg.encoding in ("16UC1", "32FC1"):
        raise ImageEncodingError(
            f"encoding {msg.encoding} is a depth encoding, not an endoscope colour image"
        )
    return to_rgb8(array, msg.encoding)


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """numpy image -> ``sensor_msgs/Image`` with ``header`` (e.g. 32FC1 depth in metres, rgb8 colour)."""
    fields = numpy_to_image_fields(array, encoding)
    msg = Image(
        header=header,
        height=fields["height"],
        width=fields["width"],
        encoding=fields["encoding"],
        is_bigendian=int(fields["is_bigendian"]),
        step=fields["step"],
    )
    msg.data = fields["data"]
    return msg


def camera_info_to_K(msg: CameraInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """``CameraInfo`` -> (K (3, 3) float64, (height, width)). Raises ValueError when K is unusable."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise ValueError(f"camera_info has no valid intrinsics: K = {K.ravel().tolist()}")
    return K, (int(msg.height), int(msg.width))


def camera_info_distortion(msg: CameraInfo) -> tuple[str, np.ndarray]:
    """``CameraInfo`` -> (distortion_model, D as float64)."""
    return str(msg.distortion_model), np.asarray(msg.d, dtype=np.float64).ravel()


def make_camera_info(K: np.ndarray, height: int, width: int, header: Header) -> CameraInfo:
    """A distortion-free ``CameraInfo`` for an image of ``height`` x ``width`` with intrinsics ``K``."""
    K = np.asarray(K, dtype=np.float64)
    msg = CameraInfo(header=header, height=int(height), width=int(width), distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.ravel().tolist()
    return msg


_XYZRGB_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
]


def depth_to_pointcloud2(
    depth: np.ndarray, K: np.ndarray, header: Header, rgb: np.ndarray | None = None, stride: int = 1
) -> PointCloud2:
    """Depth (H, W) float32 (NaN invalid) + K -> organised ``PointCloud2`` (x, y, z, rgb float32 fields).

    ``stride`` keeps every stride-th row and column (K adjusted to match). Invalid depth gives NaN points,
    as depth_image_proc does; ``rgb`` (H, W, 3) uint8 colours the points (grey when None).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    depth = np.asarray(depth, dtype=np.float32)[::stride, ::stride]
    # subsampling (not resizing): kept pixel j was pixel j * stride, so f and c divide by the stride
    K_s = np.array(K, dtype=np.float64, copy=True)
    K_s[:2] /= stride
    h, w = depth.shape
    xyz = geometry.backproject_np(depth, K_s)
    if rgb is None:
        packed = np.full((h, w), 0x808080, dtype=np.uint32)
    else:
        c = np.asarray(rgb, dtype=np.uint32)[::stride, ::stride]
        packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    cloud = np.empty((h, w, 4), dtype=np.float32)
    cloud[..., :3] = xyz
    cloud[..., 3] = packed.view(np.float32)
    msg = PointCloud2(header=header, height=h, width=w, fields=_XYZRGB_FIELDS, is_bigendian=False)
    msg.point_step = 16
    msg.row_step = 16 * w
    msg.is_dense = bool(np.all(np.isfinite(depth)))
    msg.data = cloud.tobytes()
    return msg


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """Inverse of :func:`depth_to_pointcloud2` for its layout: (H, W, 3) float32."""
    names = [f.name for f in msg.fields]
    if names[:3] != ["x", "y", "z"] or msg.point_step != 16:
        raise ValueError(f"unexpected PointCloud2 layout: fields {names}, point_step {msg.point_step}")
    data = np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(msg.height, msg.width, 4)
    return data[..., :3].copy()


def matrix_to_pose(T: np.ndarray) -> Pose:
    """4x4 rigid transform -> ``geometry_msgs/Pose``."""
    q = geometry.matrix_to_quaternion(np.asarray(T)[:3, :3])
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in np.asarray(T)[:3, 3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> 4x4 rigid transform."""
    T = np.eye(4)
    o = pose.orientation
    T[:3, :3] = geometry.quaternion_to_matrix([o.x, o.y, o.z, o.w])
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def pose_msgs(T_odom_cam: np.ndarray, stamp, odom_frame: str, camera_frame: str):
    """(PoseStamped, Odometry, TransformStamped) of the camera in ``odom_frame`` at ``stamp``."""
    pose = matrix_to_pose(T_odom_cam)
    ps = PoseStamped()
    ps.header.stamp = stamp
    ps.header.frame_id = odom_frame
    ps.pose = pose
    odom = Odometry()
    odom.header = ps.header
    odom.child_frame_id = camera_frame
    odom.pose.pose = pose
    tf = TransformStamped()
    tf.header = ps.header
    tf.child_frame_id = camera_frame
    tf.transform.translation.x = pose.position.x
    tf.transform.translation.y = pose.position.y
    tf.transform.translation.z = pose.position.z
    tf.transform.rotation = pose.orientation
    return ps, odom, tf
