"""The SQLite store: durable settings, versioned migrations, refusal of unknown schemas."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from unittest.mock import patch

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
                          "ALTER TABLE templates DROP COLUMN change_seq",
                          "ALTER TABLE subjects DROP COLUMN inventory"):
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


def test_a_write_waits_for_another_processs_writer_then_goes_ahead(tmp_path: Path) -> None:
    """Another process (a second `serve` worker, the CLI) holds the write lock: a write waits
    for it in short pauses and proceeds as soon as it is released; held past the wait, the write
    fails as an outage naming the lock, and the connection is usable afterwards."""
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None, timeout=0,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.2, other.execute, ("COMMIT",))
    released.start()
    started = time.monotonic()
    store.set_meta("waited", "yes")
    waited = time.monotonic() - started
    released.join()
    assert 0.15 < waited < 5  # it waited for the lock, and took it once free
    assert store.get_meta("waited") == "yes"
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000

    other.execute("BEGIN IMMEDIATE")
    try:
        with patch("faceseal.storage.sqlite.WRITE_WAIT_SECONDS", 0.1), \
                pytest.raises(StorageUnavailable, match="locked"):
            store.set_meta("waited", "no")
    finally:
        other.execute("COMMIT")
    store.set_meta("after", "yes")  # the connection is fine
    assert (store.get_meta("waited"), store.get_meta("after")) == ("yes", "yes")
    other.close()
    store.close()
