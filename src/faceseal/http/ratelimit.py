"""Rate limit on failed authentication: per API key id and per client address.

Sliding windows of failures, counted through :class:`~faceseal.access.counters.WindowCounters`
(in this process by default; a shared implementation lets replicas share them). Once ``limit``
failures of one key id fall within the window, requests presenting that key id are refused
with 429 *before their key is checked* (the correct key included: otherwise guessing one key
could go on, answered by 429 instead of 401) until the oldest of those failures leaves the
window; ``Retry-After`` says when.

A client address over its limit is treated differently (see
:mod:`faceseal.http.middleware`): its requests without a key are refused at once, and a key it
presents is still checked, a valid one served and an invalid one refused with 429. Everyone
behind one NAT or proxy shares an address, so locking the address out entirely would let one
guesser lock out every principal behind it; guessing a 256-bit secret gets nowhere anyway, and
each key id keeps its own limit.

IPv6 clients are counted per /64 (one host usually holds a whole /64).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from faceseal.access.counters import MemoryCounters, WindowCounters

Clock = Callable[[], float]


class FailureWindow:
    """Failures per key within a sliding window (one limit over a set of counters)."""

    def __init__(self, limit: int, window: float, *, max_entries: int = 100_000,
                 clock: Clock = time.monotonic, counters: WindowCounters | None = None,
                 prefix: str = "") -> None:
        self._limit = limit
        self._window = window
        self._prefix = prefix
        self._counters: WindowCounters = counters if counters is not None else MemoryCounters(
            max_entries=max_entries, max_per_key=max(limit, 1), clock=clock)

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it is not blocked."""
        return self._counters.retry_after(self._prefix + key, self._limit, self._window)

    def failed(self, key: str) -> None:
        """Record a failed authentication for ``key``."""
        self._counters.record(self._prefix + key, self._window)

    def __len__(self) -> int:
        return len(self._counters) if isinstance(self._counters, MemoryCounters) else 0


class AuthRateLimiter:
    """The two windows of the service: by key id and by client address."""

    def __init__(self, *, per_key: int, per_client: int, window: float,
                 max_entries: int = 100_000, clock: Clock = time.monotonic,
                 counters: WindowCounters | None = None) -> None:
        self.by_key = FailureWindow(per_key, window, max_entries=max_entries, clock=clock,
                                    counters=counters, prefix="auth:key:")
        self.by_client = FailureWindow(per_client, window, max_entries=max_entries, clock=clock,
                                       counters=counters, prefix="auth:client:")

    def retry_after(self, client: str | None, key_id: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if the client or the key id is blocked."""
        waits = [w for w in (self.client_retry_after(client), self.key_retry_after(key_id))
                 if w is not None]
        return max(waits) if waits else None

    def key_retry_after(self, key_id: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if ``key_id`` is blocked."""
        return _seconds(self.by_key.retry_after(key_id) if key_id is not None else None)

    def client_retry_after(self, client: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if the client address is blocked."""
        return _seconds(self.by_client.retry_after(client_key(client)))

    def failed(self, client: str | None, key_id: str | None) -> None:
        self.by_client.failed(client_key(client))
        if key_id is not None:
            self.by_key.failed(key_id)


def _seconds(wait: float | None) -> int | None:
    return None if wait is None else max(1, math.ceil(wait))


def client_key(address: str | None) -> str:
    """What a client is counted by: its IPv4 address, its IPv6 /64, or the raw peer name."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:256]  # a unix socket path or a proxy's opaque name
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
