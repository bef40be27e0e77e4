"""What a PostgreSQL login can do to everyone else, replayed against the real server.

The attacks of the issue, as the application's own logins: a held audit-head lock, a bogus newest
data key, a forged audit event, writes for another tenant. Each must now fail fast, be ignored,
or be reported -- without taking the vault down for the other tenants.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors

from faceseal.errors import AccessDenied, AuditWriteFailed
from faceseal.storage.postgres import PostgresStore
from faceseal.vault import Vault

from .conftest import invoke_cli, make_vault, random_encodings, reopen_vault, vault_keys
from .http_server import served_vault
from .pg_support import PgTestDatabase
from .test_signed_principals import forged_row

S = "faceseal"
LOCK_TIMEOUT_MS = 300


@pytest.fixture
def pg(pg_schema: PgTestDatabase) -> PgTestDatabase:
    return pg_schema


def app_url(pg: PgTestDatabase, **params: str) -> str:
    return pg.store_url(pg.create_login("app"), **params)


@pytest.fixture
def held_head(pg: PgTestDatabase) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A tenant's login that locks the audit chain's head and sits on it."""
    login = pg.create_login("holder", tenants=["default"])
    conn = psycopg.connect(pg.store_url(login).split("?")[0], autocommit=False)
    yield conn
    conn.close()


