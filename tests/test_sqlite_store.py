"""The SQLite store: durable settings, versioned migrations, refusal of unknown schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from faceseal.errors import StorageUnavailable
from faceseal.storage import SQLiteStore
from faceseal.vault import Vault

from .conftest import make_vault, reopen_vault


def test_pragmas(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    pragmas = {name: store._db.execute(f"PRAGMA {name}").fetchone()[0]
               for name in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                       "secure_delete": 1}


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    assert store.schema_version() == 0
    assert store.migrate() == (0, SQLiteStore.SCHEMA_VERSION)
    assert store.migrate() == (SQLiteStore.SCHEMA_VERSION, SQLiteStore.SCHEMA_VERSION)


def test_older_schema_asks_for_migrate_and_migrate_fixes_it(vault_dirs: tuple[Path, Path]
                                                            ) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    with sqlite3.connect(home / "templates.db") as db:
        # Roll the file back to schema 1, as an older faceseal left it.
        db.execute("DELETE FROM schema_migrations WHERE version > 1")
        version_one = {"schema_migrations", "meta", "data_keys", "subjects", "templates"}
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'") if name not in version_one]
        for table in tables:
            db.execute(f"DROP TABLE {table}")
        for statement in ("DROP INDEX templates_by_change", "DROP INDEX templates_by_tenant",
                          "ALTER TABLE templates DROP COLUMN change_seq"):
            db.execute(statement)
    with pytest.raises(StorageUnavailable, match="faceseal migrate"):
        reopen_vault(home)
    with SQLiteStore(home / "templates.db") as store:
        store.migrate()
    reopen_vault(home).close()


def test_newer_schema_is_refused(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    with sqlite3.connect(home / "templates.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    with pytest.raises(StorageUnavailable, match="newer"):
        Vault.open(home)


def test_missing_database_is_refused(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    (home / "templates.db").unlink()
    with pytest.raises(StorageUnavailable):
        reopen_vault(home)
