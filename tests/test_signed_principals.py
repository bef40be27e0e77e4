"""Attacks on the principal table by someone who can write the template store but holds no key.

Replayed on SQLite (anyone who can write the file), on the real PostgreSQL server (the tenant-scoped
application login calling the vault's own SECURITY DEFINER functions, and the table owner editing
rows) and on the file store. Each attack must end in a refused key whose refusal is audited.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from faceseal.access.apikeys import generate_api_key
from faceseal.access.principals import TAMPERED
from faceseal.audit.events import ANONYMOUS
from faceseal.errors import AccessDenied, AuthenticationFailed
from faceseal.storage.base import PrincipalRow
from faceseal.storage.postgres import PostgresStore
from faceseal.vault import Vault

from .conftest import make_vault, vault_keys
from .pg_support import PgTestDatabase

ALL_ROLES = "admin,auditor,enroller,identifier,verifier"
_COLUMNS = ("principal_id", "name", "role", "tenant", "key_id", "key_hash", "created_at",
            "revoked_at", "mac")


@dataclass
class Store:
    """Direct write access to one vault's principal table, bypassing the vault."""

    kind: str
    home: Path
    pg: PgTestDatabase | None = None
    tenant_login_url: str | None = None  # PostgreSQL: a login granted tenant "default" only

    def insert(self, row: PrincipalRow) -> None:
        if self.kind == "postgres":
            assert self.tenant_login_url is not None
            # The attack of the issue: the application's own function, as a tenant's login.
            with PostgresStore(self.tenant_login_url) as store:
                store.add_principal(row)
        elif self.kind == "sqlite":
            with sqlite3.connect(self.home / "templates.db") as conn:
                conn.execute(f"INSERT INTO principals ({', '.join(_COLUMNS)}) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", dataclasses.astuple(row))
        else:
            documents = self._files()
            documents.append(_file_entry(row))
            self._write_files(documents)

    def fetch(self, name: str) -> PrincipalRow:
        if self.kind == "postgres":
            with self._owner() as conn:
                values = conn.execute(sql.SQL("SELECT {} FROM faceseal.principals WHERE name = %s")
                                      .format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))),
                                      (name,)).fetchone()
        elif self.kind == "sqlite":
            with sqlite3.connect(self.home / "templates.db") as conn:
                values = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM principals "
                                      "WHERE name = ?", (name,)).fetchone()
        else:
            entry = next(p for p in self._files() if p["name"] == name)
            values = tuple(entry[c] for c in _COLUMNS)
            values = (*values[:5], base64.b64decode(values[5]), *values[6:8],
                      base64.b64decode(values[8]))
        assert values is not None
        return PrincipalRow(*(bytes(v) if isinstance(v, memoryview) else v for v in values))

    def put(self, row: PrincipalRow) -> None:
        """Overwrite every column of the row with this principal id (an edit, or a replay)."""
        if self.kind == "postgres":
            with self._owner() as conn:
                conn.execute(sql.SQL("UPDATE faceseal.principals SET ({}) = ({}) "
                                     "WHERE principal_id = %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
                    sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS))),
                    (*dataclasses.astuple(row), row.principal_id))
        elif self.kind == "sqlite":
            with sqlite3.connect(self.home / "templates.db") as conn:
                conn.execute(f"UPDATE principals SET ({', '.join(_COLUMNS)}) = "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE principal_id = ?",
                             (*dataclasses.astuple(row), row.principal_id))
        else:
            documents = [(_file_entry(row) if p["principal_id"] == row.principal_id else p)
                         for p in self._files()]
            self._write_files(documents)

    def _owner(self) -> Any:
        assert self.pg is not None
        return self.pg.admin()

    def _files(self) -> list[dict[str, Any]]:
        return list(json.loads((self.home / "templates" / "principals.json").read_bytes()))

    def _write_files(self, documents: list[dict[str, Any]]) -> None:
        (self.home / "templates" / "principals.json").write_text(json.dumps(documents))


def _file_entry(row: PrincipalRow) -> dict[str, Any]:
    return {"principal_id": row.principal_id, "name": row.name, "role": row.role,
            "tenant": row.tenant, "key_id": row.key_id,
            "key_hash": base64.b64encode(row.key_hash).decode(), "created_at": row.created_at,
            "revoked_at": row.revoked_at, "mac": base64.b64encode(row.mac).decode()}


@pytest.fixture(params=["sqlite", "postgres", "files"])
def attacked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Vault, Store]]:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    if request.param == "postgres":
        pg: PgTestDatabase = request.getfixturevalue("pg_schema")
        app_url = pg.store_url(pg.create_login("app"))
        tenant_url = pg.store_url(pg.create_login("tenant", tenants=["default"]))
        vault = make_vault(home, keys, store_url=app_url)
        store = Store("postgres", home, pg, tenant_url)
    elif request.param == "files":
        vault = make_vault(home, keys, store_url="files:templates")
        store = Store("files", home)
    else:
        vault = make_vault(home, keys)
        store = Store("sqlite", home)
    with vault:
        refusals(vault, "")  # makes the auditor while the test principal can still act
        yield vault, store


def forged_row(name: str, tenant: str | None, **changes: Any) -> tuple[PrincipalRow, str]:
    issued = generate_api_key()
    row = PrincipalRow(os.urandom(16).hex(), name, ALL_ROLES, tenant, issued.key_id,
                       issued.key_hash, time.time(), None, changes.pop("mac", b""))
    return dataclasses.replace(row, **changes), issued.reveal()


