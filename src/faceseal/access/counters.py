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

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from faceseal.errors import InvalidInput, StorageUnavailable

Clock = Callable[[], float]


class WindowCounters(Protocol):
    """Events per key within a sliding window."""

    #: Whether a :meth:`take` made inside a store transaction is undone if that transaction
    #: rolls back (counts kept in the store itself); elsewhere a take stands at once.
    joins_store_transactions: bool

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

    joins_store_transactions = False

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


class CounterStore(Protocol):
    """What :class:`StoreCounters` needs from a template store (see ``storage.base``)."""

    def counter_take(self, key: str, limit: int | None, window: float, cost: int,
                     now: float) -> float | None: ...

    def counter_retry_after(self, key: str, limit: int, window: float,
                            now: float) -> float | None: ...


class StoreCounters:
    """:class:`WindowCounters` kept in the vault's template store, so that every process of the
    vault (replicas, the CLI) counts against the same allowance. Times are wall-clock seconds:
    replicas on several hosts need synchronised clocks (NTP), as TLS does anyway."""

    joins_store_transactions = True

    def __init__(self, store: CounterStore, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock

    def retry_after(self, key: str, limit: int, window: float) -> float | None:
        return self._store.counter_retry_after(key, limit, window, self._clock())

    def record(self, key: str, window: float, cost: int = 1) -> None:
        self._store.counter_take(key, None, window, cost, self._clock())

    def take(self, key: str, limit: int, window: float, cost: int = 1) -> float | None:
        return self._store.counter_take(key, limit, window, cost, self._clock())


# Atomic in Redis: drop what left the window, then (take) add only if it fits. Events are members
# of a sorted set scored by time; each member is unique (time, random suffix, unit index).
_REDIS_TAKE = """
local key, now, window, cost = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local held = redis.call('ZCARD', key)
if limit >= 0 and held + cost > limit then
  if cost > limit then return tostring(window) end
  local oldest = redis.call('ZRANGE', key, held + cost - limit - 1, held + cost - limit - 1,
                            'WITHSCORES')
  return tostring(math.max(tonumber(oldest[2]) + window - now, 0))
end
for i = 1, cost do redis.call('ZADD', key, now, ARGV[5] .. ':' .. i) end
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return false
"""


class RedisCounters:
    """:class:`WindowCounters` in Redis (``redis://HOST:PORT/DB``), shared by every replica
    that names the same server. The URL may carry a password; it is never logged or shown.
    Times come from the Redis server's clock (``TIME``), so replicas need not agree on theirs."""

    joins_store_transactions = False

    def __init__(self, url: str, *, prefix: str = "faceseal:") -> None:
        try:
            import redis  # noqa: PLC0415 - an optional extra
        except ImportError:
            raise InvalidInput("Redis counters need the redis package: pip install "
                               "'faceseal[redis]'") from None
        self._client: Any = redis.Redis.from_url(url, socket_timeout=2.0,
                                                 socket_connect_timeout=2.0)
        self._take = self._client.register_script(_REDIS_TAKE)
        self._prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)

    def _now(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + float(micros) / 1e6

    def _run(self, key: str, limit: int | None, window: float, cost: int) -> float | None:
        try:
            answer = self._take(keys=[self._prefix + key],
                                args=[repr(self._now()), repr(float(window)), cost,
                                      -1 if limit is None else limit, os.urandom(8).hex()])
        except self._errors as exc:
            raise StorageUnavailable(f"the Redis counter store is unavailable "
                                     f"({type(exc).__name__})") from None
        return None if answer is None else float(answer)

    def retry_after(self, key: str, limit: int, window: float) -> float | None:
        try:
            now = self._now()
            name = self._prefix + key
            self._client.zremrangebyscore(name, "-inf", now - window)
            held = int(self._client.zcard(name))
            if held < limit:
                return None
            oldest = self._client.zrange(name, held - limit, held - limit, withscores=True)
        except self._errors as exc:
            raise StorageUnavailable(f"the Redis counter store is unavailable "
                                     f"({type(exc).__name__})") from None
        return max(float(oldest[0][1]) + window - now, 0.0) if oldest else None

    def record(self, key: str, window: float, cost: int = 1) -> None:
        self._run(key, None, window, cost)

    def take(self, key: str, limit: int, window: float, cost: int = 1) -> float | None:
        return self._run(key, limit, window, cost)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return "<RedisCounters>"  # never the URL: it may hold a password
