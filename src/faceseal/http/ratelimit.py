"""Rate limit on failed authentication: per API key id and per client address.

A sliding window: for each key id and each client address the limiter keeps the times of the
last ``limit`` failures. Once ``limit`` failures of one key id fall within the window, further
requests presenting that key id are refused with 429 *before their key is checked* (a correct
key included: otherwise guessing one key could go on, answered by 429 instead of 401) until the
oldest of those failures leaves the window; ``Retry-After`` says when.

A client address over its limit is treated differently (see :mod:`faceseal.http.middleware`):
its requests without a key are refused at once, and a key it presents is still checked, a valid
one served and an invalid one refused with 429. Everyone behind one NAT or proxy shares an
address, so locking the address out entirely would let one guesser lock out every principal
behind it; guessing a 256-bit secret gets nowhere anyway, and each key id keeps its own limit.

Where the counts live is a :class:`~faceseal.access.counters.WindowCounters`: this process's
memory (bounded: at most ``max_entries`` keys, the least recently failed forgotten first), the
vault's store, or Redis. With the store or Redis, every replica of a vault counts against the same
allowance (``faceseal serve --rate-limits``; docs/http.md, "Deployment"). IPv6 clients are counted
per /64 (one host usually holds a whole /64).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from faceseal.access.counters import MemoryCounters, WindowCounters

Clock = Callable[[], float]

CLIENT_PREFIX = "auth:client:"
KEY_PREFIX = "auth:key:"


class AuthRateLimiter:
    """The two windows of the service: by key id and by client address."""

    def __init__(self, *, per_key: int, per_client: int, window: float,
                 max_entries: int = 100_000, clock: Clock = time.monotonic,
                 counters: WindowCounters | None = None) -> None:
        self._per_key = per_key
        self._per_client = per_client
        self._window = window
        self.counters: WindowCounters = counters if counters is not None else MemoryCounters(
            max_entries=max_entries, max_per_key=max(per_key, per_client), clock=clock)

    def retry_after(self, client: str | None, key_id: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if the client or the key id is blocked."""
        waits = [w for w in (self.client_retry_after(client), self.key_retry_after(key_id))
                 if w is not None]
        return max(waits) if waits else None

    def key_retry_after(self, key_id: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if ``key_id`` is blocked."""
        if key_id is None:
            return None
        return _seconds(self.counters.retry_after(KEY_PREFIX + key_id, self._per_key,
                                                  self._window))

    def client_retry_after(self, client: str | None) -> int | None:
        """Whole seconds to wait (at least 1) if the client address is blocked."""
        return _seconds(self.counters.retry_after(CLIENT_PREFIX + client_key(client),
                                                  self._per_client, self._window))

    def failed(self, client: str | None, key_id: str | None) -> None:
        self.counters.record(CLIENT_PREFIX + client_key(client), self._window)
        if key_id is not None:
            self.counters.record(KEY_PREFIX + key_id, self._window)


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
