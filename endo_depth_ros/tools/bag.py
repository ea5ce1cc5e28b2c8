"""rosbag2 recording and replay over live ROS 2 topics, and conversion of videos/sequences to bags.

rosbag2's own tools are not installable from PyPI; this module gives the same files (rosbag2 directories
with mcap or sqlite3 storage, read and written by the pure-Python ``rosbags`` library with the Kilted
typestore, plus this package's own interfaces) and behaviour users expect from ``ros2 bag``:

* :class:`BagRecorder`: subscribes to topics as raw CDR (no deserialisation), writes each message with
  its receive time; new matching topics are picked up while recording. ``close()`` flushes everything:
  no message received before ``close`` is lost, and the bag is readable after SIGINT.
* :class:`BagPlayer`: publishes the recorded bytes at the recorded rate, a multiple of it, as fast as
  possible, or paced by a consumer (``pace_topic``: the next frame only when fewer than
  ``max_in_flight`` frames await their output), with the recorded QoS reliability by default.

CLI: ``endo-depth bag record|play|convert|info`` (see ``register``).
"""

from __future__ import annotations

import importlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

STORAGES = ("mcap", "sqlite3")


class BagError(RuntimeError):
    """A bag cannot be read or written (missing, truncated, unknown storage or type); names the path."""


def typestore():
    """The Kilted typestore with this package's interfaces (msg/*.msg) registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from endo_depth_ros.ros_env import share_dir

    ts = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted((share_dir() / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"endo_depth_ros/msg/{path.stem}"))
    ts.register(types)
    return ts


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class (imported from its Python package)."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not installed ({exc})") from exc


# ---- recording -----------------------------------------------------------------------------------


@dataclass
class RecordStats:
    messages: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.messages.values())


class BagRecorder:
    """Record ``topics`` (None: every topic except /rosout and parameter events) into ``out_dir``.

    Callbacks only enqueue the raw bytes; one writer thread owns the bag file (sqlite3 requires it) and
    drains the queue, so a slow disk never blocks the executor and nothing is dropped. Call
    :meth:`discover` periodically (e.g. from a timer) to subscribe to topics that appear later.
    """

    IGNORED = ("/rosout", "/parameter_events")

    def __init__(self, node, out_dir: str | Path, topics: Iterable[str] | None = None, storage: str = "mcap"):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.out = Path(out_dir)
        if self.out.exists():
            raise BagError(f"bag output already exists: {self.out}")
        self.node = node
        self.topics = None if topics is None else {t if t.startswith("/") else "/" + t for t in topics}
        self.ts = typestore()
        self.storage = storage
        self.stats = RecordStats()
        self._known: set[str] = set()
        self._subscriptions = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._writer_loop, name="bag_writer", daemon=True)
        self._thread.start()
        self._opened.wait(30)
        if self._error is not None:
            raise BagError(f"cannot create bag {self.out}: {self._error}")

    def _writer_loop(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        try:
            plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(self.out, version=9, storage_plugin=plugin)
            writer.open()
        except Exception as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        connections = {}
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if item[0] == "connection":
                    _, topic, msgtype = item
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=self.ts)
                else:
                    _, topic, stamp, data = item
                    writer.write(connections[topic], stamp, data)
        except Exception as exc:  # noqa: BLE001 - surfaced by close()
            self._error = exc
        finally:
            writer.close()

    def discover(self) -> list[str]:
        """Subscribe to matching topics that appeared since the last call; returns the new ones."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        new = []
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._known or topic in self.IGNORED:
                continue
            if self.topics is not None and topic not in self.topics:
                continue
            self._known.add(topic)
            msgtype = types[0]
            if msgtype not in self.ts.types:
                self.node.get_logger().warning(
                    f"not recording {topic}: type {msgtype} unknown to the bag writer"
                )
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            reliable = publishers and all(
                p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers
            )
            qos = QoSProfile(depth=1000) if reliable else qos_profile_sensor_data
            self.stats.messages[topic] = 0
            self._queue.put(("connection", topic, msgtype))
            sub = self.node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic: self._enqueue(t, raw), qos, raw=True
            )
            self._subscriptions.append(sub)
            new.append(topic)
        return new

    def matched(self) -> bool:
        """Whether every topic subscribed so far has matched at least one publisher (a message published
        before the match is not delivered: wait for this before starting what the recording must see)."""
        return all(sub.get_publisher_count() > 0 for sub in self._subscriptions)

    def _enqueue(self, topic: str, raw: bytes) -> None:
        with self._lock:  # a message either makes it into the bag and the counts, or neither
            if self._closed:
                return
            self._queue.put(("message", topic, self.node.get_clock().now().nanoseconds, bytes(raw)))
            self.stats.messages[topic] += 1

    def close(self) -> RecordStats:
        """Stop recording, write everything received so far and finish the bag (metadata.yaml)."""
        if not self._closed:
            with self._lock:
                self._closed = True
                self._queue.put(None)
            for sub in self._subscriptions:
                self.node.destroy_subscription(sub)
            self._thread.join()
            if self._error is not None:
                raise BagError(f"writing {self.out} failed: {self._error}")
        return self.stats