def hold(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(f"SELECT * FROM {S}.fs_audit_head()").fetchall()  # FOR UPDATE, kept open


def test_a_held_audit_head_makes_calls_fail_fast_not_hang(
        tmp_path: Path, pg: PgTestDatabase,
        held_head: psycopg.Connection[tuple[object, ...]]) -> None:
    url = app_url(pg, lock_timeout_ms=str(LOCK_TIMEOUT_MS))
    home = tmp_path / "v"
    with make_vault(home, tmp_path / "k", store_url=url) as vault:
        vault.enroll("alice", [random_encodings(1, seed=2)[0]])
        hold(held_head)
        started = time.monotonic()
        with pytest.raises(AuditWriteFailed, match="lock"):
            vault.subjects()
        elapsed = time.monotonic() - started
        assert elapsed < 5 * LOCK_TIMEOUT_MS / 1000 + 2, elapsed
        done = invoke_cli("subjects", env={"FACESEAL_HOME": str(home),
                                           "FACESEAL_API_KEY": vault_keys(home).worker})
        assert done.returncode == 5
        assert "lock" in done.stderr
        held_head.rollback()  # the holder lets go: the vault works again at once
        assert [s.subject_id for s in vault.subjects()] == ["alice"]
        assert vault.audit_verify().ok


def test_the_http_service_answers_503_while_the_head_is_held(
        tmp_path: Path, pg: PgTestDatabase,
        held_head: psycopg.Connection[tuple[object, ...]]) -> None:
    url = app_url(pg, lock_timeout_ms=str(LOCK_TIMEOUT_MS))
    with served_vault(tmp_path, vault_options={"store_url": url}) as served:
        client = served.http()
        headers = {"Authorization": f"Bearer {served.keys['enroller']}"}
        assert client.get("/v1/tenants/acme/subjects", headers=headers).status_code == 200
        hold(held_head)
        started = time.monotonic()
        response = client.get("/v1/tenants/acme/subjects", headers=headers)
        elapsed = time.monotonic() - started
        held_head.rollback()
        assert response.status_code == 503, response.text
        assert elapsed < 10, elapsed
        assert client.get("/v1/tenants/acme/subjects", headers=headers).status_code == 200


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_bogus_newest_data_key_does_not_take_the_vault_down(
        tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    home = tmp_path / "v"
    alice, bob = random_encodings(2, seed=8)
    url = None
    if backend == "postgres":
        pg: PgTestDatabase = request.getfixturevalue("pg_schema")
        url = app_url(pg)
    with make_vault(home, tmp_path / "k", **({"store_url": url} if url else {})) as vault:
        vault.enroll("alice", [alice])
    # The deployment's own (all-tenant) login plants a "version 99" that nothing can unwrap.
    if url is not None:
        with PostgresStore(url) as store:
            assert store.insert_data_key(99, os.urandom(72), time.time())
    else:
        with sqlite3.connect(home / "templates.db") as conn:
            conn.execute("INSERT INTO data_keys VALUES (99, ?, ?, 0)", (os.urandom(72), 1.0))
        conn.close()
    with reopen_vault(home) as vault:  # opening used to fail: "keyring does not match"
        assert vault.verify("alice", alice).match
        vault.enroll("bob", [bob])  # sealed under the vault's own newest key, not 99
        assert vault.verify("bob", bob).match
        status = vault.key_status()
        assert [k.version for k in status.data_keys] == [1]
        assert vault.rotate_kek().data_keys_rewrapped == 1
        assert vault.rotate_data_keys().records_reencrypted == 2
        assert vault.check().ok


def test_a_tenant_login_cannot_insert_data_keys(pg: PgTestDatabase) -> None:
    tenant = pg.create_login("tenant", tenants=["default"])
    with PostgresStore(pg.store_url(tenant)) as store, pytest.raises(AccessDenied):
        store.insert_data_key(99, os.urandom(72), time.time())


def test_a_forged_event_is_reported_and_the_events_after_it_still_checked(
        tmp_path: Path, pg: PgTestDatabase) -> None:
    home = tmp_path / "v"
    tenant = pg.create_login("tenant", tenants=["default"])
    with make_vault(home, tmp_path / "k", store_url=app_url(pg)) as vault:
        vault.enroll("alice", [random_encodings(1, seed=4)[0]])
        with psycopg.connect(pg.store_url(tenant).split("?")[0], autocommit=False) as conn:
            seq, mac = conn.execute(f"SELECT * FROM {S}.fs_audit_head()").fetchone()  # type: ignore[misc]
            conn.execute(
                f"SELECT {S}.fs_audit_append(%s, %s, %s, 'admin', 'admin', 'principals.add', "
                "'default', NULL, '{}'::text[], 'ok', 'forged', '{}', %s, %s)",
                (seq + 1, "f" * 32, time.time(), mac, os.urandom(36)))
            conn.commit()
        forged_seq = seq + 1
        for _ in range(3):
            vault.subjects()  # genuine events chained after the forged one
        report = vault.audit_verify()
        assert not report.ok
        assert report.first_broken_seq == forged_seq
        assert [(b.seq, "fails its MAC" in b.problem) for b in report.breaks] == [
            (forged_seq, True)]
        assert report.verified_events == report.events - 1
        assert report.head_seq >= forged_seq + 3
        tail = {e["seq"]: e["verified"] for e in vault.audit_tail(10)}
        assert tail[forged_seq] is False
        assert all(ok for seq_, ok in tail.items() if seq_ != forged_seq)
        done = invoke_cli("audit", "tail", env={"FACESEAL_HOME": str(home),
                                                "FACESEAL_API_KEY": vault_keys(home).worker})
        assert "FAILS ITS MAC" in done.stdout


def test_a_tenant_login_cannot_write_into_another_tenants_history(pg: PgTestDatabase) -> None:
    tenant = pg.create_login("tenant", tenants=["default"])
    with psycopg.connect(pg.store_url(tenant).split("?")[0], autocommit=False) as conn:
        seq, mac = conn.execute(f"SELECT * FROM {S}.fs_audit_head()").fetchone()  # type: ignore[misc]
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute(
                f"SELECT {S}.fs_audit_append(%s, 'e', 1.0, 'p', 'r', 'a', 'other', NULL, "
                "'{}'::text[], 'ok', 'r', '', %s, %s)", (seq + 1, mac, os.urandom(36)))
        conn.rollback()
    row, _ = forged_row("mallory", "other")
    with PostgresStore(pg.store_url(tenant)) as store, pytest.raises(AccessDenied):
        store.add_principal(row)


def test_timeouts_are_validated_in_the_store_url(tmp_path: Path) -> None:
    from faceseal.errors import InvalidInput
    from faceseal.storage.postgres_url import parse_pg_url

    assert parse_pg_url("postgresql://u@h/d").lock_timeout_ms == 5000
    assert parse_pg_url("postgresql://u@h/d?statement_timeout_ms=100").statement_timeout_ms == 100
    for bad in ("0", "-5", "abc", "99999999999"):
        with pytest.raises(InvalidInput, match="milliseconds"):
            parse_pg_url(f"postgresql://u@h/d?lock_timeout_ms={bad}")
    del tmp_path


def test_vault_keeps_serving_other_operations_between_lock_waits(
        tmp_path: Path, pg: PgTestDatabase) -> None:
    """The timeouts do not get in the way of ordinary work (a bulk enrolment, identify)."""
    with make_vault(tmp_path / "v", tmp_path / "k",
                    store_url=app_url(pg, lock_timeout_ms="1000")) as vault:
        encodings = random_encodings(300, seed=5)
        vault.enroll_many([f"s{i}" for i in range(300)], encodings)
        assert vault.identify(encodings[7]).best.subject_id == "s7"  # type: ignore[union-attr]
        assert isinstance(vault, Vault)
