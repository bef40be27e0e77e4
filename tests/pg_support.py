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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:  # fail, never skip
        pytest.fail(f"PostgreSQL is not reachable at {server_url()} (set {PG_URL_ENV}; start it "
                    f"with pg_ctlcluster): {exc}")
    return server_url()


@pytest.fixture
def pg_db(pg_server: str) -> Iterator[PgTestDatabase]:
    """An empty database of its own, and a role prefix of its own."""
    suffix = os.urandom(5).hex()
    database = PgTestDatabase(name=f"fs_test_{suffix}", prefix=f"fst_{suffix}")
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
    try:
        yield database
    finally:
        _drop(database.name, database.prefix)


@pytest.fixture
def pg_schema(pg_db: PgTestDatabase) -> PgTestDatabase:
    """``pg_db`` with the faceseal schema migrated by the administrator."""
    pg_db.migrate()
    return pg_db


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
        import pwd  # noqa: PLC0415 - POSIX only, needed only as root

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
