"""Run one of this package's nodes as a process: the one main loop they all share.

rclpy's own signal handler shuts the context down from its signal thread while a node's worker may
still be publishing, which can crash the process on exit (seen in CI as exit code -11). So
:func:`run_node` installs SIGINT/SIGTERM handlers that only set a flag, spins until then, and tears
down in order: ``node.shutdown()`` (each node stops its own work and publishes its final state there,
with the context still live), executor, node, context. Before the node goes, its reliable
publishers get a bounded wait for their subscribers' acknowledgements, so the final messages are
delivered rather than lost with the participant (seen in CI: final diagnostics missing under load).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

FLUSH_TIMEOUT_S = 2.0  # total wait at exit for reliable subscribers to acknowledge the last messages


def flush_publishers(node, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Wait until every reliable publisher of ``node`` is acknowledged, at most ``timeout_s`` in all.

    Returns True when all were acknowledged in time. Best-effort publishers return at once.
    """
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout_s
    acked = True
    for pub in list(node.publishers):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            acked = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and acked
        except Exception:  # noqa: BLE001 - a publisher already torn down has nothing left to flush
            pass
    return acked


def run_node(node_factory: Callable, name: str, argv: list[str] | None = None) -> int:
    """Spin ``node_factory()`` until SIGINT/SIGTERM; a construction error is one clear line, exit code 2."""
    import faulthandler
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from endo_depth_ros import ros_env

    faulthandler.enable()  # a native crash prints the Python stacks instead of a bare exit code
    ros_env.apply()
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = node_factory()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - a clear one-line refusal instead of a traceback
        if node is not None:
            raise
        print(f"[{name}] cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            flush_publishers(node)
            executor.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


class ToolSession:
    """The in-process rclpy node of a command-line tool (demo, soak, bag record/play).

    This project's ROS settings applied, rclpy without its own signal handlers (each tool decides what
    SIGINT means), a background spinner started on demand and stopped by ``stop``, and the ordered
    teardown of :meth:`close`: spinner, executor, node, context.
    """

    def __init__(self, name: str) -> None:
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from endo_depth_ros import ros_env

        ros_env.apply()
        self._rclpy = rclpy
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def start_spinning(self) -> None:
        self._spinner.start()

    def close(self) -> None:
        self.stop.set()
        if self._spinner.is_alive():
            self._spinner.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def stop_process(proc, timeout_s: float) -> int:
    """SIGINT a node process still running, wait ``timeout_s`` for its orderly exit, else kill it;
    returns its exit code."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def declare_dataclass_parameters(node, cls, docs: dict[str, str]):
    """Declare one read-only parameter per field of dataclass ``cls`` (default: the field's default,
    description: ``docs[name]``) on ``node``; returns ``cls`` filled with the values given at start."""
    from dataclasses import fields

    from rcl_interfaces.msg import ParameterDescriptor

    defaults = cls()
    values = {
        f.name: node.declare_parameter(
            f.name, getattr(defaults, f.name), ParameterDescriptor(description=docs[f.name], read_only=True)
        ).value
        for f in fields(cls)
    }
    return cls(**values)
