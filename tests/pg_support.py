"""PostgreSQL for tests: every test gets its own database and roles (random names), dropped after.

The server is the one at ``$FACESEAL_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), reached as a superuser to create and drop the
throwaway databases and roles. Tests fail -- never skip -- when it is unreachable.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from faceseal.storage.pg_common import connect
from faceseal.storage.postgres_admin import grant_login, migrate_schema
from faceseal.storage.postgres_url import parse_pg_url

PG_URL_ENV = "FACESEAL_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def _with_path(url: str, database: str, user: str | None = None, **params: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if user is None:
        user = parts.username
    if user:
        netloc = f"{user}@{netloc}"
    query = urlencode(params, quote_via=quote)
    return urlunsplit((parts.scheme, netloc, f"/{database}", query, ""))


@dataclass
class PgTestDatabase:
    """One throwaway database; every role whose name starts with ``prefix`` is dropped after."""

    name: str
    prefix: str
    schema: str = "faceseal"
    logins: list[str] = field(default_factory=list)

    def admin_url(self, **params: str) -> str:
        """The superuser's URL to this database."""
        return _with_path(server_url(), self.name, **params)

    def store_url(self, user: str, **params: str) -> str:
        """A store URL for login ``user`` (schema and role prefix of this test)."""
        return _with_path(server_url(), self.name, user, schema=self.schema, roles=self.prefix,
                          **params)

    def superuser_store_url(self, **params: str) -> str:
        return self.store_url(urlsplit(server_url()).username or "postgres",
                              allow_superuser="true", **params)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url(), autocommit=True)

    def connect_as(self, user: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(_with_path(server_url(), self.name, user), autocommit=True)

    def migrate(self) -> None:
        location = parse_pg_url(self.admin_url(schema=self.schema, roles=self.prefix))
        with connect(location) as conn:
            migrate_schema(conn, location)

    def create_login(self, name: str, *, tenants: Sequence[str] | None = None,
                     group: str = "app", grant: bool = True) -> str:
        """A LOGIN role ``<prefix>_login_<name>``, granted ``tenants`` (None: every tenant)."""
        role = f"{self.prefix}_login_{name}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            if grant:
                location = parse_pg_url(self.admin_url(schema=self.schema, roles=self.prefix))
                grant_login(conn, location, role, tenants, group=group)  # type: ignore[arg-type]
        self.logins.append(role)
        return role


def _drop(name: str, prefix: str) -> None:
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY length(rolname) DESC",
            (prefix + "%",)).fetchall()]
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


class DatabasePool:
    """Makes each test's database (and, for migrated ones, its roles) ahead of time in a
    background thread, and drops them behind, so the server's latency overlaps the tests.

    Every database still belongs to exactly one test, under random names, and is dropped with
    its roles after that test (at the latest when the session ends).
    """

    AHEAD: ClassVar[dict[str, int]] = {"empty": 1, "migrated": 3}
    WORKERS = 3

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: dict[str, deque[PgTestDatabase]] = {k: deque() for k in self.AHEAD}
        self._wanted: dict[str, int] = dict.fromkeys(self.AHEAD, 0)
        self._drops: deque[PgTestDatabase] = deque()
        self._error: BaseException | None = None
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"pg-test-pool-{i}", daemon=True)
                         for i in range(self.WORKERS)]
        self._making: dict[str, int] = dict.fromkeys(self.AHEAD, 0)
        for thread in self._threads:
            thread.start()

    def take(self, kind: str) -> PgTestDatabase:
        with self._cond:
            self._wanted[kind] += 1
            self._cond.notify_all()
            while not self._ready[kind] and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._wanted[kind] -= 1
            return self._ready[kind].popleft()

    def give_back(self, database: PgTestDatabase) -> None:
        with self._cond:
            self._drops.append(database)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            for queue in self._ready.values():
                self._drops.extend(queue)
                queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=300)

    def _next_kind(self) -> str | None:
        if self._stopping:
            return None
        for kind in ("migrated", "empty"):  # serve waiting tests first, then fill ahead
            if self._wanted[kind] > len(self._ready[kind]) + self._making[kind]:
                return kind
        for kind, ahead in self.AHEAD.items():
            if len(self._ready[kind]) + self._making[kind] < ahead + self._wanted[kind]:
                return kind
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._drops and self._next_kind() is None and not self._stopping:
                    self._cond.wait()
                if self._drops:
                    victim: PgTestDatabase | None = self._drops.popleft()
                    kind = None
                else:
                    victim, kind = None, self._next_kind()
                    if kind is None:
                        return  # stopping and nothing left to drop
                    self._making[kind] += 1
            try:
                if victim is not None:
                    _drop(victim.name, victim.prefix)
                    continue
                made = _create(migrated=kind == "migrated")
            except BaseException as exc:  # reported to the waiting test
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._making[kind] -= 1  # type: ignore[index]
                # Made while the session was ending: nobody will take it, so drop it.
                queue = self._drops if self._stopping else self._ready[kind]  # type: ignore[index]
                queue.append(made)
                self._cond.notify_all()


def _create(*, migrated: bool) -> PgTestDatabase:
    suffix = os.urandom(5).hex()
    database = PgTestDatabase(name=f"fs_test_{suffix}", prefix=f"fst_{suffix}")
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
    if migrated:
        try:
            database.migrate()
        except BaseException:
            _drop(database.name, database.prefix)
            raise
    return database


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:  # fail, never skip
        pytest.fail(f"PostgreSQL is not reachable at {server_url()} (set {PG_URL_ENV}; start it "
                    f"with pg_ctlcluster): {exc}")
    return server_url()


@pytest.fixture(scope="session")
def pg_pool(pg_server: str) -> Iterator[DatabasePool]:
    pool = DatabasePool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def pg_db(pg_pool: DatabasePool) -> Iterator[PgTestDatabase]:
    """An empty database of its own, and a role prefix of its own; dropped after the test."""
    database = pg_pool.take("empty")
    try:
        yield database
    finally:
        pg_pool.give_back(database)


@pytest.fixture
def pg_schema(pg_pool: DatabasePool) -> Iterator[PgTestDatabase]:
    """A database of its own with the faceseal schema (and its roles) made by the admin."""
    database = pg_pool.take("migrated")
    try:
        yield database
    finally:
        pg_pool.give_back(database)


@pytest.fixture
def pg_app_url(pg_schema: PgTestDatabase) -> str:
    """A store URL for a plain login granted every tenant."""
    return pg_schema.store_url(pg_schema.create_login("app"))


def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if found is None:
        pytest.fail(f"{name} not found (install postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_cluster_url() -> Iterator[str]:
    """A PostgreSQL cluster of the test's own, on a free port, started with ``fsync=off``.

    It never touches the shared server's settings. As root, initdb and the server run as the
    ``postgres`` user. The URL connects as that cluster's superuser (allowed explicitly).
    """
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="faceseal-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run([*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w",
                    "-o", f"-p {port} -c fsync=off -c listen_addresses=127.0.0.1 -k {base}",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?allow_superuser=true"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)
