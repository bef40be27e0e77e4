"""The minimum decryption version lives on the key side: lowering it in the store does nothing.

The attack of the issue, replayed as the application's own store login (SQLite file, PostgreSQL
application login): after a rotation and ``keys retire``, reset ``min_decrypt_version`` in the
store's meta and put a record sealed under the retired key back in place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from faceseal.audit.state import AUDIT_STATE_FILE
from faceseal.errors import IntegrityFailure
from faceseal.storage.base import TemplateStore
from faceseal.storage.postgres import PostgresStore
from faceseal.storage.sqlite import SQLiteStore

from .conftest import make_vault, random_encodings, reopen_vault
from .pg_support import PgTestDatabase


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str | None, str]:
    if request.param == "postgres":
        pg: PgTestDatabase = request.getfixturevalue("pg_schema")
        return pg.store_url(pg.create_login("app")), "postgres"
    return None, "sqlite"


def raw_store(home: Path, url: str | None) -> TemplateStore:
    """The store with the vault's own login and no key: what the attacker holds."""
    return PostgresStore(url) if url else SQLiteStore(home / "templates.db")


def test_a_lowered_minimum_does_not_bring_a_retired_key_back(
        tmp_path: Path, backend: tuple[str | None, str]) -> None:
    url, _ = backend
    home, keys = tmp_path / "v", tmp_path / "k"
    alice = random_encodings(1, seed=3)[0]
    options = {"store_url": url} if url else {}
    with make_vault(home, keys, **options) as vault:
        vault.enroll("alice", [alice])
        with raw_store(home, url) as store:
            old = store.subject_templates("default", "alice")
        assert [r.key_version for r in old] == [1]
        vault.rotate_data_keys()
        assert vault.retire_data_keys(2).min_decrypt_version == 2
    with raw_store(home, url) as store:  # the replay
        store.set_meta("min_decrypt_version", "1")
        assert store.replace_records(old) == 1
    with reopen_vault(home) as vault:
        assert vault.key_status().min_decrypt_version == 2
        with pytest.raises(IntegrityFailure, match="failed its integrity check"):
            vault.verify("alice", alice)
        assert [d["template_id"] for d in vault.check().damaged] == [old[0].template_id]
    # The test can fail: without the key side's copy the replayed record opens again.
    with sqlite3.connect(keys / AUDIT_STATE_FILE) as conn:
        conn.execute("DELETE FROM settings WHERE key = 'min_decrypt_version'")
    conn.close()
    with reopen_vault(home) as vault:
        assert vault.verify("alice", alice).match


def test_retire_keeps_the_key_side_and_the_store_in_step(tmp_path: Path) -> None:
    home, keys = tmp_path / "v", tmp_path / "k"
    with make_vault(home, keys) as vault:
        vault.enroll("bob", [random_encodings(1, seed=4)[0]])
        vault.rotate_data_keys()
        vault.retire_data_keys(2)
        assert vault.retire_data_keys(1).min_decrypt_version == 2  # never lowered
    with sqlite3.connect(keys / AUDIT_STATE_FILE) as conn:
        assert conn.execute("SELECT value FROM settings WHERE key = 'min_decrypt_version'"
                            ).fetchone() == ("2",)
    conn.close()
    with SQLiteStore(home / "templates.db") as store:
        assert store.get_meta("min_decrypt_version") == "2"
