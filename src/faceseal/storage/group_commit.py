"""Group commit: concurrent transactions of one store connection share one durable commit.

Every vault operation commits its change and its audit event in one store transaction, and a
durable commit (an fsync, or a WAL flush and a round trip on PostgreSQL) is the slowest step of
a short operation. Under concurrent load the transactions that queue for the connection while one
commits join one *batch*: the batch is one database transaction, each member runs inside a
savepoint of it (a member that fails rolls back to its savepoint, leaving the others intact), and
one commit makes every member durable at once.

What a member is promised is unchanged: its ``with transaction():`` block returns only after the
batch holding it has committed; if that commit fails, every member of the batch raises the
commit's error (nothing of theirs is durable, so nothing is reported done). The chain of audit
events stays a chain: members append one after another on the same connection, each seeing the
events of the members before it.

A batch is committed by the member that finishes while no other transaction is queued for the
lock, by whichever member reaches :data:`MAX_MEMBERS`, or by a waiting member once the batch is
:data:`MAX_OPEN_SECONDS` old; so no member ever waits for traffic that does not come. Between
members the batch's transaction is open but uncommitted: reads by other threads must therefore go
to another connection (which sees committed data only) or call :meth:`GroupCommit.flush` first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: A batch commits once it holds this many members ...
MAX_MEMBERS = 64
#: ... or once it has been open this long (seconds), whatever is queued. Long enough for a few
#: members to run their statements between two switches of the interpreter lock (5 ms).
MAX_OPEN_SECONDS = 0.01
#: A member whose batch nobody committed checks this often (a safety net: the last member of a
#: batch commits it as soon as no other transaction is queued).
AWAIT_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class BatchSteps:
    """The statements a store runs for a batch (all called with the store's lock held)."""

    begin: Callable[[], None]
    savepoint: Callable[[], None]
    release: Callable[[], None]
    rollback_to: Callable[[], None]
    commit: Callable[[], None]
    rollback: Callable[[], None]


@dataclass
class _Batch:
    started: float = field(default_factory=time.monotonic)
    members: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit:
    """Batches the transactions of one connection guarded by ``lock`` (see the module doc)."""

    def __init__(self, lock: threading.RLock, steps: BatchSteps) -> None:
        self._lock = lock
        self._steps = steps
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._batch: _Batch | None = None
        self._owner: int | None = None
        self._depth = 0
        #: Batches committed and members they carried (for benchmarks and tests).
        self.commits = 0
        self.members_committed = 0

    def in_transaction(self) -> bool:
        """Whether the calling thread is inside a transaction of this connection."""
        return self._owner == threading.get_ident()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.in_transaction():  # nested: part of the caller's transaction
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._queued_lock:
            self._queued += 1
        with self._lock:
            with self._queued_lock:
                self._queued -= 1
            batch = self._join()
            self._owner, self._depth = threading.get_ident(), 1
            try:
                yield
            except BaseException:
                self._leave(batch, failed=True)
                raise
            self._leave(batch, failed=False)
        self._await(batch)

    def flush(self) -> None:
        """Commit the open batch now (before a read on this connection by a thread outside it).
        Its members learn the outcome as usual; a failure is theirs, not the caller's."""
        with self._lock:
            if self._batch is not None and not self.in_transaction():
                self._commit(self._batch)

    def close(self) -> None:
        self.flush()

    # --- internals (the lock is held) ----------------------------------------------------------

    def _join(self) -> _Batch:
        batch = self._batch
        if batch is None:
            self._steps.begin()  # raises before anything is joined: the caller gets the error
            batch = self._batch = _Batch()
        try:
            self._steps.savepoint()
        except BaseException as exc:
            self._abort(batch, exc)
            raise
        return batch

    def _leave(self, batch: _Batch, *, failed: bool) -> None:
        self._owner, self._depth = None, 0
        if batch is not self._batch:  # aborted under us (a statement broke the connection)
            return
        try:
            if failed:
                self._steps.rollback_to()
            else:
                self._steps.release()
                batch.members += 1
        except BaseException as exc:
            self._abort(batch, exc)
            if not failed:
                raise
            return
        with self._queued_lock:
            queued = self._queued
        if (not queued or batch.members >= MAX_MEMBERS
                or time.monotonic() - batch.started >= MAX_OPEN_SECONDS):
            self._commit(batch)

    def _commit(self, batch: _Batch) -> None:
        if batch is not self._batch:
            return
        self._batch = None
        try:
            self._steps.commit()
        except BaseException as exc:
            batch.error = exc
            with contextlib.suppress(Exception):  # the connection is gone; the error stands
                self._steps.rollback()
        else:
            self.commits += 1
            self.members_committed += batch.members
        batch.done.set()

    def _abort(self, batch: _Batch, error: BaseException) -> None:
        if batch is self._batch:
            self._batch = None
            batch.error = error
            with contextlib.suppress(Exception):  # the connection is gone; the error stands
                self._steps.rollback()
            batch.done.set()

    # --- waiting (the lock is not held) ---------------------------------------------------------

    def _await(self, batch: _Batch) -> None:
        while not batch.done.wait(AWAIT_POLL_SECONDS):
            with self._lock:  # nobody came to commit it: do it ourselves
                if self._batch is batch and self._owner is None:
                    self._commit(batch)
        if batch.error is not None:
            raise batch.error
