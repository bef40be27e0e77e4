"""The embedded template store: one SQLite file.

WAL journal (readers never block the writer), ``synchronous=FULL`` (a committed enrolment survives
power loss), foreign keys on, ``secure_delete`` on (erased rows are overwritten in the main file;
copies that linger in the WAL or a backup are covered by crypto-shredding, not by this).

One writer connection per store object, shared by threads: its transactions are batched by
group commit (:mod:`faceseal.storage.group_commit`: concurrent operations share one fsync). Reads
outside a transaction go to a read-only connection of the reading thread's own, which WAL lets run
beside the writer and which sees committed data only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faceseal.errors import AuditWriteFailed, Conflict, StorageUnavailable
from faceseal.keys.datakeys import DataKeyInfo
from faceseal.storage.base import (
    MAX_COUNTER_WINDOW,
    AuditRecord,
    ChangeSummary,
    DirectSource,
    PrincipalRow,
    SubjectRow,
    TemplateBatch,
    TemplateRow,
    TemplateStore,
    window_wait,
)
from faceseal.storage.group_commit import BatchSteps, GroupCommit
from faceseal.storage.sqlite_migrations import MIGRATIONS

log = logging.getLogger(__name__)

#: Expired counter events of every key are swept at most this often (seconds).
SWEEP_SECONDS = 60.0
#: How long a write waits for another process's write transaction on the same file.
WRITE_WAIT_SECONDS = 30.0
#: The longest pause between two attempts to start a write while another process writes.
WRITE_RETRY_MAX_PAUSE = 0.002

_AUDIT_COLUMNS = (
    "seq, event_id, occurred_at, principal, role, action, tenant, subject_id, template_ids, "
    "outcome, request_id, detail, prev_mac, mac"
)
_PRINCIPAL_COLUMNS = (
    "principal_id, name, role, tenant, key_id, key_hash, created_at, revoked_at, mac"
)
_TEMPLATE_COLUMNS = (
    "template_id, tenant, subject_id, model_id, dimension, dtype, key_version, record, created_at"
)


class _Reader:
    """Holds one thread's read connection (a connection cannot be weakly referenced)."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


def _row(values: tuple[Any, ...]) -> TemplateRow:
    return TemplateRow(*values)


def read_only_uri(path: str) -> str:
    """A SQLite URI opening ``path`` read-only (``?``, ``#`` and ``%`` in it escaped)."""
    return Path(path).absolute().as_uri() + "?mode=ro"


class DirectReader:
    """A tenant's templates read in rowid ranges on a read-only connection of its own: the
    gallery loader and its helper process each read the ranges they are given, in table order
    (see :meth:`SQLiteStore.direct_read_source`)."""

    def __init__(self, path: str) -> None:
        try:
            self._db = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("open", exc)) from None

    def ranges(self, rows_per_range: int) -> list[tuple[int, int]]:
        """Half-open rowid ranges covering the table, ``rows_per_range`` rowids each."""
        try:
            low, high = self._db.execute("SELECT min(rowid), max(rowid) FROM templates").fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None
        if low is None:
            return []
        return [(start, min(start + rows_per_range, int(high) + 1))
                for start in range(int(low), int(high) + 1, rows_per_range)]

    def read(self, tenant: str, upto: int, start: int, stop: int) -> list[tuple[Any, ...]]:
        """The tenant's templates added up to change ``upto`` with rowids in [start, stop), as
        tuples in TemplateRow field order."""
        try:
            return self._db.execute(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates NOT INDEXED "  # noqa: S608 - constant
                "WHERE tenant = ? AND change_seq <= ? AND rowid >= ? AND rowid < ?",
                (tenant, upto, start, stop)).fetchall()
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None

    def close(self) -> None:
        self._db.close()


def direct_reader(kind: str, location: str) -> DirectReader:
    """The reader for what :meth:`SQLiteStore.direct_read_source` returned."""
    if kind != "sqlite":
        raise ValueError(f"cannot read a {kind!r} store directly")
    return DirectReader(location)


