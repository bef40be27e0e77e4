"""The template store contract.

A store keeps sealed records, subjects, wrapped data keys and their counters, and small metadata.
It only ever sees ciphertext, identifiers and metadata: nothing it holds can be read without the
key provider and the subject key store, which live elsewhere.

Every backend (SQLite, PostgreSQL, files) implements :class:`TemplateStore` and passes the same
contract tests.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from faceseal.keys.datakeys import DataKeyInfo


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One sealed template as stored."""

    template_id: str
    tenant: str
    subject_id: str
    model_id: str
    dimension: int
    dtype: str
    key_version: int
    record: bytes
    created_at: float

    def __repr__(self) -> str:
        # The record is ciphertext, but there is no reason to spill it into logs either.
        return (
            f"TemplateRow(template_id={self.template_id!r}, tenant={self.tenant!r}, "
            f"subject_id={self.subject_id!r}, model_id={self.model_id!r}, "
            f"key_version={self.key_version}, record=<{len(self.record)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class TemplateBatch:
    """Many sealed templates of one tenant, model, dtype and key version (bulk enrolment)."""

    tenant: str
    model_id: str
    dimension: int
    dtype: str
    key_version: int
    created_at: float
    subject_ids: Sequence[str]
    template_ids: Sequence[str]
    #: Sealed records (bytes, or read-only views of one buffer as batch sealing makes them).
    records: Sequence[bytes | memoryview]

    def __repr__(self) -> str:
        return (f"TemplateBatch(tenant={self.tenant!r}, model_id={self.model_id!r}, "
                f"templates={len(self.template_ids)})")


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """A subject and how many templates it has.

    ``inventory`` authenticates the set of its template ids under a key the store never holds
    (see :mod:`faceseal.vault.inventory`); empty on subjects from before inventories existed."""

    tenant: str
    subject_id: str
    created_at: float
    last_seen_at: float
    templates: int
    inventory: bytes = b""


class DirectSource(NamedTuple):
    """What :meth:`TemplateStore.direct_read_source` returns."""

    kind: str  # "sqlite"
    location: str  # the database file
    templates: int  # the tenant's templates when asked (a capacity hint)


def template_tuple(row: TemplateRow) -> tuple[Any, ...]:
    """``row`` as a plain tuple in field order (``TemplateRow(*t)`` rebuilds it)."""
    return (row.template_id, row.tenant, row.subject_id, row.model_id, row.dimension,
            row.dtype, row.key_version, row.record, row.created_at)


#: ``after`` for :meth:`TemplateStore.templates_added` meaning "from the very first template"
#: (templates enrolled before the change log existed carry change 0).
FROM_START = -1


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    """What the change log says about one tenant between two sequence numbers.

    ``erased`` names the subjects erased in ``(after, upto]``, oldest first; the templates added
    in that range are read with :meth:`TemplateStore.templates_added`. ``complete`` is False when
    the log no longer reaches back to ``after`` (pruned): the reader must reload the tenant.
    """

    tenant: str
    after: int
    upto: int
    erased: tuple[str, ...]
    added: int
    complete: bool = True


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit event as stored. Never holds an encoding, a key or an API key.

    ``mac`` is a keyed MAC over ``prev_mac`` and the event's canonical content (computed by the
    audit layer, which holds the key; the store only keeps the bytes).
    """

    seq: int
    event_id: str
    occurred_at: float
    principal: str
    role: str
    action: str
    tenant: str | None
    subject_id: str | None
    template_ids: tuple[str, ...]
    outcome: str
    request_id: str
    detail: str
    prev_mac: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    """A principal and the hash of its API key (never the key itself).

    ``mac`` authenticates every other field under a key the store never holds (see
    :mod:`faceseal.access.sealing`); empty on rows written before principals were signed.
    """

    principal_id: str
    name: str
    role: str
    tenant: str | None  # None: every tenant (admins and auditors only)
    key_id: str  # public, non-secret prefix used to find the row
    key_hash: bytes
    created_at: float
    revoked_at: float | None
    mac: bytes = b""

    def __repr__(self) -> str:
        return (f"PrincipalRow(name={self.name!r}, role={self.role!r}, tenant={self.tenant!r}, "
                f"key_id={self.key_id!r}, <hash and mac redacted>)")


class ChangeListener:
    """Wakes a waiting thread when the store may hold new changes. This default polls: it just
    sleeps for the timeout (SQLite and the file store have no notifications; a head read per
    tick is cheap). PostgreSQL overrides it with LISTEN/NOTIFY."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Block until a change may have happened or ``timeout`` seconds passed; False once
        closed."""
        return not self._closed.wait(timeout)

    def close(self) -> None:
        self._closed.set()


#: Counter events older than this are deleted whatever their key (no window may be longer).
MAX_COUNTER_WINDOW = 7 * 24 * 3600.0


def window_wait(events: Sequence[tuple[float, int]], limit: int, cost: int, window: float,
                now: float) -> float | None:
    """For ``events`` ((time, cost), oldest first, all within the window ending at ``now``):
    None when ``cost`` more keep the total within ``limit``, else the seconds until they would."""
    held = sum(c for _, c in events)
    if held + cost <= limit:
        return None
    if cost > limit:
        return window
    excess, gone = held + cost - limit, 0
    for at, c in events:
        gone += c
        if gone >= excess:
            return max(at + window - now, 0.0)
    return window  # pragma: no cover - held >= excess, so the loop returns


class TemplateStore(ABC):
    """Persistent storage for sealed templates and wrapped keys."""

    #: Latest schema version this code writes.
    SCHEMA_VERSION: int = 1

    @abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Apply pending migrations; returns (version before, version after)."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store is at (0 for an empty store)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group the writes inside into one atomic transaction (nesting joins the outer one)."""

    # --- metadata --------------------------------------------------------------------------------

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # --- templates and subjects ------------------------------------------------------------------

    @abstractmethod
    def add_templates(self, rows: Sequence[TemplateRow]) -> None:
        """Insert sealed templates, creating their subjects as needed, atomically."""

    def add_template_batch(self, batch: TemplateBatch) -> None:
        """Insert many sealed templates of one tenant and model, atomically.

        The default builds :class:`TemplateRow` objects and calls :meth:`add_templates`; stores
        override it with a faster bulk path (SQLite: one ``executemany`` per table).
        """
        self.add_templates([
            TemplateRow(template_id, batch.tenant, subject_id, batch.model_id, batch.dimension,
                        batch.dtype, batch.key_version, bytes(record), batch.created_at)
            for template_id, subject_id, record in zip(batch.template_ids, batch.subject_ids,
                                                       batch.records, strict=True)
        ])

    @abstractmethod
    def subject_templates(self, tenant: str, subject_id: str) -> list[TemplateRow]:
        """All templates of one subject (empty if the subject does not exist)."""

    def subjects_templates(self, tenant: str, subject_ids: Sequence[str]) -> list[TemplateRow]:
        """The templates of several subjects (identify's exact re-rank opens a few at once);
        stores that can read them in one query override this."""
        return [row for subject_id in dict.fromkeys(subject_ids)
                for row in self.subject_templates(tenant, subject_id)]

    @abstractmethod
    def gallery(self, tenant: str | None, batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        """Stream the templates of a tenant (or of every tenant when ``None``) in batches."""

    @abstractmethod
    def subjects(self, tenant: str) -> list[SubjectRow]:
        """The subjects of a tenant with their template counts, ordered by subject id."""

    @abstractmethod
    def subject_exists(self, tenant: str, subject_id: str) -> bool: ...

    @abstractmethod
    def inventories(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored inventory of each existing subject among ``subject_ids``."""

    @abstractmethod
    def set_inventories(self, tenant: str, inventories: dict[str, bytes]) -> None:
        """Store the inventory of existing subjects (in the caller's transaction)."""

    @abstractmethod
    def touch_subject(self, tenant: str, subject_id: str, when: float) -> None:
        """Record that the subject was enrolled or matched at ``when`` (for retention)."""

    @abstractmethod
    def erase_subject(self, tenant: str, subject_id: str) -> list[str]:
        """Delete a subject and its templates; returns the deleted template ids."""

    # --- the change log --------------------------------------------------------------------------
    #
    # Every write that changes what a tenant's gallery must hold (adding templates, erasing a
    # subject) bumps the tenant's head and logs what changed, in the same transaction as the
    # change itself, inside the store: no caller can forget it. Heads only grow; a later change
    # commits with a larger number, so a reader that saw head N has seen every change <= N.

    @abstractmethod
    def change_head(self, tenant: str) -> int:
        """The tenant's newest change sequence number (0 before its first change)."""

    @abstractmethod
    def changes(self, tenant: str, after: int, upto: int) -> ChangeSummary:
        """The changes of ``tenant`` numbered in ``(after, upto]``."""

    @abstractmethod
    def templates_added(self, tenant: str, after: int, upto: int,
                        batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        """The templates of ``tenant`` still present that were added by changes numbered in
        ``(after, upto]`` (``after=FROM_START``: every template up to ``upto``), in batches."""

    def template_tuples_of_tenant(self, tenant: str, upto: int, batch_size: int = 10_000
                                  ) -> Iterator[list[tuple[Any, ...]]]:
        """Every template of ``tenant`` still present that was added by changes numbered up to
        ``upto``, in batches of plain tuples in :class:`TemplateRow` field order, in whatever
        order the store reads fastest: loading a whole gallery, where building a row object
        per template cost as much as reading it. The same set as
        ``templates_added(tenant, FROM_START, upto)``."""
        for page in self.templates_added(tenant, FROM_START, upto, batch_size):
            yield [template_tuple(r) for r in page]

    def direct_read_source(self, tenant: str, at_least: int) -> DirectSource | None:
        """Where another process of this vault may read ``tenant``'s templates itself (the
        gallery loader's helper), when the tenant holds at least ``at_least`` of them; None
        where it cannot (the loader then reads and hands pages over)."""
        del tenant, at_least
        return None

    def change_listener(self) -> ChangeListener:
        """A listener a follower thread waits on for changes (see :class:`ChangeListener`)."""
        return ChangeListener()

    # --- leases (one holder at a time, across processes) ----------------------------------------

    def lease_take(self, name: str, holder: dict[str, str | int | float], seconds: float,
                   now: float, *, replace: str | None = None
                   ) -> dict[str, str | int | float] | None:
        """Take the lease ``name`` for ``holder`` (a JSON object whose ``token`` names it) until
        ``now + seconds``, or renew it if ``holder`` has it, and return None; if another holder's
        lease is still live, change nothing and return that holder. A lease whose holder died
        (a kill -9, a lost machine) lapses at its expiry, so it never wedges the store; one the
        caller knows to be dead is taken over at once by naming its token as ``replace``.

        Kept in the metadata under ``lease:NAME``; the read and the write are one transaction,
        serialised across processes (:meth:`_serialise_lease`)."""
        key = f"lease:{name}"
        with self.transaction():
            self._serialise_lease(key)
            current = _parse_lease(self.get_meta(key))
            if (current is not None and current.get("token") not in (holder["token"], replace)
                    and float(current.get("expires", 0.0)) > now):
                return current
            self.set_meta(key, json.dumps({**holder, "expires": now + seconds},
                                          sort_keys=True))
            return None

    def lease_release(self, name: str, token: str) -> None:
        """Give the lease ``name`` up if the holder ``token`` still has it (else do nothing)."""
        key = f"lease:{name}"
        with self.transaction():
            self._serialise_lease(key)
            current = _parse_lease(self.get_meta(key))
            if current is not None and current.get("token") == token:
                self.set_meta(key, "")

    def _serialise_lease(self, key: str) -> None:
        """Make the read-then-write of a lease exclusive across processes. SQLite (BEGIN
        IMMEDIATE) and the file store (an exclusive flock) already hold the store for the whole
        transaction; PostgreSQL adds a transaction-scoped advisory lock."""
        del key  # nothing to add here

    # --- shared counters (failed-authentication limits, budgets) ----------------------------------

    @abstractmethod
    def counter_take(self, key: str, limit: int | None, window: float, cost: int,
                     now: float) -> float | None:
        """Atomically count ``cost`` events for ``key`` at ``now`` when that keeps it within
        ``limit`` events in the last ``window`` seconds (``limit=None``: always count) and return
        None; otherwise count nothing and return the seconds until it would fit."""

    @abstractmethod
    def counter_retry_after(self, key: str, limit: int, window: float,
                            now: float) -> float | None:
        """Seconds until ``key`` holds fewer than ``limit`` events in its window, or None."""

    @abstractmethod
    def replace_records(self, rows: Sequence[TemplateRow]) -> int:
        """Overwrite the record and key version of existing templates (re-encryption)."""

    @abstractmethod
    def key_version_counts(self) -> dict[int, int]:
        """How many records each data-key version seals."""

    def templates_below_version(
        self, version: int, after: str = "", limit: int = 1000
    ) -> list[TemplateRow]:
        """Up to ``limit`` templates sealed under a data-key version below ``version``, in
        template-id order after ``after`` (for re-encryption in batches).

        This default scans the gallery; backends override it with an indexed query."""
        found: list[TemplateRow] = []
        for batch in self.gallery(None):
            for row in batch:
                if row.template_id > after and row.key_version < version:
                    found.append(row)
                    if len(found) >= limit:
                        return found
        return found

    # --- data keys (the DataKeyRepository protocol) ----------------------------------------------

    @abstractmethod
    def load_data_keys(self) -> list[DataKeyInfo]: ...

    @abstractmethod
    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool: ...

    @abstractmethod
    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool:
        """Add ``count`` to the counter of ``version`` if the total stays within ``limit``.

        Any existing version may be counted, not only the newest row: which version is active
        is the vault's decision (a row planted in the store must not block every enrolment)."""

    @abstractmethod
    def replace_wrapped(self, version: int, wrapped: bytes) -> None: ...

    # --- audit log (append-only) -----------------------------------------------------------------

    @abstractmethod
    def append_audit(self, build: Callable[[int, bytes], AuditRecord]) -> AuditRecord:
        """Append one event, chained to the head, inside the current transaction (or its own).

        The store reads the head -- the last ``seq`` (0 when empty) and its ``mac`` (empty bytes
        when empty) -- under a lock that serialises writers, calls ``build(seq + 1, mac)`` and
        inserts the result. Raises :class:`~faceseal.errors.AuditWriteFailed` if it cannot.
        """

    @abstractmethod
    def audit_events(
        self, *, after_seq: int = 0, tenant: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        """Events in ``seq`` order, optionally only one tenant's or those from ``since`` on."""

    # --- principals ------------------------------------------------------------------------------

    @abstractmethod
    def add_principal(self, row: PrincipalRow) -> None:
        """Insert a principal; :class:`~faceseal.errors.Conflict` if the name is taken."""

    @abstractmethod
    def principal_by_key_id(self, key_id: str) -> PrincipalRow | None: ...

    @abstractmethod
    def principals(self) -> list[PrincipalRow]: ...

    @abstractmethod
    def revoke_principal(self, name: str, when: float, mac: bytes = b"") -> bool:
        """Mark a principal revoked (storing the row's new ``mac``); False if there is no such
        active principal."""

    @abstractmethod
    def set_principal_mac(self, principal_id: str, mac: bytes) -> bool:
        """Store the MAC of an existing principal row (the upgrade that signs legacy rows)."""

    # --- tenants and retention -------------------------------------------------------------------

    @abstractmethod
    def set_retention(self, tenant: str, seconds: float | None) -> None:
        """Set (or clear, with None) how long a tenant keeps subjects without activity."""

    @abstractmethod
    def retention(self, tenant: str) -> float | None: ...

    @abstractmethod
    def tenants(self) -> list[str]:
        """Every tenant that has subjects or a retention setting, sorted."""

    @abstractmethod
    def inactive_subjects(self, tenant: str, before: float) -> list[str]:
        """Subject ids of a tenant whose last enrol or match is older than ``before``."""

    # --- life cycle ------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, without credentials."""

    def __enter__(self) -> TemplateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_lease(value: str | None) -> dict[str, str | int | float] | None:
    """A stored lease, or None for none (never taken, released, or unreadable)."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
