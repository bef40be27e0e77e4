"""The audit log of one vault: appends chained events, takes checkpoints, verifies, exports.

Appending goes through :meth:`TemplateStore.append_audit`, which reads the head and inserts under
the store's writer lock *inside the caller's transaction*: an operation's change and its event
commit together or not at all. Checkpoints are written only after the event's transaction has
committed (a checkpoint must never name an event that was rolled back): at once when enough
events have piled up, else by a :class:`~faceseal.audit.clock.CheckpointClock` at most
``checkpoint_seconds`` later whatever the traffic, and at :meth:`AuditLog.close`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faceseal.audit.chain import (
    AuditKey,
    ChainReport,
    Checkpoint,
    event_verifies,
    verify_chain,
)
from faceseal.audit.clock import CheckpointClock
from faceseal.audit.events import AuditEvent, decode_detail
from faceseal.audit.state import AuditState
from faceseal.errors import FacesealError
from faceseal.schema import Result
from faceseal.storage.base import AuditRecord, TemplateStore

log = logging.getLogger(__name__)

#: A checkpoint is taken after this many events committed by this process ...
DEFAULT_CHECKPOINT_EVERY = 16
#: ... or at most this many seconds after an uncovered event commits (and at close, always).
DEFAULT_CHECKPOINT_SECONDS = 1.0


class AuditLog:
    """Writes, checkpoints and verifies the audit chain of one vault."""

    def __init__(
        self,
        store: TemplateStore,
        state: AuditState,
        keys: dict[int, AuditKey],
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._store = store
        self._state = state
        self._keys = keys
        self._active = keys[max(keys)]
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._lock = threading.Lock()
        self._last: AuditRecord | None = None
        self._last_checkpoint_seq = 0
        self._last_checkpoint_time = time.monotonic()
        # The clock's thread holds the log only weakly: a vault dropped without close() is still
        # collected, and the finaliser stops the thread.
        scheduled = weakref.WeakMethod(self._scheduled_checkpoint)

        def tick() -> None:
            method = scheduled()
            if method is not None:
                method()

        self._clock = CheckpointClock(checkpoint_seconds, tick)
        weakref.finalize(self, self._clock.stop, 0)

    @property
    def state(self) -> AuditState:
        return self._state

    # --- writing ---------------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditRecord:
        """Chain ``event`` to the head inside the store's current transaction (or its own).

        Raises :class:`~faceseal.errors.AuditWriteFailed` if it cannot be written. Call
        :meth:`committed` once the transaction has committed.
        """
        return self._store.append_audit(
            lambda seq, prev_mac: event.to_record(seq, prev_mac, self._active.event_mac))

    def append_now(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` in a transaction of its own (outside any other) and commit it."""
        record = self.append(event)
        self.committed(record)
        return record

    def committed(self, record: AuditRecord) -> None:
        """Note that ``record`` is durable; take a checkpoint when one is due."""
        with self._lock:
            if self._last is None or record.seq > self._last.seq:
                self._last = record
            due = (record.seq - self._last_checkpoint_seq >= self._checkpoint_every
                   or time.monotonic() - self._last_checkpoint_time >= self._checkpoint_seconds)
        if due:
            self.checkpoint(best_effort=True)
        else:
            self._clock.arm()

    def _scheduled_checkpoint(self) -> None:
        if self.checkpoint(best_effort=True) is None and self._uncovered():
            self._clock.arm()  # it failed: try again after another interval

    def _uncovered(self) -> bool:
        with self._lock:
            return self._last is not None and self._last.seq > self._last_checkpoint_seq

    def close(self) -> None:
        """Stop the clock and checkpoint what is left (a clean shutdown leaves no window)."""
        self._clock.stop()
        self.checkpoint(best_effort=True)

    def checkpoint(self, *, best_effort: bool = False) -> Checkpoint | None:
        """Record the newest event this process committed as a checkpoint in the key directory."""
        with self._lock:
            last = self._last
            if last is None or last.seq <= self._last_checkpoint_seq:
                return None
            written_at = time.time()
            checkpoint = Checkpoint(last.seq, last.mac, written_at,
                                    self._active.checkpoint_tag(last.seq, last.mac, written_at))
            try:
                self._state.add_checkpoint(checkpoint)
            except FacesealError:
                if not best_effort:
                    raise
                log.warning("audit checkpoint at event %d could not be written", last.seq)
                return None
            self._last_checkpoint_seq = last.seq
            self._last_checkpoint_time = time.monotonic()
            self._clock.disarm()  # every event this process committed is covered
            return checkpoint

    # --- reading ---------------------------------------------------------------------------------

    def events(
        self, *, after_seq: int = 0, tenant: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        return self._store.audit_events(after_seq=after_seq, tenant=tenant, since=since,
                                        limit=limit)

    def tail(self, count: int, *, tenant: str | None = None) -> list[AuditRecord]:
        """The newest ``count`` events (of one tenant, or all), oldest first."""
        newest: list[AuditRecord] = []
        start = 0
        if tenant is None:
            # Skip to just before the newest checkpoint's window rather than scanning the log.
            latest = self._state.latest_checkpoint()
            start = max(0, (latest.seq if latest else 0) - count)
        for record in self._store.audit_events(after_seq=start, tenant=tenant):
            newest.append(record)
            if len(newest) > count:
                del newest[0]
        return newest

    def event_verifies(self, record: AuditRecord) -> bool:
        """Whether one event's own MAC holds (``audit tail`` marks those that do not)."""
        return event_verifies(record, self._keys)

    def verify(self) -> ChainReport:
        """Check the whole chain and every checkpoint; the report names the first broken event."""
        return verify_chain(self._store.audit_events(), self._keys, self._state.checkpoints())


@dataclass(frozen=True)
class AuditEventInfo(Result):
    """One audit event as shown: ``audit tail``, ``audit export`` and ``GET /v1/audit/events``."""

    seq: int
    event_id: str
    time: str
    occurred_at: float
    principal: str
    role: str
    action: str
    tenant: str | None
    subject_id: str | None
    template_ids: list[str]
    outcome: str
    request_id: str
    detail: dict[str, Any]
    prev_mac: str
    mac: str
    verified: bool
    """Whether the event's own MAC holds; false marks an event written without the audit key
    (forged or edited)."""


def record_to_json(record: AuditRecord, verified: bool | None = None) -> dict[str, Any]:
    """One event as a JSON object (:class:`AuditEventInfo`), with ``verified`` (whether its own
    MAC holds) when the caller checked it, and without it otherwise (``audit export``)."""
    shown = AuditEventInfo(
        record.seq, record.event_id,
        datetime.fromtimestamp(record.occurred_at, UTC).isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        record.occurred_at, record.principal, record.role, record.action, record.tenant,
        record.subject_id, list(record.template_ids), record.outcome, record.request_id,
        decode_detail(record.detail), record.prev_mac.hex(), record.mac.hex(),
        bool(verified)).to_dict()
    if verified is None:
        del shown["verified"]
    return shown
