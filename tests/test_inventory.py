"""Authenticated inventories: templates deleted, added or moved behind the vault's back are
reported by ``check`` (exit 5) and refused by ``verify``, on SQLite and on PostgreSQL (the table
owner editing rows, and the application login calling the erase function directly)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceseal.errors import IntegrityFailure, NotFound
from faceseal.storage.postgres import PostgresStore
from faceseal.vault import Vault

from .conftest import invoke_cli, make_vault, random_encodings, vault_keys
from .pg_support import PgTestDatabase

ALICE, BOB, CAROL = random_encodings(3, seed=21)


@dataclass
class Raw:
    """SQL straight on the store's tables (the table owner on PostgreSQL)."""

    home: Path
    pg: PgTestDatabase | None
    app_url: str | None

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        if self.pg is None:
            with sqlite3.connect(self.home / "templates.db") as conn:
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute(statement, params)
            conn.close()
        else:
            with self.pg.admin() as conn:
                conn.execute(statement.replace("templates", "faceseal.templates")
                             .replace("subjects", "faceseal.subjects")
                             .replace("?", "%s"), params)


@pytest.fixture(params=["sqlite", "postgres"])
def enrolled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Vault, Raw]]:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    pg: PgTestDatabase | None = None
    url = None
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_schema")
        url = pg.store_url(pg.create_login("app"))
    with make_vault(home, keys, **({"store_url": url} if url else {})) as vault:
        vault.enroll("alice", [ALICE, ALICE + 0.01])
        vault.enroll("alice", [ALICE - 0.01])  # a second enrolment extends the inventory
        vault.enroll_many(["bob", "carol"], np.stack([BOB, CAROL]))
        assert vault.check().ok
        yield vault, Raw(home, pg, url)


def cli_check(vault: Vault) -> tuple[int, str]:
    done = invoke_cli("check", env={"FACESEAL_HOME": str(vault.home),
                                    "FACESEAL_API_KEY": vault_keys(vault.home).worker})
    return done.returncode, done.stdout


def test_an_untouched_vault_checks_clean(enrolled: tuple[Vault, Raw]) -> None:
    vault, _ = enrolled
    assert cli_check(vault)[0] == 0
    assert vault.verify("alice", ALICE).match


def test_a_deleted_template_is_reported_and_refused(enrolled: tuple[Vault, Raw]) -> None:
    vault, raw = enrolled
    victim = vault.verify("alice", ALICE + 0.01).template_id
    raw.run("DELETE FROM templates WHERE template_id = ?", (victim,))
    result = vault.check()
    assert result.inventory_mismatches == [{"tenant": "default", "subject_id": "alice",
                                            "inventory_templates": 3, "stored_templates": 2}]
    status, out = cli_check(vault)
    assert status == 5
    assert "inventory mismatch: default/alice (signed 3 template(s), stored 2)" in out
    with pytest.raises(IntegrityFailure, match="do not match its authenticated inventory"):
        vault.verify("alice", ALICE)
    assert vault.verify("bob", BOB).match  # other subjects are unaffected


def test_every_template_deleted_is_reported(enrolled: tuple[Vault, Raw]) -> None:
    vault, raw = enrolled
    raw.run("DELETE FROM templates WHERE subject_id = ?", ("alice",))
    assert [m["stored_templates"] for m in vault.check().inventory_mismatches] == [0]
    with pytest.raises(IntegrityFailure):
        vault.verify("alice", ALICE)


def test_an_added_or_moved_template_is_reported(enrolled: tuple[Vault, Raw]) -> None:
    vault, raw = enrolled
    bob_template = vault.verify("bob", BOB).template_id
    raw.run("UPDATE templates SET subject_id = ? WHERE template_id = ?", ("alice", bob_template))
    raw.run("INSERT INTO templates (template_id, tenant, subject_id, model_id, dimension, "
            "dtype, key_version, record, created_at) SELECT ?, tenant, subject_id, model_id, "
            "dimension, dtype, key_version, record, created_at FROM templates "
            "WHERE template_id = ?",
            (os.urandom(16).hex(), vault.verify("carol", CAROL).template_id))
    result = vault.check()
    assert {m["subject_id"] for m in result.inventory_mismatches} == {"alice", "bob", "carol"}
    assert not result.ok
    for subject in ("alice", "bob", "carol"):
        with pytest.raises(IntegrityFailure):
            vault.verify(subject, BOB)


def test_a_subject_deleted_behind_the_vaults_back_is_reported(
        enrolled: tuple[Vault, Raw]) -> None:
    vault, raw = enrolled
    if raw.app_url is not None:
        # As the application's own login: the erase function, called without the vault.
        with PostgresStore(raw.app_url) as store:
            assert store.erase_subject("default", "bob")
    else:
        raw.run("DELETE FROM subjects WHERE subject_id = ?", ("bob",))
    result = vault.check()
    assert result.orphan_subject_keys == 1
    assert cli_check(vault)[0] == 5
    with pytest.raises(NotFound):
        vault.verify("bob", BOB)
    vault.erase("bob")  # the operator finishes the job: the key goes, the vault is clean
    assert vault.check().ok


def test_a_tally_is_the_xor_of_each_templates_prf() -> None:
    """tally() builds the shared part of the PRF input once and folds integers; it must give
    exactly the digest of folding _item() one template at a time, and zero for an unknown
    key version (as _item gives)."""
    from faceseal.audit.chain import AuditKey
    from faceseal.audit.integrity import RowAuthenticator
    from faceseal.crypto.secret import SecretBytes
    from faceseal.vault.inventory import DIGEST_BYTES, InventorySigner, Tally

    auth = RowAuthenticator({v: AuditKey(SecretBytes(os.urandom(32)), v, os.urandom(16))
                             for v in (1, 2)})
    signer = InventorySigner(auth)
    ids = [os.urandom(16).hex() for _ in range(7)] + ["not-hex \u00e9"]
    for version in (1, 2, 9):
        folded = bytes(DIGEST_BYTES)
        for template_id in ids:
            item = signer._item(version, "t\u00e9", "alice", template_id)
            folded = bytes(a ^ b for a, b in zip(folded, item, strict=True))
        assert signer.tally("t\u00e9", "alice", iter(ids), version) == Tally(len(ids), folded)
    assert signer.tally("t", "alice", [], 1) == Tally(0, bytes(DIGEST_BYTES))
