"""Run one of this package's nodes as a process: the one main loop they all share.

rclpy's own signal handler shuts the context down from its signal thread while a node's worker may
still be publishing, which can crash the process on exit (seen in CI as exit code -11). So
:func:`run_node` installs SIGINT/SIGTERM handlers that only set a flag, spins until then, and tears
down in order: ``node.shutdown()`` (each node stops its own work and publishes its final state there,
with the context still live), executor, node, context.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


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
            executor.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
