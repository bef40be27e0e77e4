"""Hostile rows in a legacy table: each is reported with its reason and skipped, the import goes
on (and a re-run is not stuck on it), nothing it holds reaches the operator's terminal raw, and a
huge row is not even fetched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faceseal.crypto.secret import SecretBytes
from faceseal.storage.legacy_source import MAX_CIPHERTEXT_LENGTH
from faceseal.vault import Vault
from faceseal.vault.safe_text import printable

from .conftest import CliVault, random_encodings
from .test_legacy_import import build_table, encrypt_cbc, write_postgres, write_sqlite

ESCAPE = "\x1b]0;owned\x07\x1b[2J\u202e"


def test_deeply_nested_json_is_one_bad_row(vault: Vault, tmp_path: Path) -> None:
    table = build_table(list(random_encodings(4, seed=2)), plaintext="json")
    iv = os.urandom(16)
    bomb = b"[" * 100_000 + b"]" * 100_000
    table.rows[1] = (2, 1000, iv, encrypt_cbc(table.key, iv, bomb), table.rows[1][-1])
    url = write_sqlite(table, tmp_path / "l.db")
    result = vault.import_legacy(url, SecretBytes(table.key))
    # Before, a RecursionError ended the import here as an internal error, on every re-run.
    assert (result.rows_read, result.imported) == (4, 3)
    assert [(f.row_id, f.reason) for f in result.failed] == [
        ("2", "the plaintext is JSON nested too deeply to be an encoding")]


@pytest.mark.parametrize("source", ["sqlite", "postgres"])
def test_a_huge_row_is_reported_without_being_fetched(vault: Vault, tmp_path: Path,
                                                      source: str,
                                                      request: pytest.FixtureRequest) -> None:
    table = build_table(list(random_encodings(3, seed=4)))
    iv = os.urandom(16)
    table.rows[1] = (2, 1000, iv, os.urandom(MAX_CIPHERTEXT_LENGTH + 16), table.rows[1][-1])
    url = (write_sqlite(table, tmp_path / "l.db") if source == "sqlite"
           else write_postgres(table, request.getfixturevalue("pg_db")))
    result = vault.import_legacy(url, SecretBytes(table.key))
    assert result.imported == 2
    assert [f.row_id for f in result.failed] == ["2"]
    assert f"over the limit of {MAX_CIPHERTEXT_LENGTH}" in result.failed[0].reason


def test_control_characters_in_ids_never_reach_the_terminal(cli_vault: CliVault,
                                                            tmp_path: Path) -> None:
    table = build_table(list(random_encodings(3, seed=6)), user_of=lambda i: f"user{i}")
    row = list(table.rows[2])
    row[1] = "victim" + ESCAPE
    table.rows[2] = tuple(row)
    url = write_sqlite(table, tmp_path / "legacy.db")
    key_file = tmp_path / "old.key"
    key_file.write_bytes(table.key)
    done = cli_vault.run("import-legacy", "--source", url, "--legacy-key-file", str(key_file))
    assert done.returncode == 1, done.stderr
    shown = done.stdout + done.stderr
    assert "user victim\\x1b]0;owned\\x07\\x1b[2J\\u202e" in shown
    assert not any(ch in shown for ch in "\x1b\x07\u202e")


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain id 42", "plain id 42"),
    ("a\x1b[31mred", "a\\x1b[31mred"),
    ("tab\there\nnew", "tab\\x09here\\x0anew"),
    ("c1\x9bcsi", "c1\\x9bcsi"),
    ("bidi\u202eevil", "bidi\\u202eevil"),
    ("é漢字", "é漢字"),
    ("x" * 300, "x" * 256 + "..."),
])
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown
