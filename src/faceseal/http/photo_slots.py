"""At most N photo requests of one principal at work at once; the others wait their turn.

Photo work runs in a few dlib lanes (:mod:`faceseal.encoders.fair_lock`). Without a
per-principal bound, one principal sending many photos at once fills every lane and the queue for
them, and every other principal's verify waits behind all of them. With it, a principal has at
most ``limit`` requests competing for the lanes; the rest wait in the event loop (no thread, no
lane) until one of theirs finishes, within their own time limit. The photo work of a request
abandoned at its time limit stops at its next dlib step (:mod:`faceseal.encoders.deadline`), so
releasing the slot then does not let abandoned work pile up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class PhotoSlots:
    """Per-principal counting semaphores, created on demand and dropped when idle. Used only
    from the event loop (one thread), so the table needs no lock."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: dict[str, tuple[anyio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def slot(self, principal: str) -> AsyncIterator[None]:
        entry = self._entries.get(principal)
        if entry is None:
            entry = self._entries[principal] = (anyio.Semaphore(self._limit), [0])
        semaphore, users = entry
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._entries[principal]

    def __len__(self) -> int:
        return len(self._entries)
