"""Turning a test vault back into what the release before signed principals left on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg

from faceseal.audit.state import AUDIT_STATE_FILE


def roll_back_key_side(keys: Path) -> None:
    """The audit state file as it was: no revocations, no settings (no signed configuration, no
    minimum decryption version, no integrity marker)."""
    with sqlite3.connect(keys / AUDIT_STATE_FILE) as conn:
        conn.execute("DROP TABLE revocations")
        conn.execute("DROP TABLE settings")
    conn.close()


def roll_back_to_unsigned(home: Path, keys: Path, *, pg_admin_url: str | None = None,
                          schema: str = "faceseal") -> None:
    """Unsigned principal rows and no subject inventories in the store (SQLite and file
    stores: the previous schema too; PostgreSQL: the current schema, rows unsigned, as `migrate
    --admin-url` leaves them before the vault signs them) and the key side as it was."""
    config = json.loads((home / "vault.json").read_bytes())
    store_url: str = config["store_url"]
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(home / store_url.partition(":")[2]) as conn:
            conn.execute("ALTER TABLE principals DROP COLUMN mac")
            conn.execute("ALTER TABLE subjects DROP COLUMN inventory")
            conn.execute("DROP TABLE counter_totals")  # migration 6 came later still
            conn.execute("DELETE FROM schema_migrations WHERE version IN (5, 6)")
        conn.close()
    elif store_url.startswith("files:"):
        root = home / store_url.partition(":")[2]
        principals = json.loads((root / "principals.json").read_bytes())
        for entry in principals:
            entry.pop("mac", None)
        (root / "principals.json").write_text(json.dumps(principals))
        for path in (root / "tenants").glob("*/*.json"):
            document = json.loads(path.read_bytes())
            if document.pop("inventory", None) is not None:
                path.write_text(json.dumps(document))
        (root / "store.json").write_text(json.dumps({"format": "faceseal-files",
                                                     "schema_version": 1}))
    else:
        assert pg_admin_url is not None
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}".principals SET mac = \'\'::bytea')
    roll_back_key_side(keys)