# ---- reading and replay --------------------------------------------------------------------------


@dataclass
class BagInfo:
    path: Path
    storage: str
    duration_s: float
    topics: dict[str, tuple[str, int]]  # topic -> (type, message count)


def bag_info(path: str | Path) -> BagInfo:
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        with Reader(path) as reader:
            topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
            storage = "mcap" if any(path.glob("*.mcap")) or path.suffix == ".mcap" else "sqlite3"
            return BagInfo(path, storage, reader.duration / 1e9, topics)
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"cannot read bag {path}: {exc}") from exc


class BagPlayer:
    """Publish a bag's messages on their topics.

    ``rate``: 1.0 = recorded timing, 2.0 = twice as fast, 0 = as fast as possible. With ``pace_topic``,
    each message of ``pace_source`` (default: the first Image topic) waits until fewer than
    ``max_in_flight`` of them are still without a message on ``pace_topic`` (the consumer's output):
    replay runs as fast as the consumer, and nothing is lost to a full queue as long as the consumer's
    queue holds ``max_in_flight`` frames.
    """

    def __init__(
        self,
        node,
        path: str | Path,
        topics: Iterable[str] | None = None,
        rate: float = 1.0,
        remap: dict[str, str] | None = None,
        pace_topic: str | None = None,
        pace_source: str | None = None,
        max_in_flight: int = 48,
        reliable: bool = True,
    ):
        from rclpy.qos import QoSProfile, qos_profile_sensor_data

        if rate < 0:
            raise BagError(f"rate must be >= 0, got {rate}")
        self.info = bag_info(path)
        self.path = Path(path)
        self.node = node
        self.rate = rate
        self.remap = remap or {}
        wanted = set(self.info.topics) if topics is None else set(topics)
        unknown = wanted - set(self.info.topics)
        if unknown:
            raise BagError(f"{path}: no topic(s) {sorted(unknown)}; it has {sorted(self.info.topics)}")
        self.topics = sorted(wanted)
        qos = QoSProfile(depth=100) if reliable else qos_profile_sensor_data
        self.publishers = {
            t: node.create_publisher(message_class(self.info.topics[t][0]), self.remap.get(t, t), qos)
            for t in self.topics
        }
        self.pace_source = pace_source or next(
            (
                t
                for t in self.topics
                if self.info.topics[t][0] in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
            ),
            None,
        )
        self.max_in_flight = max_in_flight
        self.paced = 0
        self.consumed = 0
        self._cond = threading.Condition()
        if pace_topic:
            from sensor_msgs.msg import Image

            node.create_subscription(Image, pace_topic, self._on_consumed, QoSProfile(depth=1000), raw=True)
        self.pace_topic = pace_topic
        self.published = {t: 0 for t in self.topics}

    def _on_consumed(self, _raw) -> None:
        with self._cond:
            self.consumed += 1
            self._cond.notify_all()

    def wait_for_subscribers(self, timeout: float = 10.0) -> bool:
        """Wait until every publisher has a subscriber (so the first messages are not lost)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            time.sleep(0.05)
        return False

    def play(
        self,
        stop: threading.Event | None = None,
        on_message: Callable | None = None,
        pace_timeout: float = 30.0,
        transform: Callable[[str, bytes], bytes] | None = None,
    ) -> dict[str, int]:
        """Publish every selected message once; returns messages published per topic so far.

        ``transform(topic, raw)`` may rewrite each serialised message before it is published (e.g. new
        header stamps when a bag is looped). Raises :class:`BagError` when the bag holds fewer messages
        than its metadata records (a truncated or corrupt file), after publishing what could be read.
        """
        from rosbags.rosbag2 import Reader

        stop = stop or threading.Event()
        read = {t: 0 for t in self.topics}
        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if c.topic in self.publishers]
                t0_bag = None
                t0_wall = time.monotonic()
                for conn, stamp, raw in reader.messages(connections=conns):
                    if stop.is_set():
                        break
                    if t0_bag is None:
                        t0_bag = stamp
                    if self.rate > 0:
                        due = t0_wall + (stamp - t0_bag) / 1e9 / self.rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            stop.wait(delay)
                    if self.pace_topic and conn.topic == self.pace_source:
                        with self._cond:
                            ok = self._cond.wait_for(
                                lambda: self.paced - self.consumed < self.max_in_flight or stop.is_set(),
                                pace_timeout,
                            )
                        if not ok:
                            raise BagError(
                                f"consumer on {self.pace_topic} gave no output for {pace_timeout:.0f} s "
                                f"({self.consumed}/{self.paced} frames answered)"
                            )
                        self.paced += 1
                    data = bytes(raw) if transform is None else transform(conn.topic, bytes(raw))
                    self.publishers[conn.topic].publish(data)
                    self.published[conn.topic] += 1
                    read[conn.topic] += 1
                    if on_message is not None:
                        on_message(conn.topic, stamp)
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unreadable data
            raise BagError(f"cannot read bag {self.path}: {exc}") from exc
        short = {t: (n, self.info.topics[t][1]) for t, n in read.items() if n < self.info.topics[t][1]}
        if short and not stop.is_set():
            detail = ", ".join(f"{t}: {n} of {m}" for t, (n, m) in sorted(short.items()))
            raise BagError(
                f"{self.path}: fewer messages than its metadata records ({detail}): "
                "the bag is truncated or corrupt"
            )
        return dict(self.published)


# ---- conversion ----------------------------------------------------------------------------------


def convert_to_bag(source: str, out_dir: str | Path, storage: str = "mcap", **topics) -> int:
    """Any source of ``endo_depth_model.data.open_source`` (simulator spec, MP4, image folder, dataset
    sequence) -> a rosbag2 with image, camera_info and (where known) ground-truth depth and pose."""
    from tqdm import tqdm

    from endo_depth_model.data import open_source
    from endo_depth_model.data.rosbag import RosbagWriter

    seq = open_source(source)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        with RosbagWriter(out_dir, storage, **topics) as writer:
            for frame in tqdm(seq, desc=f"convert {source}", unit="frame"):
                writer.add(frame)
    except BaseException:
        if created:  # no half-written bag that a later run would take for a good one
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return writer.n


# ---- CLI -----------------------------------------------------------------------------------------


def _tool_session(name: str):
    """A :class:`~endo_depth_ros.node_runner.ToolSession` whose ``stop`` is set by SIGINT/SIGTERM
    (the bag tools stop cleanly, closing the bag)."""
    from endo_depth_ros.node_runner import ToolSession

    session = ToolSession(name)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: session.stop.set())
    return session


def _cmd_record(args) -> int:
    session = _tool_session("endo_depth_bag_recorder")
    recorder = BagRecorder(session.node, args.output, args.topics or None, args.storage)
    t_end = time.monotonic() + args.duration if args.duration else None
    print(
        f"recording {'all topics' if not args.topics else ', '.join(args.topics)} to {args.output} "
        "(Ctrl-C to stop)"
    )
    last_discovery = 0.0
    try:
        while not session.stop.is_set() and (t_end is None or time.monotonic() < t_end):
            if time.monotonic() - last_discovery > 0.5:
                for topic in recorder.discover():
                    print(f"  + {topic}")
                last_discovery = time.monotonic()
            session.executor.spin_once(timeout_sec=0.05)
    finally:
        stats = recorder.close()
        session.close()
    print(f"wrote {stats.total} messages to {args.output}:")
    for topic, n in sorted(stats.messages.items()):
        print(f"  {topic}: {n}")
    return 0


def _cmd_play(args) -> int:
    session = _tool_session("endo_depth_bag_player")
    remap = dict(r.split(":=", 1) for r in args.remap)
    try:
        player = BagPlayer(
            session.node,
            args.bag,
            args.topics or None,
            args.rate,
            remap,
            args.pace_topic,
            max_in_flight=args.max_in_flight,
        )
        session.start_spinning()
        if not player.wait_for_subscribers(args.wait):
            print(f"warning: not every topic has a subscriber after {args.wait:.0f} s; playing anyway")
        t0 = time.monotonic()
        loops = 0
        while not session.stop.is_set():
            counts = player.play(session.stop)
            loops += 1
            if not args.loop:
                break
        elapsed = time.monotonic() - t0
        from endo_depth_ros.node_runner import flush_publishers

        if not flush_publishers(
            session.node, timeout_s=5.0
        ):  # reliable subscribers acknowledge the last messages
            print("warning: not every reliable subscriber acknowledged the last messages within 5 s")
        time.sleep(0.2)  # best-effort publishers have no acknowledgement: give the last messages time
    except BagError as exc:
        print(f"error: {exc}")
        return 2
    finally:
        session.close()
    total = sum(counts.values())
    print(f"played {total} messages in {elapsed:.1f} s ({loops} pass(es)):")
    for topic, n in sorted(counts.items()):
        print(f"  {topic}: {n}")
    return 0


def _cmd_convert(args) -> int:
    from endo_depth_model.data.sequence import DataError

    try:
        n = convert_to_bag(args.source, args.output, args.storage)
    except (DataError, BagError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {n} frames to {args.output} ({args.storage})")
    return 0


def _cmd_info(args) -> int:
    try:
        info = bag_info(args.bag)
    except BagError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{info.path}  storage {info.storage}  duration {info.duration_s:.2f} s")
    for topic, (msgtype, count) in sorted(info.topics.items()):
        print(f"  {topic:40s} {msgtype:36s} {count}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bag", help="record, replay, convert and inspect rosbag2 files")
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    r = sub.add_parser("record", help="record live topics to a rosbag2 directory")
    r.add_argument("output", help="new bag directory")
    r.add_argument("-t", "--topics", nargs="*", default=[], help="topics (default: all)")
    r.add_argument("--storage", choices=STORAGES, default="mcap")
    r.add_argument("--duration", type=float, default=0.0, help="seconds (default: until Ctrl-C)")
    r.set_defaults(func=_cmd_record)
    pl = sub.add_parser("play", help="publish a bag's messages")
    pl.add_argument("bag")
    pl.add_argument("-t", "--topics", nargs="*", default=[], help="topics (default: all)")
    pl.add_argument("--rate", type=float, default=1.0, help="1 = recorded timing, 0 = as fast as possible")
    pl.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO")
    pl.add_argument("--pace-topic", default=None, help="consumer output topic: replay as fast as it consumes")
    pl.add_argument("--max-in-flight", type=int, default=48, help="frames awaiting output when pacing")
    pl.add_argument("--wait", type=float, default=10.0, help="seconds to wait for subscribers")
    pl.add_argument("--loop", action="store_true")
    pl.set_defaults(func=_cmd_play)
    c = sub.add_parser("convert", help="simulator spec, MP4, image folder or dataset sequence -> bag")
    c.add_argument("source", help="e.g. synth:target?seed=3&n_frames=64, clip.mp4, a folder")
    c.add_argument("output", help="new bag directory")
    c.add_argument("--storage", choices=STORAGES, default="mcap")
    c.set_defaults(func=_cmd_convert)
    i = sub.add_parser("info", help="topics, types, counts and duration of a bag")
    i.add_argument("bag")
    i.set_defaults(func=_cmd_info)
