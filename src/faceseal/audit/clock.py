"""A timer that runs an action at most ``interval`` seconds after it is armed.

The audit log arms it when an event commits without being covered by a checkpoint, so that a
checkpoint follows within the interval even if no further event ever comes (an idle server used
to leave its last events uncovered until the next write). One daemon thread per armed clock,
started on first use and stopped by :meth:`CheckpointClock.stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class CheckpointClock:
    """Calls ``action`` once per armed period, at most ``interval`` seconds after arming."""

    def __init__(self, interval: float, action: Callable[[], None], *,
                 name: str = "faceseal-audit-checkpoint") -> None:
        self._interval = max(interval, 0.0)
        self._action = action
        self._name = name
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Ask for the action within the interval (a no-op when it is already due, or stopped)."""
        with self._cond:
            if self._stopped or self._deadline is not None:
                return
            self._deadline = time.monotonic() + self._interval
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        """The action's work was just done by someone else: nothing is due."""
        with self._cond:
            self._deadline = None

    @property
    def armed(self) -> bool:
        with self._cond:
            return self._deadline is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a running action is waited for, up to ``timeout``)."""
        with self._cond:
            self._stopped = True
            self._deadline = None
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._deadline is None:
                        self._cond.wait()
                        continue
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopped:
                    return
                self._deadline = None
            try:
                self._action()
            except Exception:  # the thread must survive; the action logs its own failures
                log.exception("the scheduled audit checkpoint failed")
