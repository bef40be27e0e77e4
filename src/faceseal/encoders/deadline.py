"""A deadline for photo work, so that the time limit of a request applies to its dlib work.

A front end that abandons a call when its time is up (the HTTP service does) leaves the call
running in its thread; without this, an abandoned photo request would still wait for the
dlib lanes and then detect and encode, delaying everyone else's photos for nothing.
:func:`call_with_deadline` runs a call with a deadline in a context variable; the encoder checks it
before each dlib step and waits for a lane no longer than the time left, raising
:class:`~faceseal.errors.ServiceTimeout` once it has passed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import ParamSpec, Protocol, TypeVar

from faceseal.errors import ServiceTimeout

P = ParamSpec("P")
T = TypeVar("T")


class TimedLanes(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> int | None: ...

    def release(self, lane: int) -> None: ...


_deadline: ContextVar[float | None] = ContextVar("faceseal_photo_deadline", default=None)
TIMED_OUT = "the photo work did not finish within the request's time limit"


def call_with_deadline(deadline: float | None, fn: Callable[P, T], /, *args: P.args,
                       **kwargs: P.kwargs) -> T:
    """Run ``fn`` with ``deadline`` (a :func:`time.monotonic` value; None: no limit)."""
    token = _deadline.set(deadline)
    try:
        return fn(*args, **kwargs)
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (None: no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def check_deadline() -> None:
    """Raise :class:`ServiceTimeout` when the current deadline has passed."""
    left = remaining()
    if left is not None and left <= 0:
        raise ServiceTimeout(TIMED_OUT)


@contextlib.contextmanager
def holding_lane(lanes: TimedLanes) -> Iterator[int]:
    """Hold one of ``lanes`` (its number is yielded), waiting no longer than the current deadline
    allows."""
    left = remaining()
    if left is not None and left <= 0:
        raise ServiceTimeout(TIMED_OUT)
    lane = lanes.acquire() if left is None else lanes.acquire(timeout=left)
    if lane is None:
        raise ServiceTimeout(TIMED_OUT)
    try:
        yield lane
    finally:
        lanes.release(lane)
