"""rosbag2 (mcap or sqlite3) read/write with the pure-Python ``rosbags`` library; no ROS install needed.

Messages are serialised with the ROS 2 Kilted typestore of ``rosbags`` (its RIHS01 type hashes for
sensor_msgs/Image, sensor_msgs/CameraInfo and geometry_msgs/PoseStamped equal Jazzy's, so the bags
play on Jazzy and Kilted). Images go through :mod:`endo_depth_model.image_encoding`, the project's
one converter.

Topics written by :func:`write_rosbag` (all relative names can be changed by arguments):

* ``/endoscope/image_raw``   sensor_msgs/Image rgb8, frame ``endoscope_optical_frame``
* ``/endoscope/camera_info`` sensor_msgs/CameraInfo (plumb_bob, zero distortion unless given, P = [K | 0])
* ``/ground_truth/depth``    sensor_msgs/Image 32FC1, metres, NaN invalid (REP 118)
* ``/ground_truth/pose``     geometry_msgs/PoseStamped: T_world_cam in frame ``world``, metres

All messages of one frame share the header stamp; the reader pairs ground truth to images by stamp.
A recording whose CameraInfo carries lens distortion (``D``, any model of
:mod:`endo_depth_model.rectify`) is rectified on reading, images and ground-truth depth alike, so
training, evaluation and inference see pinhole frames with ``K``; an unknown model is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..geometry import matrix_to_quaternion, quaternion_to_matrix
from ..image_encoding import (
    ImageEncodingError,
    decode_compressed,
    image_to_numpy,
    numpy_to_image_fields,
    to_rgb8,
)
from ..rectify import DistortionError, Rectifier, make_rectifier
from .sequence import CorruptFileError, DataError, Frame, MissingFileError, Sequence, depth_from_millimetres

__all__ = [
    "RosbagWriter",
    "write_rosbag",
    "open_rosbag",
    "is_rosbag",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
]

COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
IMAGE_T = "sensor_msgs/msg/Image"
COMPRESSED_T = "sensor_msgs/msg/CompressedImage"
INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_T = "geometry_msgs/msg/PoseStamped"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class RosbagWriter:
    """Incremental rosbag2 writer (topics in the module docstring): ``add(frame)``, then ``close()``.

    ``storage`` is ``mcap`` or ``sqlite3``; ``out_dir`` must not exist yet (rosbag2 convention). Depth
    and pose topics are created when the first frame carrying them arrives. ``image_format`` ``jpeg``
    or ``png`` writes the colour images as ``sensor_msgs/CompressedImage`` on ``<image_topic>/compressed``
    (as image_transport names it) instead of raw ``sensor_msgs/Image``. ``distortion`` = (model, D)
    goes into every CameraInfo as it is; the default (plumb_bob, zeros) says the frames are pinhole
    images, as the simulator renders them and :func:`open_rosbag` returns them.
    """

    def __init__(
        self,
        out_dir: str | Path,
        storage: str = "mcap",
        image_topic: str = "/endoscope/image_raw",
        info_topic: str = "/endoscope/camera_info",
        depth_topic: str = "/ground_truth/depth",
        pose_topic: str = "/ground_truth/pose",
        frame_id: str = "endoscope_optical_frame",
        world_frame: str = "world",
        image_format: str = "raw",
        distortion: tuple[str, Iterable[float]] | None = None,
    ):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if image_format not in ("raw", "jpeg", "png"):
            raise DataError(f"image_format must be raw, jpeg or png, got {image_format!r}")
        self.image_format = image_format
        # the camera's lens distortion, written into every CameraInfo as it is (default: none)
        model, D = distortion if distortion is not None else ("plumb_bob", np.zeros(5))
        self.distortion = (str(model), np.asarray(list(D), dtype=np.float64))
        if image_format != "raw":
            image_topic = f"{image_topic}/compressed"

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise DataError(f"rosbag storage must be one of {sorted(plugins)}, got {storage!r}")
        self.out = Path(out_dir)
        if self.out.exists():
            raise DataError(f"rosbag output already exists: {self.out}")
        self.ts = _typestore()
        self.topics = {"image": image_topic, "info": info_topic, "depth": depth_topic, "pose": pose_topic}
        self.frame_id, self.world_frame = frame_id, world_frame
        self.writer = Writer(self.out, version=9, storage_plugin=plugins[storage])
        self.writer.open()
        self.conns: dict[str, object] = {}
        self.n = 0

    def _conn(self, key: str, msgtype: str):
        if key not in self.conns:
            self.conns[key] = self.writer.add_connection(self.topics[key], msgtype, typestore=self.ts)
        return self.conns[key]

    def _image_msg(self, header, array, encoding):
        f = numpy_to_image_fields(array, encoding)
        return self.ts.types[IMAGE_T](
            header=header,
            height=f["height"],
            width=f["width"],
            encoding=f["encoding"],
            is_bigendian=int(f["is_bigendian"]),
            step=f["step"],
            data=np.frombuffer(f["data"], dtype=np.uint8),
        )

    def add(self, frame: Frame) -> None:
        T, ts = self.ts.types, self.ts
        stamp = int(frame.stamp_ns)
        t = T["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
        Header = T["std_msgs/msg/Header"]
        header = Header(stamp=t, frame_id=self.frame_id)
        if self.image_format == "raw":
            image = self._image_msg(header, frame.rgb, "rgb8")
            self.writer.write(self._conn("image", IMAGE_T), stamp, ts.serialize_cdr(image, IMAGE_T))
        else:
            import cv2

            ext = ".jpg" if self.image_format == "jpeg" else ".png"
            ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame.rgb[..., ::-1]))
            if not ok:
                raise DataError(f"could not encode frame {frame.index} as {self.image_format}")
            msg = T[COMPRESSED_T](
                header=header, format=f"rgb8; {self.image_format} compressed bgr8", data=buf.ravel()
            )
            self.writer.write(self._conn("image", COMPRESSED_T), stamp, ts.serialize_cdr(msg, COMPRESSED_T))
        K = np.asarray(frame.K, dtype=np.float64)
        P = np.zeros((3, 4))
        P[:, :3] = K
        info = T[INFO_T](
            header=header,
            height=frame.height,
            width=frame.width,
            distortion_model=self.distortion[0],
            d=self.distortion[1],
            k=K.ravel(),
            r=np.eye(3).ravel(),
            p=P.ravel(),
            binning_x=0,
            binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        self.writer.write(self._conn("info", INFO_T), stamp, ts.serialize_cdr(info, INFO_T))
        if frame.depth is not None:
            msg = self._image_msg(header, frame.depth.astype(np.float32), "32FC1")
            self.writer.write(self._conn("depth", IMAGE_T), stamp, ts.serialize_cdr(msg, IMAGE_T))
        if frame.T_world_cam is not None:
            Tw = np.asarray(frame.T_world_cam, dtype=np.float64)
            q = matrix_to_quaternion(Tw[:3, :3])
            pose = T[POSE_T](
                header=Header(stamp=t, frame_id=self.world_frame),
                pose=T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=Tw[0, 3], y=Tw[1, 3], z=Tw[2, 3]),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                ),
            )
            self.writer.write(self._conn("pose", POSE_T), stamp, ts.serialize_cdr(pose, POSE_T))
        self.n += 1

    def close(self) -> int:
        """Finish the bag (metadata.yaml); returns the number of frames."""
        self.writer.close()
        return self.n

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()


def write_rosbag(frames: Iterable[Frame], out_dir: str | Path, storage: str = "mcap", **topics) -> int:
    """Write frames as a rosbag2 directory; ``topics`` are :class:`RosbagWriter` keyword arguments."""
    with RosbagWriter(out_dir, storage, **topics) as writer:
        for frame in frames:
            writer.add(frame)
    return writer.n


def is_rosbag(path: str | Path) -> bool:
    """True for a rosbag2 directory (``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def open_rosbag(path: str | Path, image_topic: str | None = None, K: np.ndarray | None = None) -> Sequence:
    """Open a rosbag2 (mcap or sqlite3) image topic as a :class:`Sequence`.

    The colour image topic is picked automatically when the bag has exactly one (else pass
    ``image_topic``); its CameraInfo is ``<namespace>/camera_info`` or the bag's only CameraInfo
    topic; ground truth comes from a depth Image topic (32FC1 metres or 16UC1 millimetres) and a
    PoseStamped topic when the bag has exactly one of each. Iteration streams; random access
    decodes the whole topic once and keeps it in memory.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"rosbag not found: {path}")
    ts = _typestore()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for bad bags
        raise CorruptFileError(f"cannot open rosbag {path}: {exc}") from exc
    try:
        conns = list(reader.connections)
        topics = sorted({c.topic for c in conns})

        def first_encoding(c):
            if c.msgtype == COMPRESSED_T:  # colour unless it is a compressedDepth stream
                for _, _, raw in reader.messages(connections=[c]):
                    fmt = ts.deserialize_cdr(raw, COMPRESSED_T).format
                    return "compressedDepth" if "compresseddepth" in fmt.lower() else "rgb8"
                return None
            for _, _, raw in reader.messages(connections=[c]):
                return ts.deserialize_cdr(raw, IMAGE_T).encoding
            return None

        image_conns = [c for c in conns if c.msgtype in (IMAGE_T, COMPRESSED_T)]
        encodings = {c.topic: first_encoding(c) for c in image_conns}
        colour = [t for t, e in encodings.items() if e in COLOUR_ENCODINGS]
        depth = sorted(t for t, e in encodings.items() if e in DEPTH_ENCODINGS)
        if image_topic is None:
            if len(colour) != 1:
                raise DataError(
                    f"{path}: {'no' if not colour else 'several'} colour image topics "
                    f"({', '.join(colour) or 'none'}); pass the image topic. Topics: {', '.join(topics)}"
                )
            image_topic = colour[0]
        elif image_topic not in encodings:
            raise DataError(
                f"{path}: no sensor_msgs/Image topic {image_topic!r} (nor CompressedImage); "
                f"topics: {', '.join(topics)}"
            )
        info_topics = sorted({c.topic for c in conns if c.msgtype == INFO_T})
        # image_transport names: <ns>/image_raw and <ns>/image_raw/compressed share <ns>/camera_info
        base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
        ns = base.rsplit("/", 1)[0]
        info_topic = f"{ns}/camera_info" if f"{ns}/camera_info" in info_topics else None
        if info_topic is None and len(info_topics) == 1:
            info_topic = info_topics[0]
        pose_topics = sorted({c.topic for c in conns if c.msgtype == POSE_T})
        pose_topic = pose_topics[0] if len(pose_topics) == 1 else None
        depth_topic = depth[0] if len(depth) == 1 and depth[0] != image_topic else None
        n_images = sum(c.msgcount for c in conns if c.topic == image_topic)

        infos: list[tuple[int, np.ndarray, tuple[int, int], str, np.ndarray]] = []
        poses: dict[int, np.ndarray] = {}
        small = [c for c in conns if c.topic in (info_topic, pose_topic)]
        if small:
            for c, _, raw in reader.messages(connections=small):
                msg = ts.deserialize_cdr(raw, c.msgtype)
                if c.msgtype == INFO_T:
                    infos.append(
                        (
                            _stamp_ns(msg.header),
                            np.asarray(msg.k, np.float64).reshape(3, 3),
                            (int(msg.height), int(msg.width)),
                            str(msg.distortion_model),
                            np.asarray(msg.d, np.float64).ravel(),
                        )
                    )
                else:
                    Tw = np.eye(4)
                    o, p = msg.pose.orientation, msg.pose.position
                    Tw[:3, :3] = quaternion_to_matrix([o.x, o.y, o.z, o.w])
                    Tw[:3, 3] = [p.x, p.y, p.z]
                    poses[_stamp_ns(msg.header)] = Tw
    finally:
        reader.close()
    if K is None and not infos:
        raise DataError(f"{path}: no CameraInfo for {image_topic}; pass intrinsics K")
    info_stamps = np.array([info[0] for info in infos], dtype=np.int64)
    distorted = sorted({info[3] for info in infos if info[4].size and np.any(info[4])})
    if K is not None and distorted:
        raise DataError(
            f"{path}: the bag's CameraInfo ({info_topic}) has {distorted[0]} lens distortion, and intrinsics "
            "K were given: drop K to use the bag's calibration (images are then rectified), or rectify "
            "the bag first"
        )
    rectifiers: dict[tuple, Rectifier | None] = {}  # one per distinct calibration (drivers repeat it)

    def rectifier_for(info, hw: tuple[int, int]) -> Rectifier | None:
        key = (info[1].tobytes(), info[4].tobytes(), info[3], hw)
        if key not in rectifiers:
            try:
                rectifiers[key] = make_rectifier(info[1], info[4], info[3], hw)
            except DistortionError as exc:
                raise DataError(f"{path}: CameraInfo on {info_topic}: {exc}") from exc
        return rectifiers[key]

    for info in infos:  # unknown models and bad coefficients are refused up front, naming the bag
        if info[2] != (0, 0):
            rectifier_for(info, info[2])
    meta = {
        "source": "rosbag",
        "path": str(path),
        "image_topic": image_topic,
        "camera_info_topic": info_topic,
        "depth_topic": depth_topic,
        "pose_topic": pose_topic,
        "intrinsics": "given" if K is not None else info_topic,
        # lens distortion of the recording; its images (and ground-truth depth) are rectified to the
        # pinhole K on reading, so every Frame is a pinhole image
        "distortion": distorted[0] if distorted else "none",
    }

    def calibration_at(stamp: int, hw: tuple[int, int]) -> tuple[np.ndarray, Rectifier | None]:
        if K is not None:
            return np.asarray(K, dtype=np.float64), None
        i = max(int(np.searchsorted(info_stamps, stamp, side="right")) - 1, 0)
        if infos[i][2] != hw and infos[i][2] != (0, 0):
            raise DataError(
                f"{path}: CameraInfo size {infos[i][2]} differs from image size {hw} on {image_topic}"
            )
        return infos[i][1].copy(), rectifier_for(infos[i], hw)

    def decode_image(raw, msgtype: str = IMAGE_T) -> tuple[int, np.ndarray, str]:
        msg = ts.deserialize_cdr(raw, msgtype)
        try:
            if msgtype == COMPRESSED_T:
                return _stamp_ns(msg.header), decode_compressed(msg.data, msg.format), "rgb8"
            arr = image_to_numpy(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
            return _stamp_ns(msg.header), arr, msg.encoding
        except ImageEncodingError as exc:
            raise CorruptFileError(f"{path}: bad image message at {_stamp_ns(msg.header)} ns: {exc}") from exc

    def stream() -> Iterator[Frame]:
        reader = Reader(path)
        reader.open()
        try:
            wanted = [c for c in reader.connections if c.topic in (image_topic, depth_topic)]
            pending: deque[tuple[int, np.ndarray]] = deque()
            depth_by_stamp: dict[int, np.ndarray] = {}
            latest_depth = -1
            index = 0

            def emit(stamp, rgb):
                nonlocal index
                d = depth_by_stamp.pop(stamp, None)
                K_frame, rectifier = calibration_at(stamp, rgb.shape[:2])
                if rectifier is not None:
                    rgb = rectifier.rectify(rgb)
                    d = rectifier.rectify_depth(d) if d is not None else None
                frame = Frame(
                    rgb=rgb,
                    K=K_frame,
                    depth=d,
                    T_world_cam=poses.get(stamp),
                    stamp_ns=stamp,
                    index=index,
                    sequence=path.name,
                )
                index += 1
                return frame

            for c, _, raw in reader.messages(connections=wanted):
                stamp, arr, encoding = decode_image(raw, c.msgtype)
                if c.topic == image_topic:
                    pending.append((stamp, to_rgb8(arr, encoding)))
                else:
                    depth_by_stamp[stamp] = (
                        depth_from_millimetres(arr) if encoding == "16UC1" else _clean_metres(arr)
                    )
                    latest_depth = max(latest_depth, stamp)
                while pending and (
                    depth_topic is None or pending[0][0] in depth_by_stamp or pending[0][0] < latest_depth
                ):
                    yield emit(*pending.popleft())
            while pending:
                yield emit(*pending.popleft())
        finally:
            reader.close()

    cache: list[Frame] = []

    def load(i: int) -> Frame:
        if not cache:
            cache.extend(stream())
        return cache[i]

    return Sequence(name=path.name, length=n_images, load=load, meta=meta, stream=stream)


def _clean_metres(depth: np.ndarray) -> np.ndarray:
    out = depth.astype(np.float32, copy=True)
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out
