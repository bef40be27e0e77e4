"""A readers-writer lock for the gallery cache: many searches at once, deltas alone.

``with lock:`` takes it exclusively (re-entrant for its holder, like the ``RLock`` it replaces);
``with lock.shared():`` takes it shared. A waiting writer keeps new readers out, so a delta (an
enrolment or an erasure to apply) is never starved by a stream of searches. The exclusive holder
may also take it shared (it already excludes everyone); a shared holder must not ask for it
exclusively (it would wait for itself).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedLock:
    """Exclusive via the context-manager protocol, shared via :meth:`shared`."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    def __enter__(self) -> SharedLock:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
                return self
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer, self._depth = me, 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._writer = None
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:  # the exclusive holder reads too
                self._depth += 1
                owner = True
            else:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
                owner = False
        try:
            yield
        finally:
            if owner:
                self.__exit__()
            else:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()
