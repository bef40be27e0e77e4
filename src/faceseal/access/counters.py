"""Sliding-window counters: how often something happened recently, per key.

Failed-authentication limits and query budgets both ask the same question ("has this key used up
its allowance in the last ``window`` seconds?"). They ask it through :class:`WindowCounters`, one
narrow interface with several homes for the counts:

* :class:`MemoryCounters` -- this process only (a single server, tests);
* a store-backed and a Redis-backed implementation (shared by every replica of one vault; see
  docs/http.md, "Deployment"), so that N replicas do not grant N times the allowance.

Keys are opaque strings chosen by the caller (``"auth:client:203.0.113.7"``,
``"budget:verify:principal:gate"``); they never hold a secret. Every method is safe to call
from several threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]


class WindowCounters(Protocol):
    """Events per key within a sliding window."""

    def retry_after(self, key: str, limit: int, window: float) -> float | None:
        """Seconds until ``key`` is below ``limit`` events in ``window`` again; None when it is
        below already."""
        ...

    def record(self, key: str, window: float, cost: int = 1) -> None:
        """Count ``cost`` events for ``key`` now (unconditionally: a failure happened)."""
        ...

    def take(self, key: str, limit: int, window: float, cost: int = 1) -> float | None:
        """Atomically: when ``cost`` more events keep ``key`` within ``limit`` in ``window``,
        count them and return None; otherwise count nothing and return the seconds to wait."""
        ...


class MemoryCounters:
    """:class:`WindowCounters` in this process's memory, bounded to ``max_entries`` keys (the
    least recently used forgotten first) and to ``max_per_key`` events per key (limits above it
    are not meaningful here)."""

    def __init__(self, *, max_entries: int = 100_000, max_per_key: int = 10_000,
                 clock: Clock = time.monotonic) -> None:
        self._max_entries = max_entries
        self._max_per_key = max_per_key
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str, limit: int, window: float) -> float | None:
        now = self._clock()
        with self._lock:
            times = self._current(key, now, window)
            if times is None or len(times) < limit:
                return None
            return max(times[-limit] + window - now, 0.0)

    def record(self, key: str, window: float, cost: int = 1) -> None:
        now = self._clock()
        with self._lock:
            self._add(key, now, window, cost)

    def take(self, key: str, limit: int, window: float, cost: int = 1) -> float | None:
        now = self._clock()
        with self._lock:
            times = self._current(key, now, window)
            held = len(times) if times is not None else 0
            if held + cost > limit:
                if times is None or cost > limit:
                    return window
                # Wait until enough of the oldest events have left the window.
                return max(times[held + cost - limit - 1] + window - now, 0.0)
            self._add(key, now, window, cost)
            return None

    def __len__(self) -> int:
        return len(self._events)

    def _current(self, key: str, now: float, window: float) -> deque[float] | None:
        times = self._events.get(key)
        if times is None:
            return None
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            del self._events[key]
            return None
        return times

    def _add(self, key: str, now: float, window: float, cost: int) -> None:
        times = self._events.pop(key, None)
        if times is None:
            times = deque(maxlen=self._max_per_key)
        while times and times[0] <= now - window:
            times.popleft()
        times.extend([now] * cost)
        self._events[key] = times  # most recent last
        while len(self._events) > self._max_entries:
            self._events.popitem(last=False)
