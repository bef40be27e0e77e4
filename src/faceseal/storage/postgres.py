"""The production template store: PostgreSQL, where the database itself enforces access.

The application's login holds no privilege on any table. Everything this class does is a call to
a ``SECURITY DEFINER`` function of the faceseal schema (see ``storage/sql/postgres_0001.sql``):
the functions run as the NOLOGIN owner role with a pinned ``search_path``, and row-level
security, FORCEd on the owner too, limits every row they touch to the tenants granted to the
*login* (``session_user``). A bug in faceseal, or a stolen application credential, therefore
cannot read another tenant's templates, read the tables directly, or rewrite the audit log.

Bulk paths never issue one query per row:

* :meth:`PostgresStore.add_templates` sends large batches with binary ``COPY`` into a session
  temp table, then the caller's own query aggregates the staged rows into arrays handed to one
  ``fs_enrol`` call (the SECURITY DEFINER function never reads a relation the caller controls);
  small batches go straight to ``fs_enrol`` as array parameters.
* :meth:`PostgresStore.gallery` streams pages of ``fs_gallery`` with binary ``COPY ... TO
  STDOUT``, keyset-paginated on the template id.

On connecting the store refuses (:class:`~faceseal.errors.StorageMisconfigured`) a server running
with ``fsync=off`` or ``full_page_writes=off``, a session with ``synchronous_commit=off``, a
superuser or BYPASSRLS login, and a schema whose tables lost their row-level security, unless the
store URL explicitly allows it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from faceseal.errors import (
    AccessDenied,
    AuditWriteFailed,
    Conflict,
    InvalidInput,
    StorageMisconfigured,
    StorageUnavailable,
)
from faceseal.keys.datakeys import DataKeyInfo
from faceseal.storage.base import (
    AuditRecord,
    ChangeListener,
    ChangeSummary,
    PrincipalRow,
    SubjectRow,
    TemplateRow,
    TemplateStore,
)
from faceseal.storage.group_commit import BatchSteps, GroupCommit
from faceseal.storage.pg_common import connect, map_error
from faceseal.storage.postgres_admin import LATEST_VERSION, grant_login, migrate_schema
from faceseal.storage.postgres_url import PgLocation, parse_pg_url

log = logging.getLogger(__name__)

#: Reader connections kept open between reads (more are opened under load, then closed).
MAX_IDLE_READERS = 32

#: Batches of at least this many rows go through binary COPY; smaller ones as array parameters.
COPY_THRESHOLD = 256
#: Rows staged and handed to one ``fs_enrol`` call at a time (bounds server memory).
COPY_CHUNK = 20_000
_AUDIT_PAGE = 1000

_TEMPLATE_TYPES = ["text", "text", "text", "text", "int4", "text", "int4", "bytea", "float8"]
_STAGING_COLUMNS = ("template_id, tenant, subject_id, model_id, dimension, dtype, key_version, "
                    "record, created_at")
_HARDENED_TABLES = ("subjects", "templates", "tenants", "audit_events")
_PRIVATE_TABLES = ("templates", "subjects", "data_keys", "principals", "meta", "tenant_grants",
                   "audit_events", "audit_head", "key_usage", "tenants")


class PostgresStore(TemplateStore):
    """Template store in a PostgreSQL schema, used only through SECURITY DEFINER functions."""

    SCHEMA_VERSION = LATEST_VERSION

    def __init__(self, location: PgLocation | str, *, create: bool = False) -> None:
        del create  # the database must exist; the schema is made by migrate()
        self._loc = location if isinstance(location, PgLocation) else parse_pg_url(location)
        self._schema = sql.Identifier(self._loc.schema)
        self._lock = threading.RLock()
        self._staging_ready = False
        self._closed = False
        self._conn = self._open_connection()
        self._group = GroupCommit(self._lock, BatchSteps(
            begin=self._begin_batch,
            savepoint=lambda: self._step("SAVEPOINT member"),
            release=lambda: self._step("RELEASE SAVEPOINT member"),
            rollback_to=lambda: self._step("ROLLBACK TO SAVEPOINT member"),
            commit=lambda: self._step("COMMIT", check=True),
            rollback=lambda: self._step("ROLLBACK"),
        ))
        # Reads outside a transaction use connections of their own (committed data only, and
        # never queued behind a batch); at most MAX_IDLE_READERS are kept between reads.
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()

    # --- connection ------------------------------------------------------------------------------

    def _open_connection(self, *, check: bool = True) -> psycopg.Connection[Any]:
        conn = connect(self._loc)
        try:
            # Every statement of this session, hence every faceseal transaction, waits for a
            # lock and runs for a bounded time: another session holding the audit head (or any
            # row we need) makes our calls fail fast instead of stalling every tenant. A
            # faceseal session left idle inside a transaction is cut too.
            conn.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                "set_config('statement_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (f"{self._loc.lock_timeout_ms}ms", f"{self._loc.statement_timeout_ms}ms",
                 f"{max(self._loc.statement_timeout_ms, 60_000)}ms"))
            if check:
                self._check_session(conn)
        except BaseException:
            conn.close()
            raise
        self._staging_ready = False
        return conn

    def _check_session(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse a server or login on which the store's guarantees would not hold."""
        try:
            fsync, sync_commit, full_pages = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
                "current_setting('full_page_writes')").fetchone() or ("on", "on", "on")
            superuser, bypass = conn.execute(
                "SELECT rolsuper, rolbypassrls FROM pg_catalog.pg_roles "
                "WHERE rolname = session_user").fetchone() or (False, False)
        except psycopg.Error as exc:
            raise map_error(exc, "the session check", self._loc) from None
        unsafe = [f"{name}=off" for name, value in (("fsync", fsync),
                                                    ("full_page_writes", full_pages),
                                                    ("synchronous_commit", sync_commit))
                  if value == "off"]
        if unsafe:
            if not self._loc.allow_unsafe_durability:
                raise StorageMisconfigured(
                    f"PostgreSQL at {self._loc.describe()} runs with {', '.join(unsafe)}: a crash "
                    "could lose committed enrolments, erasures and audit events. Fix the server "
                    "(or the role's settings), or add allow_unsafe_durability=true to the store "
                    "URL to accept that risk"
                )
            log.warning("PostgreSQL runs with %s; accepted by allow_unsafe_durability",
                        ", ".join(unsafe))
        if superuser or bypass:
            if not self._loc.allow_superuser:
                raise StorageMisconfigured(
                    f"the login of {self._loc.describe()} is a superuser or bypasses row-level "
                    "security, so the database could not separate tenants or protect the tables "
                    "from it; connect as a plain login granted with `faceseal db grant-app`, or "
                    "add allow_superuser=true to the store URL (development only)"
                )
            log.warning("the PostgreSQL login bypasses row-level security (allow_superuser)")
        else:
            self._check_hardening(conn)

    def _check_hardening(self, conn: psycopg.Connection[Any]) -> None:
        """If the schema exists, its tables must still be locked down as migrations left them."""
        try:
            rows = conn.execute(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, r.rolname, "
                "r.rolcanlogin OR r.rolsuper OR r.rolbypassrls, "
                "has_table_privilege(session_user, c.oid, "
                "'SELECT,INSERT,UPDATE,DELETE,TRUNCATE') "
                "FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_catalog.pg_roles r ON r.oid = c.relowner "
                "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname = ANY(%s)",
                (self._loc.schema, list(_PRIVATE_TABLES)),
            ).fetchall()
        except psycopg.Error as exc:
            raise map_error(exc, "the schema check", self._loc) from None
        problems = []
        for name, rls, forced, owner, owner_unsafe, reachable in rows:
            if owner != self._loc.roles.owner or owner_unsafe:
                problems.append(f"{name} is not owned by the NOLOGIN role {self._loc.roles.owner}")
            if name in _HARDENED_TABLES and not (rls and forced):
                problems.append(f"{name} lost its forced row-level security")
            if reachable and name != "audit_events":
                problems.append(f"the login holds privileges on table {name}")
            elif reachable and name == "audit_events" and _audit_writable(conn, self._loc):
                problems.append("the login may change or empty the audit table")
        if problems:
            raise StorageMisconfigured(
                f"the faceseal schema at {self._loc.describe()} is not locked down: "
                + "; ".join(problems)
                + f" (the application's login must be a plain login attached with `faceseal db "
                f"grant-app`, not the administrator or a member of {self._loc.roles.owner})"
            )

    def _live(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StorageUnavailable("the PostgreSQL store is closed")
        if self._conn.closed or self._conn.broken:
            if self._group.in_transaction():
                raise StorageUnavailable("the PostgreSQL connection was lost mid-transaction")
            log.warning("PostgreSQL connection lost; reconnecting")
            self._conn = self._open_connection()
        return self._conn

    def _step(self, statement: str, *, begin: bool = False, check: bool = False) -> None:
        """One statement of a group-commit batch (see faceseal.storage.group_commit)."""
        conn = self._live() if begin else self._conn
        if check and conn.info.transaction_status != TransactionStatus.INTRANS:
            # The transaction failed under us: no member of the batch may be reported done.
            raise StorageUnavailable("the PostgreSQL transaction was aborted")
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise map_error(exc, "commit", self._loc) from None

    def _begin_batch(self) -> None:
        """BEGIN, then lock the audit head first. A batch mixes several operations' lock
        acquisitions (budget counters, subjects, the head) in whatever order its members come;
        two processes' batches could then each hold what the other waits for. Taking the head
        first -- every operation's event needs it anyway -- orders every batch behind it, so
        batches of different replicas never deadlock (SQLite's BEGIN IMMEDIATE does the same)."""
        self._step("BEGIN", begin=True)
        try:
            self._conn.execute(self._q("SELECT * FROM {s}.fs_audit_head()"))
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")
            raise map_error(exc, "locking the audit head", self._loc) from None

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one read: the transaction's own inside one, else a reader."""
        if self._group.in_transaction():
            with self._lock:
                yield self._live()
            return
        if self._closed:
            raise StorageUnavailable("the PostgreSQL store is closed")
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None or conn.closed or conn.broken:
            conn = self._open_connection(check=False)  # the writer's session was checked
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._readers_lock:
            if len(self._readers) < MAX_IDLE_READERS and not self._closed:
                self._readers.append(conn)
                return
        conn.close()

    def _q(self, template: str) -> sql.Composed:
        """A statement with ``{s}`` replaced by the quoted schema name."""
        return sql.SQL(template).format(s=self._schema)

    def _rows(self, query: sql.SQL | sql.Composed, params: Sequence[Any] = (),
              operation: str = "query") -> list[tuple[Any, ...]]:
        with self._lock:
            if not self._group.in_transaction():
                self._group.flush()  # a write or read outside a batch sees no open batch
            return self._fetch(self._live(), query, params, operation)

    def _fetch(self, conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed,
               params: Sequence[Any], operation: str) -> list[tuple[Any, ...]]:
        try:
            with conn.cursor(binary=True) as cursor:
                cursor.execute(query, params)
                return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise map_error(exc, operation, self._loc) from None

    def _read(self, query: sql.SQL | sql.Composed, params: Sequence[Any] = (),
              operation: str = "query") -> list[tuple[Any, ...]]:
        """A read-only statement, on a reader connection outside transactions."""
        with self._reading() as conn:
            return self._fetch(conn, query, params, operation)

    def _read_value(self, query: sql.SQL | sql.Composed, params: Sequence[Any] = ()) -> Any:
        rows = self._read(query, params)
        return rows[0][0] if rows else None

    def _value(self, query: sql.SQL | sql.Composed, params: Sequence[Any] = (),
               operation: str = "query") -> Any:
        rows = self._rows(query, params, operation)
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit; concurrent ones share a commit (group commit)."""
        with self._group.transaction():
            yield

    # --- schema ----------------------------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            exists = self._value(sql.SQL("SELECT to_regprocedure(%s) IS NOT NULL"),
                                 (f'"{self._loc.schema}".fs_schema_version()',))
            return int(self._value(self._q("SELECT {s}.fs_schema_version()")) or 0) if exists \
                else 0
        except AccessDenied:
            raise AccessDenied(
                f"the PostgreSQL login of {self._loc.describe()} may not use the faceseal "
                f"schema {self._loc.schema}; grant it with `faceseal db grant-app ROLE`"
            ) from None

    def migrate(self) -> tuple[int, int]:
        """Apply pending migrations with this store's own login (which must be privileged).

        Applications normally run as an unprivileged login and leave this to ``faceseal
        migrate --admin-url``; when the schema is current this changes nothing and needs no
        privilege. A login that has just created the schema is granted every tenant.
        """
        with self._lock:
            if self._group.in_transaction():
                raise InvalidInput("migrations cannot run inside a transaction")
            self._group.flush()
            before = self.schema_version()
            if before == self.SCHEMA_VERSION:
                return before, before
            try:
                result = migrate_schema(self._live(), self._loc)
            except AccessDenied as exc:
                raise AccessDenied(
                    f"{exc}; the store's login cannot create the schema: run `faceseal migrate "
                    "--admin-url URL` (or init with --admin-url) as a database administrator"
                ) from None
            user = str(self._value(sql.SQL("SELECT session_user")))
            if not self._value(self._q("SELECT {s}.fs_scope_all()")) and not self._value(
                    self._q("SELECT cardinality({s}.fs_scope_tenants()) > 0")):
                grant_login(self._live(), self._loc, user, None,
                            allow_superuser=self._loc.allow_superuser)
            return result

    # --- metadata --------------------------------------------------------------------------------

    def _serialise_lease(self, key: str) -> None:
        # Held to the end of the caller's transaction (lease_take runs inside one).
        self._rows(sql.SQL("SELECT pg_advisory_xact_lock(hashtext(%s))"),
                   (f"faceseal-{key}",), "locking a lease")

    def get_meta(self, key: str) -> str | None:
        value = self._read_value(self._q("SELECT {s}.fs_get_meta(%s)"), (key,))
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        self._rows(self._q("SELECT {s}.fs_set_meta(%s, %s)"), (key, value), "writing metadata")

    # --- templates and subjects ------------------------------------------------------------------

    def add_templates(self, rows: Sequence[TemplateRow]) -> None:
        if not rows:
            return
        now = time.time()
        with self.transaction():
            for start in range(0, len(rows), COPY_CHUNK):
                chunk = rows[start:start + COPY_CHUNK]
                if len(chunk) < COPY_THRESHOLD:
                    self._enrol_arrays(chunk, now)
                else:
                    self._enrol_copy(chunk, now)

    def _enrol_arrays(self, rows: Sequence[TemplateRow], now: float) -> None:
        self._rows(
            self._q("SELECT {s}.fs_enrol(%s::text[], %s::text[], %s::text[], %s::text[], "
                    "%s::int4[], %s::text[], %s::int4[], %s::bytea[], %s::float8[], %s)"),
            ([r.template_id for r in rows], [r.tenant for r in rows],
             [r.subject_id for r in rows], [r.model_id for r in rows],
             [r.dimension for r in rows], [r.dtype for r in rows],
             [r.key_version for r in rows], [r.record for r in rows],
             [r.created_at for r in rows], now),
            "enrolment",
        )

    def _enrol_copy(self, rows: Sequence[TemplateRow], now: float) -> None:
        conn = self._live()
        try:
            with conn.cursor() as cursor:
                if not self._staging_ready:
                    cursor.execute(
                        "CREATE TEMPORARY TABLE IF NOT EXISTS fs_enrol_staging ("
                        "template_id text, tenant text, subject_id text, model_id text, "
                        "dimension int4, dtype text, key_version int4, record bytea, "
                        "created_at float8) ON COMMIT DELETE ROWS")
                    self._staging_ready = True
                with cursor.copy(f"COPY pg_temp.fs_enrol_staging ({_STAGING_COLUMNS}) "
                                 "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_TEMPLATE_TYPES)
                    for r in rows:
                        copy.write_row((r.template_id, r.tenant, r.subject_id, r.model_id,
                                        r.dimension, r.dtype, r.key_version, r.record,
                                        r.created_at))
                # The caller's own query reads its staging table and hands plain arrays over.
                cursor.execute(self._q(
                    "SELECT {s}.fs_enrol(array_agg(template_id), array_agg(tenant), "
                    "array_agg(subject_id), array_agg(model_id), array_agg(dimension), "
                    "array_agg(dtype), array_agg(key_version), array_agg(record), "
                    "array_agg(created_at), %s) FROM pg_temp.fs_enrol_staging"), (now,))
                cursor.execute("TRUNCATE pg_temp.fs_enrol_staging")
        except psycopg.Error as exc:
            raise map_error(exc, "bulk enrolment", self._loc) from None

    def subject_templates(self, tenant: str, subject_id: str) -> list[TemplateRow]:
        return [TemplateRow(*values) for values in self._read(
            self._q("SELECT * FROM {s}.fs_subject_templates(%s, %s)"), (tenant, subject_id))]

    def gallery(self, tenant: str | None, batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size must be a positive integer")
        after = ""
        while True:
            batch = self._gallery_page(tenant, after, batch_size)
            if not batch:
                return
            yield batch
            after = batch[-1].template_id

    def _gallery_page(self, tenant: str | None, after: str, limit: int) -> list[TemplateRow]:
        statement = sql.SQL(
            "COPY (SELECT * FROM {s}.fs_gallery({tenant}, {after}, {limit})) "
            "TO STDOUT (FORMAT BINARY)").format(
                s=self._schema, tenant=sql.Literal(tenant), after=sql.Literal(after),
                limit=sql.Literal(limit))
        with self._reading() as conn:
            try:
                with conn.cursor() as cursor, cursor.copy(statement) as copy:
                    copy.set_types(_TEMPLATE_TYPES)
                    return [TemplateRow(*values) for values in copy.rows()]
            except psycopg.Error as exc:
                raise map_error(exc, "gallery streaming", self._loc) from None

    def subjects(self, tenant: str) -> list[SubjectRow]:
        return [SubjectRow(t, s, float(c), float(last), int(n), bytes(inv or b""))
                for t, s, c, last, n, inv in self._rows(
                    self._q("SELECT * FROM {s}.fs_subjects(%s)"), (tenant,))]

    def inventories(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, bytes]:
        return {str(subject): bytes(blob or b"") for subject, blob in self._read(
            self._q("SELECT * FROM {s}.fs_inventories(%s, %s::text[])"),
            (tenant, list(dict.fromkeys(subject_ids))))}

    def set_inventories(self, tenant: str, inventories: dict[str, bytes]) -> None:
        if inventories:
            self._rows(self._q("SELECT {s}.fs_set_inventories(%s, %s::text[], %s::bytea[])"),
                       (tenant, list(inventories), list(inventories.values())),
                       "writing subject inventories")

    def subject_exists(self, tenant: str, subject_id: str) -> bool:
        return bool(self._read_value(self._q("SELECT {s}.fs_subject_exists(%s, %s)"),
                                (tenant, subject_id)))

    def touch_subject(self, tenant: str, subject_id: str, when: float) -> None:
        self._rows(self._q("SELECT {s}.fs_touch_subject(%s, %s, %s)"),
                   (tenant, subject_id, when), "touching a subject")

    def erase_subject(self, tenant: str, subject_id: str) -> list[str]:
        ids = self._value(self._q("SELECT {s}.fs_erase_subject(%s, %s)"),
                          (tenant, subject_id), "erasure")
        return [str(i) for i in ids or []]

    # --- the change log --------------------------------------------------------------------------

    def change_head(self, tenant: str) -> int:
        return int(self._read_value(self._q("SELECT {s}.fs_change_head(%s)"), (tenant,)) or 0)

    def changes(self, tenant: str, after: int, upto: int) -> ChangeSummary:
        rows = self._read(self._q("SELECT * FROM {s}.fs_changes(%s, %s, %s)"),
                          (tenant, after, upto))
        return ChangeSummary(
            tenant, after, upto,
            erased=tuple(str(s) for kind, s, _ in rows if kind == "erase"),
            added=sum(int(n) for kind, _, n in rows if kind == "add"),
        )

    def templates_added(self, tenant: str, after: int, upto: int,
                        batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size must be a positive integer")
        last_seq, last_id = after, None  # None: start just past the whole change `after`
        while True:
            statement = sql.SQL(
                "COPY (SELECT * FROM {s}.fs_templates_added({tenant}, {seq}, {id}, {upto}, "
                "{limit})) TO STDOUT (FORMAT BINARY)").format(
                    s=self._schema, tenant=sql.Literal(tenant), seq=sql.Literal(last_seq),
                    id=sql.Literal(last_id), upto=sql.Literal(upto),
                    limit=sql.Literal(batch_size))
            with self._reading() as conn:
                try:
                    with conn.cursor() as cursor, cursor.copy(statement) as copy:
                        copy.set_types([*_TEMPLATE_TYPES, "int8"])
                        page = list(copy.rows())
                except psycopg.Error as exc:
                    raise map_error(exc, "change streaming", self._loc) from None
            if not page:
                return
            yield [TemplateRow(*values[:-1]) for values in page]
            last_seq, last_id = int(page[-1][-1]), str(page[-1][0])

    def changes_channel(self) -> str:
        """The NOTIFY channel on which every committed change of this schema is announced."""
        return str(self._value(self._q("SELECT {s}.fs_changes_channel()")))

    def change_listener(self) -> ChangeListener:
        return _NotifyListener(self._loc, self.changes_channel())

    # --- shared counters -------------------------------------------------------------------------

    def counter_take(self, key: str, limit: int | None, window: float, cost: int,
                     now: float) -> float | None:
        with self.transaction():  # one statement, but it joins a batch (see group_commit)
            wait = self._value(self._q("SELECT {s}.fs_counter_take(%s, %s, %s, %s, %s)"),
                               (key, limit, float(window), cost, now), "counting")
        return None if wait is None else float(wait)

    def counter_retry_after(self, key: str, limit: int, window: float,
                            now: float) -> float | None:
        # Committed counts on a reader connection: a check before every authentication must
        # neither queue behind the writer nor commit its open batch early.
        wait = self._read_value(self._q("SELECT {s}.fs_counter_retry_after(%s, %s, %s, %s)"),
                                (key, limit, float(window), now))
        return None if wait is None else float(wait)

    def replace_records(self, rows: Sequence[TemplateRow]) -> int:
        if not rows:
            return 0
        return int(self._value(
            self._q("SELECT {s}.fs_replace_records(%s::text[], %s::bytea[], %s::int4[])"),
            ([r.template_id for r in rows], [r.record for r in rows],
             [r.key_version for r in rows]), "re-encryption") or 0)

    def key_version_counts(self) -> dict[int, int]:
        return {int(v): int(n) for v, n in self._rows(
            self._q("SELECT * FROM {s}.fs_key_version_counts()"))}

    # --- data keys -------------------------------------------------------------------------------

    def load_data_keys(self) -> list[DataKeyInfo]:
        return [DataKeyInfo(int(v), bytes(w), float(c), int(n)) for v, w, c, n in self._rows(
            self._q("SELECT * FROM {s}.fs_load_data_keys()"))]

    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool:
        return bool(self._value(self._q("SELECT {s}.fs_insert_data_key(%s, %s, %s)"),
                                (version, wrapped, created_at), "storing a data key"))

    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool:
        return bool(self._value(self._q("SELECT {s}.fs_reserve_encryptions(%s, %s, %s)"),
                                (version, count, limit), "counting encryptions"))

    def replace_wrapped(self, version: int, wrapped: bytes) -> None:
        self._rows(self._q("SELECT {s}.fs_replace_wrapped(%s, %s)"), (version, wrapped),
                   "rewrapping a data key")

    # --- audit log -------------------------------------------------------------------------------

    def append_audit(self, build: Callable[[int, bytes], AuditRecord]) -> AuditRecord:
        try:
            with self.transaction():
                head = self._rows(self._q("SELECT * FROM {s}.fs_audit_head()"))
                seq, mac = (int(head[0][0]), bytes(head[0][1])) if head else (0, b"")
                record = build(seq + 1, mac)
                self._rows(
                    self._q("SELECT {s}.fs_audit_append(%s, %s, %s, %s, %s, %s, %s, %s, "
                            "%s::text[], %s, %s, %s, %s, %s)"),
                    (record.seq, record.event_id, record.occurred_at, record.principal,
                     record.role, record.action, record.tenant, record.subject_id,
                     list(record.template_ids), record.outcome, record.request_id,
                     record.detail, record.prev_mac, record.mac),
                    "appending an audit event",
                )
                return record
        except (StorageUnavailable, AccessDenied, Conflict, InvalidInput) as exc:
            raise AuditWriteFailed(f"the audit event could not be written: {exc}") from None

    def audit_events(
        self, *, after_seq: int = 0, tenant: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        last, remaining = after_seq, limit
        while remaining is None or remaining > 0:
            page = _AUDIT_PAGE if remaining is None else min(_AUDIT_PAGE, remaining)
            rows = self._rows(self._q("SELECT * FROM {s}.fs_audit_events(%s, %s, %s, %s)"),
                              (last, tenant, since, page), "reading the audit log")
            if not rows:
                return
            for values in rows:
                fields = list(values)
                fields[8] = tuple(fields[8] or ())
                fields[12], fields[13] = bytes(fields[12]), bytes(fields[13])
                yield AuditRecord(*fields)
            last = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    # --- principals ------------------------------------------------------------------------------

    def add_principal(self, row: PrincipalRow) -> None:
        try:
            self._rows(self._q("SELECT {s}.fs_add_principal(%s, %s, %s, %s, %s, %s, %s, %s, "
                               "%s)"),
                       (row.principal_id, row.name, row.role, row.tenant, row.key_id,
                        row.key_hash, row.created_at, row.revoked_at, row.mac),
                       "adding a principal")
        except Conflict:
            raise Conflict(f"a principal named {row.name!r} exists already") from None

    def principal_by_key_id(self, key_id: str) -> PrincipalRow | None:
        rows = self._read(self._q("SELECT * FROM {s}.fs_principal_by_key_id(%s)"), (key_id,))
        return _principal(rows[0]) if rows else None

    def principals(self) -> list[PrincipalRow]:
        return [_principal(values) for values in self._rows(
            self._q("SELECT * FROM {s}.fs_principals()"))]

    def revoke_principal(self, name: str, when: float, mac: bytes = b"") -> bool:
        return bool(self._value(self._q("SELECT {s}.fs_revoke_principal(%s, %s, %s)"),
                                (name, when, mac), "revoking a principal"))

    def set_principal_mac(self, principal_id: str, mac: bytes) -> bool:
        return bool(self._value(self._q("SELECT {s}.fs_set_principal_mac(%s, %s)"),
                                (principal_id, mac), "signing a principal"))

    # --- tenants and retention -------------------------------------------------------------------

    def set_retention(self, tenant: str, seconds: float | None) -> None:
        self._rows(self._q("SELECT {s}.fs_set_retention(%s, %s::float8)"), (tenant, seconds),
                   "setting retention")

    def retention(self, tenant: str) -> float | None:
        value = self._value(self._q("SELECT {s}.fs_retention(%s)"), (tenant,))
        return None if value is None else float(value)

    def tenants(self) -> list[str]:
        return [str(r[0]) for r in self._rows(self._q("SELECT * FROM {s}.fs_tenants()"))]

    def inactive_subjects(self, tenant: str, before: float) -> list[str]:
        return [str(r[0]) for r in self._rows(
            self._q("SELECT * FROM {s}.fs_inactive_subjects(%s, %s)"), (tenant, before))]

    # --- life cycle ------------------------------------------------------------------------------

    @property
    def location(self) -> PgLocation:
        return self._loc

    def describe(self) -> str:
        return self._loc.describe()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._group.close()
            except Exception:  # the batch's members get the error; closing goes on
                log.debug("committing the last batch failed", exc_info=True)
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for reader in readers:
                try:
                    reader.close()
                except psycopg.Error:
                    log.debug("PostgreSQL close failed", exc_info=True)
            try:
                self._conn.close()
            except psycopg.Error:  # closing a broken connection is harmless
                log.debug("PostgreSQL close failed", exc_info=True)

    def __repr__(self) -> str:
        return f"<PostgresStore {self._loc.describe()}>"

    def __reduce__(self) -> Any:
        raise TypeError("a PostgresStore cannot be pickled")


def _audit_writable(conn: psycopg.Connection[Any], location: PgLocation) -> bool:
    table = f'"{location.schema}".audit_events'
    return bool(conn.execute(
        "SELECT has_table_privilege(session_user, %s, 'INSERT,UPDATE,DELETE,TRUNCATE')",
        (table,)).fetchone()[0])  # type: ignore[index]


def _principal(values: Sequence[Any]) -> PrincipalRow:
    fields = list(values)
    fields[5] = bytes(fields[5])
    fields[8] = bytes(fields[8] or b"")
    return PrincipalRow(*fields)


class _NotifyListener(ChangeListener):
    """LISTEN on the schema's change channel over a connection of its own. The payload is empty:
    a notification only says "look"; the follower then reads each loaded tenant's head. A lost
    connection degrades to polling (the timeout) and is reopened on the next wait."""

    def __init__(self, location: PgLocation, channel: str) -> None:
        super().__init__()
        self._location = location
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = connect(self._location)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._conn = conn
        return self._conn

    def wait(self, timeout: float) -> bool:
        """(Called from one follower thread only; it also owns the connection.)"""
        if self._closed.is_set():
            self._drop()
            return False
        try:
            conn = self._connection()
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass
        except (psycopg.Error, StorageUnavailable) as exc:
            log.info("change notifications unavailable (%s); polling", type(exc).__name__)
            self._drop()
            self._closed.wait(timeout)
        if self._closed.is_set():
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing the LISTEN connection failed", exc_info=True)

    def close(self) -> None:
        """Ask the waiting thread to stop; it closes the connection (within one timeout)."""
        super().close()