_AUDITORS: dict[Path, str] = {}


def refusals(vault: Vault, key_id: str) -> list[dict[str, Any]]:
    """The audited refusals of ``key_id``, read by an auditor of its own (the test principal's
    row may be the one under attack)."""
    if vault.home not in _AUDITORS:
        _AUDITORS[vault.home] = vault.add_principal("aud", ["auditor"]).api_key
    auditor = vault.as_key(_AUDITORS[vault.home])
    return [e for e in auditor.audit_tail(50) if e["outcome"] == "unauthenticated"
            and e["detail"].get("key_id") == key_id]


def assert_refused_as_tampered(vault: Vault, api_key: str, key_id: str) -> None:
    with pytest.raises(AuthenticationFailed):
        vault.as_key(api_key)
    found = refusals(vault, key_id)
    assert [e["detail"]["reason"] for e in found] == [TAMPERED]
    assert found[0]["principal"] == ANONYMOUS  # a forged row's name is not believed


def test_a_forged_principal_is_refused_and_the_refusal_audited(
        attacked: tuple[Vault, Store]) -> None:
    vault, store = attacked
    tenant = "default" if store.kind == "postgres" else None
    # No MAC, a random one, and one copied from a genuine principal's row: all refused.
    genuine = store.fetch("admin")
    for name, mac in (("mallory", b""), ("mallory2", os.urandom(36)),
                      ("mallory3", genuine.mac)):
        row, api_key = forged_row(name, tenant, mac=mac)
        store.insert(row)
        assert_refused_as_tampered(vault, api_key, row.key_id)
    listed = {p.name: p.verified for p in vault.principals()}
    assert listed["mallory"] is False
    assert listed["admin"] is True
    assert vault.audit_verify().ok  # the refusals are part of an intact chain


def test_a_forged_copy_of_a_genuine_row_with_the_attackers_hash_is_refused(
        attacked: tuple[Vault, Store]) -> None:
    vault, store = attacked
    worker = store.fetch("test-worker")
    issued = generate_api_key()
    # Same principal, attacker's key: key id and hash swapped in, the genuine MAC kept.
    store.put(dataclasses.replace(worker, key_id=issued.key_id, key_hash=issued.key_hash))
    assert_refused_as_tampered(vault, issued.reveal(), issued.key_id)


def test_edited_roles_or_scope_are_refused(attacked: tuple[Vault, Store]) -> None:
    vault, store = attacked
    door = vault.add_principal("door", ["verifier"], tenant="lobby")
    door_view = vault.as_key(door.api_key)
    row = store.fetch("door")
    store.put(dataclasses.replace(row, role=ALL_ROLES, tenant=None))
    with pytest.raises(AuthenticationFailed):
        door_view.subjects(tenant="other")  # the bound view re-checks its row on every call
    assert [e["detail"]["reason"] for e in refusals(vault, row.key_id)] == [TAMPERED]
    with pytest.raises(AuthenticationFailed):
        vault.as_key(door.api_key)
    store.put(row)  # the genuine row back: the key works again, with its own rights only
    restored = vault.as_key(door.api_key)
    with pytest.raises(AccessDenied):
        restored.subjects(tenant="lobby")


def test_a_revocation_cannot_be_undone_by_editing_or_replaying_the_row(
        attacked: tuple[Vault, Store]) -> None:
    vault, store = attacked
    door = vault.add_principal("door", ["verifier"], tenant="lobby")
    before = store.fetch("door")  # signed, not revoked: what an attacker saved earlier
    vault.revoke_principal("door")
    revoked = store.fetch("door")
    assert revoked.revoked_at is not None
    assert revoked.mac != before.mac
    # Editing revoked_at away breaks the MAC ...
    store.put(dataclasses.replace(revoked, revoked_at=None))
    with pytest.raises(AuthenticationFailed):
        vault.as_key(door.api_key)
    # ... and the saved pre-revocation row, whose MAC is genuine, meets the key side's record.
    store.put(before)
    with pytest.raises(AuthenticationFailed):
        vault.as_key(door.api_key)
    reasons = [e["detail"]["reason"] for e in refusals(vault, before.key_id)]
    assert reasons == [TAMPERED, "revoked key"]
    assert {p.name: p.active for p in vault.principals()}["door"] is False


def test_a_tenant_login_cannot_create_an_all_tenant_principal(tmp_path: Path,
                                                              pg_schema: PgTestDatabase) -> None:
    tenant_url = pg_schema.store_url(pg_schema.create_login("tenant", tenants=["default"]))
    with make_vault(tmp_path / "v", tmp_path / "k",
                    store_url=pg_schema.store_url(pg_schema.create_login("app"))):
        row, _ = forged_row("mallory", None)
        with PostgresStore(tenant_url) as store, pytest.raises(AccessDenied):
            store.add_principal(row)


def test_reopening_checks_the_rows_too(attacked: tuple[Vault, Store]) -> None:
    vault, store = attacked
    worker = store.fetch("test-worker")
    store.put(dataclasses.replace(worker, role=ALL_ROLES, tenant="elsewhere"))
    with pytest.raises(AuthenticationFailed):
        Vault.open(vault.home, api_key=vault_keys(vault.home).worker).close()
