"""A first-come, first-served lock for the dlib models.

``threading.Lock`` hands itself to whichever thread runs next, and the thread that just released
it usually does: a thread encoding photo after photo (detect, describe, detect, ...) re-takes the
lock before a waiting thread wakes, so another principal's verify could wait several steps instead
of one. Here waiters are served in arrival order, so a request waits for at most the steps of the
requests that were queued before it.
"""

from __future__ import annotations

import collections
import threading
import time


class FairLock:
    """A FIFO lock with an ``acquire`` timeout. Not re-entrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[object] = collections.deque()
        self._held = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        ticket = object()
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._held or self._queue[0] is not ticket:
                    if not blocking:
                        return False
                    if deadline is None:
                        self._cond.wait()
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self._queue.popleft()
                self._held = True
                return True
            finally:
                if ticket in self._queue:  # gave up (timeout): let the next in line see its turn
                    self._queue.remove(ticket)
                    self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FairLock")
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
