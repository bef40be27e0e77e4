"""A replica's change follower: keeps its loaded galleries caught up while it is idle.

Answers never depend on it -- every answer applies the pending delta first (see
:mod:`faceseal.vault.gallery_cache`) -- but following matters for three things: an erased
subject's templates leave this process's memory within about one interval even if no request
comes; the next request does not pay for a large delta; and ``/readyz`` can say whether the
replica is caught up. On PostgreSQL the follower wakes on NOTIFY as soon as a change commits,
elsewhere it polls (one indexed read per loaded tenant per interval).
"""

from __future__ import annotations

import logging
import threading
import time

from faceseal.storage.base import ChangeListener
from faceseal.vault.gallery_cache import GalleryCache

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0


class ChangeFollower:
    """One daemon thread: wait for a change (or the interval), then catch every loaded tenant
    up. Failures are logged and retried; :attr:`healthy` says whether the last round worked."""

    def __init__(self, cache: GalleryCache, listener: ChangeListener,
                 interval: float = DEFAULT_INTERVAL) -> None:
        if not 0.01 <= interval <= 3600:
            raise ValueError("the follow interval must be between 0.01 and 3600 seconds")
        self._cache = cache
        self._listener = listener
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="faceseal-follower", daemon=True)
        self.healthy = True
        self.last_round: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._listener.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while self._listener.wait(self._interval):
            try:
                self._cache.catch_up_all()
                self._cache.persist_due()
            except Exception as exc:  # an outage: keep following, say so in /readyz
                if self.healthy:
                    log.warning("change follower: catching up failed (%s)", type(exc).__name__)
                self.healthy = False
                continue
            self.healthy = True
            self.last_round = time.monotonic()