class SQLiteStore(TemplateStore):
    """Template store in a single SQLite database file."""

    SCHEMA_VERSION = max(version for version, _ in MIGRATIONS)

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self._path = path
        if not create and not path.exists():
            raise StorageUnavailable(f"no template database at {path.name}")
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=WRITE_WAIT_SECONDS
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")
            # 64 MiB of page cache for the writer (SQLite's default is 2 MiB): a bulk enrolment
            # inserts into five indexes at random keys, and at 1M rows they outgrow 2 MiB fast.
            self._db.execute("PRAGMA cache_size=-65536")
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("open", exc)) from None
        if create:
            path.chmod(0o600)
        self._lock = threading.RLock()
        self._group = GroupCommit(self._lock, BatchSteps(
            begin=self._begin,
            savepoint=lambda: self._step("SAVEPOINT member"),
            release=lambda: self._step("RELEASE member"),
            rollback_to=lambda: self._step("ROLLBACK TO member"),
            commit=lambda: self._step("COMMIT"),
            rollback=lambda: self._step("ROLLBACK"),
        ))
        # Reads outside a transaction go to a connection of the reading thread's own: WAL lets
        # it read while the writer works, and it sees committed data only (never a batch that
        # is still open, see faceseal.storage.group_commit).
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()  # not the writer's: a transaction may be open
        self._closed = False
        self._last_sweep = 0.0

    # --- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit; concurrent ones share a commit (group commit)."""
        with self._group.transaction():
            yield

    def _step(self, statement: str) -> None:
        if statement in ("RELEASE member", "COMMIT") and not self._db.in_transaction:
            # SQLite rolled the whole transaction back on an error (a full disk, I/O): every
            # member of the batch lost its work, so none may be reported done.
            raise StorageUnavailable("SQLite rolled the transaction back")
        self._execute(statement)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for another process's writer (``serve --workers``, the CLI)
        in short pauses. SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms at a time,
        so a waiting writer kept missing a lock held a millisecond: two SQLite workers at 16
        clients had a verify p99 of 650 ms, against 146 ms for one (docs/performance.md)."""
        deadline = time.monotonic() + WRITE_WAIT_SECONDS
        pause = 0.0001
        self._execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if (getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY
                            or time.monotonic() >= deadline):
                        raise StorageUnavailable(_describe_error("query", exc)) from None
                time.sleep(pause)
                pause = min(pause * 2, WRITE_RETRY_MAX_PAUSE)
        finally:
            self._execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT_SECONDS * 1000)}")

    def _reader(self) -> sqlite3.Connection:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            if self._closed:
                raise StorageUnavailable("the SQLite store is closed")
            try:
                conn = sqlite3.connect(self._path, isolation_level=None,
                                       check_same_thread=False, timeout=30)
                conn.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                raise StorageUnavailable(_describe_error("open", exc)) from None
            reader = _Reader(conn)
            # A server's pool threads come and go: when one ends, its thread-local holder is
            # dropped and the connection closed with it, rather than kept until the store closes.
            weakref.finalize(reader, conn.close)
            with self._readers_lock:
                self._readers.add(reader)
            self._local.reader = reader
        return reader.db

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.IntegrityError as exc:  # a duplicate id or an unknown key version
            raise Conflict(f"SQLite refused the write: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        try:
            return self._db.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"SQLite refused the write: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("write", exc)) from None

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._group.in_transaction():  # sees the transaction's own writes
            return self._execute(sql, params).fetchall()
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The writer connection for a read outside any transaction: the open batch commits
        first, so the read never sees uncommitted work."""
        with self._lock:
            self._group.flush()
            yield

    # --- schema ----------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._locked():
            exists = self._execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
            ).fetchone()
            if not exists:
                return 0
            row = self._execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

    def _applied_versions(self) -> set[int]:
        return {int(r[0]) for r in self._execute(
            "SELECT version FROM schema_migrations").fetchall()}

    def migrate(self) -> tuple[int, int]:
        with self.transaction():
            before = self.schema_version()
            # Every step not yet recorded, in list order: a version number missing from the
            # list (or a step merged in below one already applied) is no obstacle.
            applied = self._applied_versions() if before else set()
            for version, script in MIGRATIONS:
                if version in applied:
                    continue
                for statement in _statements(script):
                    self._execute(statement)
                self._execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
                log.info("applied SQLite migration %d", version)
            return before, self.schema_version()

    # --- metadata --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- templates and subjects ------------------------------------------------------------------

    def add_templates(self, rows: Sequence[TemplateRow]) -> None:
        if not rows:
            return
        now = time.time()
        subjects = {(r.tenant, r.subject_id) for r in rows}
        with self.transaction():
            seqs = {tenant: self._log_change(tenant, "add",
                                             [r.subject_id for r in rows if r.tenant == tenant],
                                             now)
                    for tenant in sorted({r.tenant for r in rows})}
            self._executemany(
                "INSERT INTO subjects (tenant, subject_id, created_at, last_seen_at) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET last_seen_at = excluded.last_seen_at",
                [(t, s, now, now) for t, s in subjects],
            )
            self._executemany(
                f"INSERT INTO templates ({_TEMPLATE_COLUMNS}, change_seq) "  # noqa: S608 - constant column list
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.template_id, r.tenant, r.subject_id, r.model_id, r.dimension, r.dtype,
                     r.key_version, r.record, r.created_at, seqs[r.tenant])
                    for r in rows
                ],
            )

    def add_template_batch(self, batch: TemplateBatch) -> None:
        if not batch.template_ids:
            return
        now = time.time()
        subjects = dict.fromkeys(batch.subject_ids)
        with self.transaction():
            seq = self._log_change(batch.tenant, "add", list(subjects), now,
                                   templates=len(batch.template_ids))
            self._executemany(
                "INSERT INTO subjects (tenant, subject_id, created_at, last_seen_at) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET last_seen_at = excluded.last_seen_at",
                [(batch.tenant, s, now, now) for s in subjects],
            )
            fixed = (batch.tenant, batch.model_id, batch.dimension, batch.dtype)
            # In the caller's order, not sorted by id (7% faster here): a subject's templates
            # then lie together in the table, which a gallery loaded on two cores needs (each
            # process derives the keys of the subjects it meets: 1M scattered, 3 s more).
            self._executemany(
                f"INSERT INTO templates ({_TEMPLATE_COLUMNS}, change_seq) "  # noqa: S608 - constant column list
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (template_id, *fixed[:1], subject_id, *fixed[1:], batch.key_version, record,
                     batch.created_at, seq)
                    for template_id, subject_id, record in zip(
                        batch.template_ids, batch.subject_ids, batch.records, strict=True)],
            )

    def subject_templates(self, tenant: str, subject_id: str) -> list[TemplateRow]:
        return [
            _row(values)
            for values in self._fetchall(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates "  # noqa: S608 - constant column list
                "WHERE tenant = ? AND subject_id = ? ORDER BY created_at, template_id",
                (tenant, subject_id),
            )
        ]

    def subjects_templates(self, tenant: str, subject_ids: Sequence[str]) -> list[TemplateRow]:
        wanted = list(dict.fromkeys(subject_ids))
        rows: list[TemplateRow] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows.extend(_row(values) for values in self._fetchall(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates "  # noqa: S608 - placeholders only
                f"WHERE tenant = ? AND subject_id IN ({marks}) "
                "ORDER BY subject_id, created_at, template_id", (tenant, *chunk)))
        return rows

    def gallery(self, tenant: str | None, batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        # Keyset pagination on the primary key: no long-lived cursor holding the lock.
        last = ""
        # "+tenant": keep SQLite on the primary-key index (the tenant index plus a sort made
        # every page scan the whole tenant: quadratic over a large gallery).
        where = "template_id > ?" + ("" if tenant is None else " AND +tenant = ?")
        while True:
            params: tuple[Any, ...] = (last,) if tenant is None else (last, tenant)
            batch = [
                _row(values)
                for values in self._fetchall(
                    f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE {where} "  # noqa: S608 - constant
                    f"ORDER BY template_id LIMIT {int(batch_size)}",
                    params,
                )
            ]
            if not batch:
                return
            yield batch
            last = batch[-1].template_id

    def subjects(self, tenant: str) -> list[SubjectRow]:
        return [
            SubjectRow(t, s, float(c), float(last), int(n), bytes(inventory))
            for t, s, c, last, n, inventory in self._fetchall(
                "SELECT s.tenant, s.subject_id, s.created_at, s.last_seen_at, "
                "(SELECT COUNT(*) FROM templates t WHERE t.tenant = s.tenant "
                " AND t.subject_id = s.subject_id), s.inventory "
                "FROM subjects s WHERE s.tenant = ? ORDER BY s.subject_id",
                (tenant,),
            )
        ]

    def subject_exists(self, tenant: str, subject_id: str) -> bool:
        return bool(
            self._fetchall(
                "SELECT 1 FROM subjects WHERE tenant = ? AND subject_id = ?", (tenant, subject_id)
            )
        )

    def inventories(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        wanted = list(dict.fromkeys(subject_ids))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for subject, blob in self._fetchall(
                    f"SELECT subject_id, inventory FROM subjects WHERE tenant = ? "  # noqa: S608 - placeholders only
                    f"AND subject_id IN ({marks})", (tenant, *chunk)):
                found[str(subject)] = bytes(blob)
        return found

    def set_inventories(self, tenant: str, inventories: dict[str, bytes]) -> None:
        with self.transaction():
            self._executemany(
                "UPDATE subjects SET inventory = ? WHERE tenant = ? AND subject_id = ?",
                [(blob, tenant, subject) for subject, blob in inventories.items()])

    def touch_subject(self, tenant: str, subject_id: str, when: float) -> None:
        with self.transaction():
            self._execute(
                "UPDATE subjects SET last_seen_at = MAX(last_seen_at, ?) "
                "WHERE tenant = ? AND subject_id = ?",
                (when, tenant, subject_id),
            )

    def erase_subject(self, tenant: str, subject_id: str) -> list[str]:
        with self.transaction():
            ids = [
                str(r[0])
                for r in self._execute(
                    "SELECT template_id FROM templates WHERE tenant = ? AND subject_id = ?",
                    (tenant, subject_id),
                ).fetchall()
            ]
            # Templates go with the subject through ON DELETE CASCADE.
            cursor = self._execute(
                "DELETE FROM subjects WHERE tenant = ? AND subject_id = ?", (tenant, subject_id)
            )
            if ids or cursor.rowcount:
                self._log_change(tenant, "erase", [subject_id], time.time(), templates=len(ids))
            return ids

    # --- the change log --------------------------------------------------------------------------

    def _log_change(self, tenant: str, kind: str, subjects: Sequence[str], now: float, *,
                    templates: int | None = None) -> int:
        """Bump the tenant's head and log one change; call inside the write transaction."""
        seq = int(self._execute(
            "INSERT INTO change_heads (tenant, seq) VALUES (?, 1) "
            "ON CONFLICT (tenant) DO UPDATE SET seq = seq + 1 RETURNING seq", (tenant,),
        ).fetchone()[0])
        names = set(subjects)
        self._execute(
            "INSERT INTO changes (tenant, seq, kind, subject_id, templates, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (tenant, seq, kind, next(iter(names)) if len(names) == 1 else None,
             len(subjects) if templates is None else templates, now),
        )
        return seq

    def change_head(self, tenant: str) -> int:
        rows = self._fetchall("SELECT seq FROM change_heads WHERE tenant = ?", (tenant,))
        return int(rows[0][0]) if rows else 0

    def changes(self, tenant: str, after: int, upto: int) -> ChangeSummary:
        rows = self._fetchall(
            "SELECT kind, subject_id, templates FROM changes "
            "WHERE tenant = ? AND seq > ? AND seq <= ? ORDER BY seq", (tenant, after, upto))
        return ChangeSummary(
            tenant, after, upto,
            erased=tuple(str(s) for kind, s, _ in rows if kind == "erase"),
            added=sum(int(n) for kind, _, n in rows if kind == "add"),
        )

    def templates_added(self, tenant: str, after: int, upto: int,
                        batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        last_seq, last_id = after, None  # None: start just past the whole change `after`
        while True:
            rows = self._fetchall(
                f"SELECT {_TEMPLATE_COLUMNS}, change_seq FROM templates "  # noqa: S608 - constant
                "WHERE tenant = ? AND (change_seq > ? OR (change_seq = ? AND template_id > ?)) "
                "AND change_seq <= ? "
                f"ORDER BY change_seq, template_id LIMIT {int(batch_size)}",
                (tenant, last_seq, last_seq, last_id, upto),
            )
            if not rows:
                return
            yield [_row(values[:-1]) for values in rows]
            last_seq, last_id = int(rows[-1][-1]), str(rows[-1][0])

    def template_tuples_of_tenant(self, tenant: str, upto: int, batch_size: int = 10_000
                                  ) -> Iterator[list[tuple[Any, ...]]]:
        if self._group.in_transaction():
            yield from super().template_tuples_of_tenant(tenant, upto, batch_size)
            return
        # One statement read in pages: one consistent snapshot (WAL), no ORDER BY and no keyset
        # seek per page. A tenant holding most of the table is read in table order (through
        # the index, each row is a random seek: twice the time at 1M rows).
        try:
            db = self._reader()
            (mine,) = db.execute("SELECT count(*) FROM templates WHERE tenant = ?",
                                 (tenant,)).fetchone()
            (everyone,) = db.execute("SELECT count(*) FROM templates").fetchone()
            scan = "NOT INDEXED " if 2 * int(mine) >= int(everyone) else ""
            cursor = db.execute(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates {scan}"  # noqa: S608 - constant
                "WHERE tenant = ? AND change_seq <= ?", (tenant, upto))
            try:
                while rows := cursor.fetchmany(batch_size):
                    yield rows
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None

    def direct_read_source(self, tenant: str, at_least: int) -> DirectSource | None:
        # Only for a tenant holding most of the table: DirectReader reads rowid ranges of the
        # whole table, which would mostly be other tenants' rows otherwise.
        try:
            reader = self._reader()
            (mine,) = reader.execute("SELECT count(*) FROM templates WHERE tenant = ?",
                                     (tenant,)).fetchone()
            (everyone,) = reader.execute("SELECT count(*) FROM templates").fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(_describe_error("query", exc)) from None
        if int(mine) < at_least or 2 * int(mine) < int(everyone):
            return None
        return DirectSource("sqlite", str(self._path), int(mine))

    # --- shared counters -------------------------------------------------------------------------

    def counter_take(self, key: str, limit: int | None, window: float, cost: int,
                     now: float) -> float | None:
        # counter_totals keeps each key's sum of events, so that a budget (up to thousands of
        # events in its window) is checked by reading one row; every change to counter_events
        # below changes it in the same transaction.
        with self.transaction():
            # This key's expired events through its index; every key's through a sweep at most
            # once per SWEEP_SECONDS: `OR at <= ?` in every call scanned the whole table, and
            # with query budgets counted per verify the table holds an hour of traffic.
            self._drop_events("key = ? AND at <= ?", (key, now - window))
            if now - self._last_sweep >= SWEEP_SECONDS or now < self._last_sweep:
                self._drop_events("at <= ?", (now - MAX_COUNTER_WINDOW,))
                self._execute("DELETE FROM counter_totals WHERE total <= 0")
                self._last_sweep = now
            if limit is not None:
                # The events themselves are read only to say how long to wait.
                held = self._execute("SELECT total FROM counter_totals WHERE key = ?",
                                     (key,)).fetchone()
                if (int(held[0]) if held else 0) + cost > limit:
                    wait = window_wait(self._counter_events(key, now - window), limit, cost,
                                       window, now)
                    if wait is not None:
                        return wait
            self._execute("INSERT INTO counter_events (key, at, cost) VALUES (?, ?, ?)",
                          (key, now, cost))
            self._execute("INSERT INTO counter_totals (key, total) VALUES (?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET total = total + excluded.total",
                          (key, cost))
            return None

    def _drop_events(self, where: str, params: tuple[Any, ...]) -> None:
        """Delete the counter events matching ``where`` and take them off their keys' totals."""
        gone = self._execute(
            f"SELECT key, sum(cost) FROM counter_events WHERE {where} GROUP BY key",  # noqa: S608 - constant clauses
            params).fetchall()
        if gone:
            self._execute(f"DELETE FROM counter_events WHERE {where}", params)  # noqa: S608
            self._executemany("UPDATE counter_totals SET total = max(total - ?, 0) WHERE key = ?",
                              [(int(total), k) for k, total in gone])

    def counter_retry_after(self, key: str, limit: int, window: float,
                            now: float) -> float | None:
        # Committed counts, on the reading thread's own connection: a check before every
        # authentication and query must neither wait for the writer nor flush the open group
        # commit. The key's total less its events that have expired but are not yet deleted
        # (each take deletes them: a few at most); the events only to say how long to wait.
        ((held,),) = self._fetchall(
            "SELECT coalesce((SELECT total FROM counter_totals WHERE key = ?), 0) - "
            "coalesce((SELECT sum(cost) FROM counter_events WHERE key = ? AND at <= ?), 0)",
            (key, key, now - window))
        if int(held) + 1 <= limit:
            return None
        return window_wait(self._counter_events(key, now - window), limit, 1, window, now)

    def _counter_events(self, key: str, after: float) -> list[tuple[float, int]]:
        """``key``'s events later than ``after``, oldest first (inside a transaction, as the
        transaction sees them)."""
        return [(float(at), int(c)) for at, c in self._fetchall(
            "SELECT at, cost FROM counter_events WHERE key = ? AND at > ? ORDER BY at",
            (key, after))]

    def replace_records(self, rows: Sequence[TemplateRow]) -> int:
        with self.transaction():
            cursor = self._executemany(
                "UPDATE templates SET record = ?, key_version = ? WHERE template_id = ?",
                [(r.record, r.key_version, r.template_id) for r in rows],
            )
            return int(cursor.rowcount)

    def templates_below_version(
        self, version: int, after: str = "", limit: int = 1000
    ) -> list[TemplateRow]:
        return [
            _row(values)
            for values in self._fetchall(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates "  # noqa: S608 - constant column list
                "WHERE key_version < ? AND template_id > ? ORDER BY template_id LIMIT ?",
                (version, after, int(limit)),
            )
        ]

    def key_version_counts(self) -> dict[int, int]:
        return {
            int(version): int(count)
            for version, count in self._fetchall(
                "SELECT key_version, COUNT(*) FROM templates GROUP BY key_version"
            )
        }

    # --- data keys -------------------------------------------------------------------------------

    def load_data_keys(self) -> list[DataKeyInfo]:
        return [
            DataKeyInfo(int(v), bytes(w), float(c), int(n))
            for v, w, c, n in self._fetchall(
                "SELECT version, wrapped, created_at, encryptions FROM data_keys ORDER BY version"
            )
        ]

    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool:
        with self.transaction():
            cursor = self._execute(
                "INSERT INTO data_keys (version, wrapped, created_at, encryptions) "
                "VALUES (?, ?, ?, 0) ON CONFLICT (version) DO NOTHING",
                (version, wrapped, created_at),
            )
            return cursor.rowcount == 1

    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE data_keys SET encryptions = encryptions + ? "
                "WHERE version = ? AND encryptions + ? <= ?",
                (count, version, count, limit),
            )
            return cursor.rowcount == 1

    def replace_wrapped(self, version: int, wrapped: bytes) -> None:
        with self.transaction():
            self._execute("UPDATE data_keys SET wrapped = ? WHERE version = ?", (wrapped, version))

    # --- audit log ------------------------------------------------------------------------------

    def append_audit(self, build: Callable[[int, bytes], AuditRecord]) -> AuditRecord:
        try:
            with self.transaction():
                head = self._execute(
                    "SELECT seq, mac FROM audit_events ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, mac = (int(head[0]), bytes(head[1])) if head else (0, b"")
                record = build(seq + 1, mac)
                if record.seq != seq + 1 or record.prev_mac != mac:
                    raise Conflict("the audit event does not continue the chain")
                self._execute(
                    f"INSERT INTO audit_events ({_AUDIT_COLUMNS}) "  # noqa: S608 - constant columns
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.seq, record.event_id, record.occurred_at, record.principal,
                     record.role, record.action, record.tenant, record.subject_id,
                     json.dumps(list(record.template_ids)), record.outcome, record.request_id,
                     record.detail, record.prev_mac, record.mac),
                )
                return record
        except (StorageUnavailable, Conflict) as exc:
            raise AuditWriteFailed(f"the audit event could not be written: {exc}") from None

    def audit_events(
        self, *, after_seq: int = 0, tenant: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        clauses, params = ["seq > ?"], [after_seq]
        if tenant is not None:
            clauses.append("tenant = ?")
            params.append(tenant)  # type: ignore[arg-type]
        if since is not None:
            clauses.append("occurred_at >= ?")
            params.append(since)  # type: ignore[arg-type]
        remaining = limit
        while remaining is None or remaining > 0:
            page = 1000 if remaining is None else min(1000, remaining)
            rows = self._fetchall(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE {' AND '.join(clauses)} "  # noqa: S608
                f"ORDER BY seq LIMIT {page}",
                params,
            )
            if not rows:
                return
            for values in rows:
                yield _audit(values)
            params[0] = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    # --- principals ------------------------------------------------------------------------------

    def add_principal(self, row: PrincipalRow) -> None:
        with self.transaction():
            taken = self._execute("SELECT 1 FROM principals WHERE name = ?", (row.name,))
            if taken.fetchone():
                raise Conflict(f"a principal named {row.name!r} exists already")
            self._execute(
                f"INSERT INTO principals ({_PRINCIPAL_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.principal_id, row.name, row.role, row.tenant, row.key_id, row.key_hash,
                 row.created_at, row.revoked_at, row.mac),
            )

    def principal_by_key_id(self, key_id: str) -> PrincipalRow | None:
        rows = self._fetchall(
            f"SELECT {_PRINCIPAL_COLUMNS} FROM principals WHERE key_id = ?", (key_id,)  # noqa: S608
        )
        return _principal(rows[0]) if rows else None

    def principals(self) -> list[PrincipalRow]:
        return [
            _principal(values)
            for values in self._fetchall(
                f"SELECT {_PRINCIPAL_COLUMNS} FROM principals ORDER BY name"  # noqa: S608
            )
        ]

    def revoke_principal(self, name: str, when: float, mac: bytes = b"") -> bool:
        with self.transaction():
            cursor = self._execute(
                "UPDATE principals SET revoked_at = ?, mac = ? "
                "WHERE name = ? AND revoked_at IS NULL",
                (when, mac, name),
            )
            return cursor.rowcount == 1

    def set_principal_mac(self, principal_id: str, mac: bytes) -> bool:
        with self.transaction():
            cursor = self._execute("UPDATE principals SET mac = ? WHERE principal_id = ?",
                                   (mac, principal_id))
            return cursor.rowcount == 1

    # --- tenants and retention -------------------------------------------------------------------

    def set_retention(self, tenant: str, seconds: float | None) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO tenants (tenant, retention_seconds) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET retention_seconds = excluded.retention_seconds",
                (tenant, seconds),
            )

    def retention(self, tenant: str) -> float | None:
        rows = self._fetchall("SELECT retention_seconds FROM tenants WHERE tenant = ?", (tenant,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def tenants(self) -> list[str]:
        return [
            str(r[0])
            for r in self._fetchall(
                "SELECT tenant FROM subjects UNION SELECT tenant FROM tenants ORDER BY 1"
            )
        ]

    def inactive_subjects(self, tenant: str, before: float) -> list[str]:
        return [
            str(r[0])
            for r in self._fetchall(
                "SELECT subject_id FROM subjects WHERE tenant = ? AND last_seen_at < ? "
                "ORDER BY subject_id",
                (tenant, before),
            )
        ]

    # --- life cycle ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def describe(self) -> str:
        return f"sqlite:{self._path}"

    def close(self) -> None:
        with self._lock:
            self._group.close()
            self._closed = True
            with self._readers_lock:
                readers = list(self._readers)
            for reader in readers:
                try:
                    reader.db.close()
                except sqlite3.Error:
                    log.debug("SQLite close failed", exc_info=True)
            self._readers.clear()
            try:
                self._db.close()
            except sqlite3.Error:  # closing twice or after a failure is harmless
                log.debug("SQLite close failed", exc_info=True)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path.name}>"


def _audit(values: tuple[Any, ...]) -> AuditRecord:
    fields = list(values)
    fields[8] = tuple(json.loads(fields[8]))
    fields[12], fields[13] = bytes(fields[12]), bytes(fields[13])
    return AuditRecord(*fields)


def _principal(values: tuple[Any, ...]) -> PrincipalRow:
    fields = list(values)
    fields[5] = bytes(fields[5])
    fields[8] = bytes(fields[8] or b"")
    return PrincipalRow(*fields)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


def _describe_error(operation: str, exc: sqlite3.Error) -> str:
    # sqlite3 messages name tables and constraints, never bound values, so they are safe to show;
    # they help an operator tell "disk full" from "database is locked".
    return f"SQLite {operation} failed: {exc}"
