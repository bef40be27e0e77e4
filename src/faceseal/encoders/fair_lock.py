"""First-come, first-served access to the dlib models: one lane or several.

``threading.Lock`` hands itself to whichever thread runs next, and the thread that just released
it usually does: a thread encoding photo after photo (detect, describe, detect, ...) re-takes the
lock before a waiting thread wakes, so another principal's verify could wait several steps instead
of one. Here waiters are served in arrival order, so a request waits for at most the steps of the
requests that were queued before it.

:class:`FairLanes` holds several lanes (each with its own copy of the models, see
:mod:`faceseal.encoders.dlib_resnet`): dlib releases the interpreter lock while it works, so two
lanes on two cores run two photos at once, and a photo flood that keeps one lane busy leaves the
other to everyone else. One lane is a first-come, first-served lock.
"""

from __future__ import annotations

import collections
import threading
import time


class FairLanes:
    """``count`` interchangeable lanes handed out in arrival order, with an ``acquire`` timeout.
    A lane is held by one thread at a time; not re-entrant."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one lane")
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[object] = collections.deque()
        self._free = list(range(count - 1, -1, -1))  # pop() hands out lane 0 first
        self._count = count

    @property
    def count(self) -> int:
        return self._count

    def acquire(self, blocking: bool = True, timeout: float = -1) -> int | None:
        """A free lane's number, once every earlier waiter has been served; None when
        ``blocking`` is false or ``timeout`` passed first."""
        ticket = object()
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while not self._free or self._queue[0] is not ticket:
                    if not blocking:
                        return None
                    if deadline is None:
                        self._cond.wait()
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
                self._queue.popleft()
                lane = self._free.pop()
                if self._free and self._queue:  # the next in line may take another free lane
                    self._cond.notify_all()
                return lane
            finally:
                if ticket in self._queue:  # gave up (timeout): let the next in line see its turn
                    self._queue.remove(ticket)
                    self._cond.notify_all()

    def release(self, lane: int) -> None:
        with self._cond:
            if not 0 <= lane < self._count or lane in self._free:
                raise RuntimeError("release of a lane that is not held")
            self._free.append(lane)
            self._cond.notify_all()
