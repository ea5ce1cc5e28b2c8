"""Bounded hand-off between the subscription callbacks and the inference worker.

Callbacks never block: when the queue is full the ``policy`` decides what is lost, and every lost frame
is counted. ``drop_oldest`` (default) keeps the newest frames, bounding latency; ``drop_newest`` keeps
the stream gap-free up to the queue size and rejects what arrives while full.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

POLICIES = ("drop_oldest", "drop_newest")


@dataclass
class QueueCounters:
    accepted: int = 0
    dropped_oldest: int = 0
    rejected_full: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_oldest + self.rejected_full


class FrameQueue:
    def __init__(self, maxsize: int, policy: str = "drop_oldest") -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        if policy not in POLICIES:
            raise ValueError(f"queue policy must be one of {POLICIES}, got {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self.counters = QueueCounters()
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> Any | None:
        """Enqueue without blocking; returns the lost item (the oldest, or ``item`` itself) or None."""
        with self._cond:
            lost = None
            if len(self._items) >= self.maxsize:
                if self.policy == "drop_oldest":
                    lost = self._items.popleft()
                    self.counters.dropped_oldest += 1
                else:
                    self.counters.rejected_full += 1
                    return item
            self._items.append(item)
            self.counters.accepted += 1
            self._cond.notify()
            return lost

    def get(self, timeout: float | None = None) -> Any | None:
        """Next item, or None after ``timeout`` seconds or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
