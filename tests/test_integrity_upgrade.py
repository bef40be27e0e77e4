"""`faceseal migrate` signs a vault made before principals and configuration were signed.

Each store is rolled back to what the previous release left (tests/legacy_vaults.py), then
upgraded through the CLI by an admin; afterwards the untouched vault works as before and every
integrity check of issue 12 holds.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from faceseal.errors import AuthenticationFailed, IntegrityFailure, NotFound, StorageUnavailable
from faceseal.vault import Vault

from .conftest import invoke_cli, make_vault, random_encodings, reopen_vault, vault_keys
from .legacy_vaults import roll_back_to_unsigned
from .pg_support import PgTestDatabase
from .test_signed_principals import Store, forged_row


@pytest.fixture(params=["sqlite", "files", "postgres"])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Store]:
    """A vault with a few principals, one revoked, rolled back to unsigned rows."""
    home, keys = tmp_path / "vault", tmp_path / "keys"
    pg: PgTestDatabase | None = None
    options: dict[str, object] = {}
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_schema")
        options["store_url"] = pg.store_url(pg.create_login("app"))
    elif request.param == "files":
        options["store_url"] = "files:templates"
    with make_vault(home, keys, **options) as vault:
        vault.enroll("alice", [random_encodings(1, seed=1)[0]])
        door = vault.add_principal("door", ["verifier"], tenant="default").api_key
        vault.add_principal("gone", ["verifier"])
        vault.revoke_principal("gone")
    DOOR_KEYS[home] = door
    roll_back_to_unsigned(home, keys, pg_admin_url=pg.admin_url() if pg else None)
    tenant_url = pg.store_url(pg.create_login("tenant", tenants=["default"])) if pg else None
    return home, Store(request.param, home, pg, tenant_url)


DOOR_KEYS: dict[Path, str] = {}


def migrate(home: Path, api_key: str | None) -> tuple[int, dict[str, object], str]:
    env = {"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": api_key or ""}
    done = invoke_cli("migrate", "--json", env=env)
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def test_a_legacy_vault_is_signed_by_an_admin_and_then_holds(legacy: tuple[Path, Store]) -> None:
    home, _ = legacy
    keys = vault_keys(home)
    # Before: every key is refused with a message saying what to do.
    with pytest.raises((AuthenticationFailed, StorageUnavailable), match="faceseal migrate"):
        Vault.open(home, api_key=keys.worker).close()
    status, _, stderr = migrate(home, None)
    assert status == 3
    assert "faceseal migrate" in stderr
    status, _, stderr = migrate(home, DOOR_KEYS[home])  # a verifier: not enough
    assert status == 3
    assert "admin scoped to every tenant" in stderr

    status, document, stderr = migrate(home, keys.admin)
    assert status == 0, stderr
    integrity = document["integrity"]
    assert isinstance(integrity, dict)
    assert integrity["principals_signed"] == ["admin", "door", "gone", "test-worker"]
    assert integrity["principals_refused"] == []

    with reopen_vault(home) as vault:
        assert vault.verify("alice", random_encodings(1, seed=1)[0]).match
        door = vault.as_key(DOOR_KEYS[home])
        assert door.principal is not None
        with pytest.raises(NotFound):
            vault.as_key(keys.admin).revoke_principal("gone")  # still revoked
        assert {p.name: p.active for p in vault.principals()}["gone"] is False
        assert vault.audit_verify().ok
        upgrade = [e for e in vault.audit_tail(50) if e["action"] == "integrity.upgrade"]
        assert [e["principal"] for e in upgrade] == ["admin"]
    # Once signed, a second run changes nothing and needs no key.
    status, document, _ = migrate(home, None)
    assert (status, document["integrity"]) == (0, None)


def test_after_the_upgrade_forged_rows_and_edits_are_refused(legacy: tuple[Path, Store]) -> None:
    home, store = legacy
    assert migrate(home, vault_keys(home).admin)[0] == 0
    row, api_key = forged_row("mallory", "default" if store.kind == "postgres" else None)
    store.insert(row)  # unsigned, like the legacy rows were
    gone = store.fetch("gone")
    store.put(dataclasses.replace(gone, revoked_at=None))
    with reopen_vault(home) as vault, pytest.raises(AuthenticationFailed):
        vault.as_key(api_key)
    # Running migrate again never signs a row the store gained since the upgrade.
    status, document, _ = migrate(home, vault_keys(home).admin)
    assert (status, document["integrity"]) == (0, None)
    with reopen_vault(home) as vault:
        with pytest.raises(AuthenticationFailed):
            vault.as_key(api_key)
        assert {p.name: p.verified for p in vault.principals()}["mallory"] is False
    config = json.loads((home / "vault.json").read_bytes())
    (home / "vault.json").write_text(json.dumps({**config, "thresholds": {"dlib-resnet-v1": 9}}))
    with pytest.raises(IntegrityFailure, match="thresholds"):
        reopen_vault(home)


def test_the_upgrade_signs_tenant_policies_set_before(tmp_path: Path) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    probe = random_encodings(1, seed=3)[0]
    with make_vault(home, keys) as vault:
        vault.enroll("alice", [probe])
        vault.as_key(vault_keys(home).admin).set_tenant_policy(
            "default", disclosure_level="decision", thresholds={"dlib-resnet-v1": 0.4})
    roll_back_to_unsigned(home, keys)
    with sqlite3.connect(home / "templates.db") as conn:  # as the previous release stored it
        (text,) = conn.execute("SELECT value FROM meta WHERE key = 'tenant_policy:default'"
                               ).fetchone()
        unsigned = {k: v for k, v in json.loads(text).items() if k != "mac"}
        conn.execute("UPDATE meta SET value = ? WHERE key = 'tenant_policy:default'",
                     (json.dumps(unsigned),))
    conn.close()
    assert migrate(home, vault_keys(home).admin)[0] == 0
    with reopen_vault(home) as vault:
        result = vault.verify("alice", probe)
        assert (result.match, result.threshold) == (True, 0.4)  # the signed policy is in force
        assert vault.tenant_policy("default").disclosure == "decision"
