"""Importing legacy AES-256-CBC ``face_encodings`` tables from SQLite and PostgreSQL.

The tables are made here the way legacy projects make them (AES-256-CBC, PKCS7, float64 bytes,
16-byte IV beside the ciphertext), from real dlib encodings of the sample photos plus random
ones; the test suite is the only place faceseal code encrypts with CBC.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray
from psycopg import sql

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import AccessDenied, Conflict, InvalidInput
from faceseal.vault import Vault
from faceseal.vault.legacy_import import (
    LegacyImportOptions,
    parse_legacy_key,
    read_legacy_key,
)

from .conftest import CliVault, EncodingOf, make_vault, random_encodings, reopen_vault
from .pg_support import PgTestDatabase

PHOTOS = ["obama-1.jpg", "obama-2.jpg", "obama-3.jpg", "obama-small.jpg", "biden-1.jpg",
          "biden-2.jpg"]
CORRUPTED = {100: "truncated", 500: "short IV", 900: "flipped byte"}


def encrypt_cbc(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


@dataclass
class LegacyTable:
    """What a legacy table holds, in clear, to compare the import with."""

    key: bytes
    encodings: dict[int, NDArray[np.float64]] = field(default_factory=dict)
    users: dict[int, Any] = field(default_factory=dict)
    created: dict[int, float] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    columns: tuple[str, ...] = ("id", "user_id", "iv", "encrypted_encoding", "created_at")
    url: str = ""

    def expected_by_subject(self) -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = {}
        for row_id, encoding in self.encodings.items():
            found.setdefault(str(self.users[row_id]), []).append(encoding.tobytes())
        return {subject: sorted(values) for subject, values in found.items()}


def build_table(encodings: list[NDArray[np.float64]], *, layout: str = "column",
                text: str | None = None, plaintext: str = "float64",
                corrupt: dict[int, str] | None = None, user_of: Callable[[int], Any] =
                lambda i: 1000 + i // 4, created: str = "datetime") -> LegacyTable:
    key = os.urandom(32)
    table = LegacyTable(key)
    if layout == "prepended":
        table.columns = ("id", "user_id", "encrypted_encoding", "created_at")
    base = datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    for index, encoding in enumerate(encodings):
        row_id = index + 1
        iv = os.urandom(16)
        body = (json.dumps(encoding.tolist()).encode() if plaintext == "json"
                else encoding.astype("<f8").tobytes())
        ciphertext = encrypt_cbc(key, iv, body)
        kind = (corrupt or {}).get(row_id)
        if kind == "truncated":
            ciphertext = ciphertext[:-5]
        elif kind == "short IV":
            iv = iv[:15]
        elif kind == "flipped byte":
            # Flips the last padding byte (0x10 -> 0x11): invalid PKCS7 whatever the key.
            ciphertext = ciphertext[:-17] + bytes([ciphertext[-17] ^ 0x01]) + ciphertext[-16:]
        stamp = base + datetime.timedelta(minutes=row_id)
        when: Any = {"datetime": stamp.replace(tzinfo=None), "iso": stamp.isoformat(),
                     "epoch": stamp.timestamp()}[created]
        if layout == "prepended" or layout == "null iv":
            iv_value, blob = None, iv + ciphertext
        else:
            iv_value, blob = iv, ciphertext
        if text == "hex":
            iv_value = iv_value.hex() if iv_value is not None else None
            blob = blob.hex()  # type: ignore[assignment]
        elif text == "base64":
            iv_value = base64.b64encode(iv_value).decode() if iv_value is not None else None
            blob = base64.b64encode(blob).decode()  # type: ignore[assignment]
        row: tuple[Any, ...] = (row_id, user_of(index), iv_value, blob, when)
        if layout == "prepended":
            row = (row_id, user_of(index), blob, when)
        table.rows.append(row)
        if kind is None:
            table.encodings[row_id] = encoding
            table.users[row_id] = user_of(index)
            table.created[row_id] = stamp.timestamp()
    return table


def write_sqlite(table: LegacyTable, path: Path) -> str:
    types = {"id": "INTEGER PRIMARY KEY", "user_id": "", "iv": "BLOB",
             "encrypted_encoding": "BLOB", "created_at": ""}
    with sqlite3.connect(path) as db:
        columns = ", ".join(f"{c} {types[c]}" for c in table.columns)
        db.execute(f"CREATE TABLE face_encodings ({columns})")
        db.executemany(f"INSERT INTO face_encodings VALUES ({', '.join('?' * len(table.columns))})",
                       [tuple(v.isoformat() if isinstance(v, datetime.datetime) else v for v in r)
                        for r in table.rows])
    db.close()
    table.url = f"sqlite:{path}"
    return table.url


def write_postgres(table: LegacyTable, db: PgTestDatabase) -> str:
    sample = table.rows[0]
    binary = "text" if isinstance(sample[-2], str) else "bytea"
    created = {datetime.datetime: "timestamp", str: "text", float: "double precision"}[
        type(sample[-1])]
    user = "text" if isinstance(sample[1], str) else "integer"
    types = {"id": "integer PRIMARY KEY", "user_id": user, "iv": binary,
             "encrypted_encoding": binary, "created_at": created}
    with db.admin() as conn:
        conn.execute(f"CREATE TABLE face_encodings "
                     f"({', '.join(f'{c} {types[c]}' for c in table.columns)})")
        with conn.cursor().copy(
                sql.SQL("COPY face_encodings ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, table.columns)))) as copy:
            for row in table.rows:
                copy.write_row(row)
    table.url = db.admin_url()
    return table.url


def opened_by_subject(vault: Vault, tenant: str = "default") -> dict[str, list[bytes]]:
    """Every template of ``tenant`` decrypted, as exact float64 bytes, per subject."""
    found: dict[str, list[bytes]] = {}
    for batch in vault._store.gallery(tenant):
        opened, damaged = vault._sealer.open(batch)
        assert damaged == []
        for item in opened:
            assert item.encoding.dtype == np.float64
            assert item.encoding.shape == (128,)
            found.setdefault(item.row.subject_id, []).append(item.encoding.tobytes())
    return {subject: sorted(values) for subject, values in found.items()}


@pytest.fixture(scope="session")
def thousand_encodings(encoding_of: EncodingOf) -> list[NDArray[np.float64]]:
    real = [encoding_of(name) for name in PHOTOS]
    return real + list(random_encodings(1000 - len(real), seed=5))


@pytest.fixture(params=["sqlite", "postgres"])
def thousand_table(request: pytest.FixtureRequest, tmp_path: Path,
                   thousand_encodings: list[NDArray[np.float64]]) -> LegacyTable:
    table = build_table(thousand_encodings, corrupt=CORRUPTED)
    if request.param == "sqlite":
        write_sqlite(table, tmp_path / "legacy.db")
    else:
        write_postgres(table, request.getfixturevalue("pg_db"))
    return table


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    with make_vault(tmp_path / "vault", tmp_path / "keys") as created:
        yield created


# --- the 1,000-row table -----------------------------------------------------------------------


@pytest.mark.slow
def test_thousand_rows_move_exactly_and_corrupt_rows_are_reported(
        vault: Vault, thousand_table: LegacyTable, tmp_path: Path) -> None:
    key_file = tmp_path / "old.key"
    key_file.write_text(thousand_table.key.hex() + "\n")
    key = read_legacy_key(key_file=key_file)
    seen: list[tuple[int, int]] = []
    result = vault.import_legacy(thousand_table.url, key,
                                 progress=lambda done, total: seen.append((done, total)))
    assert (result.rows_read, result.imported, result.subjects) == (1000, 997, 250), result.failed
    assert {int(f.row_id): f.user_id for f in result.failed} == {
        i: str(1000 + (i - 1) // 4) for i in CORRUPTED}
    reasons = {int(f.row_id): f.reason for f in result.failed}
    assert "multiple of 16" in reasons[100]
    assert "IV is 15 bytes" in reasons[500]
    assert "bad padding" in reasons[900]
    assert seen[-1] == (1000, 1000)
    # Every encoding, bit for bit, under the subject its user_id names.
    assert opened_by_subject(vault) == thousand_table.expected_by_subject()
    assert vault.verify("1000", thousand_table.encodings[1]).distance == 0.0
    created = {r.created_at for r in vault._store.subject_templates("default", "1000")}
    assert created == {thousand_table.created[i] for i in (1, 2, 3, 4)}


def test_import_keeps_a_loaded_gallery_in_step(vault: Vault, tmp_path: Path,
                                               encoding_of: EncodingOf) -> None:
    vault.enroll("someone", [encoding_of("obama-1.jpg")])
    assert vault.identify(encoding_of("biden-1.jpg")).gallery_size == 1  # loads the gallery
    table = build_table([encoding_of("biden-1.jpg")], user_of=lambda _: "joe")
    result = vault.import_legacy(write_sqlite(table, tmp_path / "l.db"),
                                 SecretBytes(table.key))
    assert result.imported == 1
    found = vault.identify(encoding_of("biden-2.jpg"))
    assert found.gallery_size == 2
    assert found.best is not None
    assert found.best.subject_id == "joe"


# --- accepted layout variants ------------------------------------------------------------------

VARIANTS = {
    "iv prepended, no iv column": {"layout": "prepended"},
    "iv column empty, iv prepended": {"layout": "null iv"},
    "hex text columns": {"text": "hex"},
    "base64 text columns": {"text": "base64"},
    "json plaintext": {"plaintext": "json"},
    "text user ids, ISO times": {"user_of": lambda i: f"user-{i % 3}", "created": "iso"},
    "epoch times": {"created": "epoch"},
}


@pytest.mark.parametrize("source", ["sqlite", "postgres"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layout_variants_import_exactly(vault: Vault, tmp_path: Path, variant: str,
                                        source: str, request: pytest.FixtureRequest) -> None:
    table = build_table(list(random_encodings(9, seed=11)), **VARIANTS[variant])
    url = write_sqlite(table, tmp_path / "l.db") if source == "sqlite" else write_postgres(
        table, request.getfixturevalue("pg_db"))
    result = vault.import_legacy(url, SecretBytes(table.key))
    assert (result.imported, result.failed) == (9, [])
    assert opened_by_subject(vault) == table.expected_by_subject()
    stamps = sorted(r.created_at for batch in vault._store.gallery("default") for r in batch)
    assert stamps == sorted(table.created.values())


def test_a_layout_forced_wrongly_fails_every_row_and_imports_nothing(
        vault: Vault, tmp_path: Path) -> None:
    table = build_table(list(random_encodings(5, seed=3)), layout="prepended")
    result = vault.import_legacy(write_sqlite(table, tmp_path / "l.db"), SecretBytes(table.key),
                                 options=LegacyImportOptions(iv_layout="column"))
    assert result.imported == 0
    assert {f.reason for f in result.failed} == {"the iv column is empty"}
    assert vault.subjects() == []


def test_the_wrong_key_imports_nothing(vault: Vault, tmp_path: Path) -> None:
    table = build_table(list(random_encodings(20, seed=4)))
    result = vault.import_legacy(write_sqlite(table, tmp_path / "l.db"),
                                 SecretBytes(os.urandom(32)))
    assert result.imported == 0
    assert len(result.failed) == 20
    assert vault.subjects() == []


@pytest.mark.parametrize("damage", ["NaN value", "127 values", "not json"])
def test_rows_that_decrypt_to_no_valid_encoding_are_reported(vault: Vault, tmp_path: Path,
                                                             damage: str) -> None:
    table = build_table(list(random_encodings(3, seed=9)))
    key, iv = table.key, os.urandom(16)
    body = {"NaN value": np.full(128, np.nan).tobytes(),
            "127 values": np.zeros(127).tobytes(),
            "not json": b"[1, 2,"}[damage]
    table.rows[1] = (2, 1000, iv, encrypt_cbc(key, iv, body), None)
    result = vault.import_legacy(write_sqlite(table, tmp_path / "l.db"), SecretBytes(key))
    assert result.imported == 2
    assert [f.row_id for f in result.failed] == ["2"]
    assert str(np.nan) not in result.failed[0].reason


# --- bad input: a clear error, and nothing changes ---------------------------------------------


@pytest.fixture
def small_source(tmp_path: Path) -> tuple[str, LegacyTable]:
    table = build_table(list(random_encodings(4, seed=2)))
    return write_sqlite(table, tmp_path / "legacy.db"), table


BAD_CALLS: dict[str, Callable[[Vault, str, LegacyTable], object]] = {
    "key not SecretBytes": lambda v, url, t: v.import_legacy(url, t.key),  # type: ignore[arg-type]
    "16-byte key": lambda v, url, t: v.import_legacy(url, SecretBytes(t.key[:16])),
    "missing source file": lambda v, url, t: v.import_legacy(url + ".nope", SecretBytes(t.key)),
    "unsupported source": lambda v, url, t: v.import_legacy("mysql://x/y", SecretBytes(t.key)),
    "missing table": lambda v, url, t: v.import_legacy(
        url, SecretBytes(t.key), options=LegacyImportOptions(table="nope")),
    "injected table name": lambda v, url, t: v.import_legacy(
        url, SecretBytes(t.key),
        options=LegacyImportOptions(table="face_encodings; DROP TABLE face_encodings")),
    "bad tenant": lambda v, url, t: v.import_legacy(url, SecretBytes(t.key), tenant="a\tb"),
    "unknown model": lambda v, url, t: v.import_legacy(url, SecretBytes(t.key), model="nope"),
    "batch size 0": lambda v, url, t: v.import_legacy(
        url, SecretBytes(t.key), options=LegacyImportOptions(batch_size=0)),
    "bad iv layout": lambda v, url, t: v.import_legacy(
        url, SecretBytes(t.key), options=LegacyImportOptions(iv_layout="middle")),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_requests_are_refused_and_change_nothing(vault: Vault, case: str,
                                                     small_source: tuple[str, LegacyTable]) -> None:
    url, table = small_source
    with pytest.raises(InvalidInput):
        BAD_CALLS[case](vault, url, table)
    assert vault.subjects() == []
    with sqlite3.connect(url.removeprefix("sqlite:")) as db:
        assert db.execute("SELECT count(*) FROM face_encodings").fetchone() == (4,)
    db.close()


def test_a_table_without_the_ciphertext_column_is_refused(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE face_encodings (id INTEGER PRIMARY KEY, user_id, iv)")
    db.close()
    with pytest.raises(InvalidInput, match="encrypted_encoding"):
        vault.import_legacy(f"sqlite:{path}", SecretBytes(os.urandom(32)))


_KEY = bytes(range(32))
_TEXT_KEY = b"0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("material", "expected"), [
    (_KEY, _KEY),
    (_TEXT_KEY, _TEXT_KEY),  # 32 characters are the key itself, as legacy code used them
    (_TEXT_KEY + b"\n", _TEXT_KEY),
    (_KEY.hex().encode() + b"\n", _KEY),
    (_KEY.hex().upper().encode(), _KEY),
    (base64.b64encode(_KEY) + b"\n", _KEY),
    (base64.urlsafe_b64encode(b"\xff" * 32), b"\xff" * 32),
    (_KEY[:16], None),
    (base64.b64encode(_KEY[:16]), None),
    (b"", None),
    (b"not a key at all", None),
])
def test_legacy_key_forms(material: bytes, expected: bytes | None) -> None:
    if expected is not None:
        assert parse_legacy_key(material).reveal() == expected
    else:
        with pytest.raises(InvalidInput, match="32 bytes") as caught:
            parse_legacy_key(material)
        assert not material or material.decode(errors="replace") not in str(caught.value)


@pytest.mark.parametrize("case", ["neither", "both", "missing file", "unset variable"])
def test_legacy_key_sources_are_checked(tmp_path: Path, case: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FS_TEST_OLD_KEY", raising=False)
    kwargs: dict[str, Any] = {
        "neither": {},
        "both": {"key_file": tmp_path / "k", "key_env": "FS_TEST_OLD_KEY"},
        "missing file": {"key_file": tmp_path / "absent.key"},
        "unset variable": {"key_env": "FS_TEST_OLD_KEY"},
    }[case]
    with pytest.raises(InvalidInput):
        read_legacy_key(**kwargs)


# --- the old key stays secret --------------------------------------------------------------------


def test_the_old_key_is_never_written_or_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    table = build_table(list(random_encodings(30, seed=8)), corrupt={7: "flipped byte"})
    url = write_sqlite(table, tmp_path / "legacy.db")
    monkeypatch.setenv("FS_TEST_OLD_KEY", base64.b64encode(table.key).decode())
    caplog.set_level(logging.DEBUG)
    home, keys = tmp_path / "vault", tmp_path / "keys"
    with make_vault(home, keys) as vault:
        result = vault.import_legacy(url, read_legacy_key(key_env="FS_TEST_OLD_KEY"))
    assert result.imported == 29
    forms = [table.key, table.key.hex().encode(), base64.b64encode(table.key),
             table.key.hex().upper().encode()]
    for path in [*home.rglob("*"), *keys.rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            assert not any(form in content for form in forms), path
    text = caplog.text + json.dumps(result.to_dict()) + repr(result)
    assert not any(form.decode("latin-1") in text for form in forms)


# --- resuming, and not importing twice -----------------------------------------------------------


class Interrupted(Exception):
    pass


def test_an_interrupted_import_resumes_after_the_last_committed_batch(
        vault: Vault, tmp_path: Path) -> None:
    table = build_table(list(random_encodings(50, seed=6)), corrupt={30: "truncated"})
    url = write_sqlite(table, tmp_path / "legacy.db")
    options = LegacyImportOptions(batch_size=20)

    def stop_after_first_batch(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        vault.import_legacy(url, SecretBytes(table.key), options=options,
                            progress=stop_after_first_batch)
    assert sum(s.templates for s in vault.subjects()) == 20
    result = vault.import_legacy(url, SecretBytes(table.key), options=options)
    assert result.resumed_after == "20"
    assert (result.rows_read, result.imported) == (30, 29)
    assert opened_by_subject(vault) == table.expected_by_subject()


def test_a_finished_import_is_not_repeated_by_accident(vault: Vault,
                                                       small_source: tuple[str, LegacyTable]
                                                       ) -> None:
    url, table = small_source
    assert vault.import_legacy(url, SecretBytes(table.key)).imported == 4
    with pytest.raises(Conflict, match="imported already"):
        vault.import_legacy(url, SecretBytes(table.key))
    assert sum(s.templates for s in vault.subjects()) == 4
    again = vault.import_legacy(url, SecretBytes(table.key),
                                options=LegacyImportOptions(again=True))
    assert again.imported == 4
    assert sum(s.templates for s in vault.subjects()) == 8


def test_a_tenant_scoped_postgres_login_is_refused_before_importing(
        tmp_path: Path, pg_schema: PgTestDatabase,
        small_source: tuple[str, LegacyTable]) -> None:
    login = pg_schema.create_login("svc")
    scoped = pg_schema.create_login("shop", tenants=["shop"])
    url, table = small_source
    with make_vault(tmp_path / "v", tmp_path / "k", store_url=pg_schema.store_url(login)):
        pass
    config = json.loads((tmp_path / "v" / "vault.json").read_text())
    config["store_url"] = pg_schema.store_url(scoped)
    (tmp_path / "v" / "vault.json").write_text(json.dumps(config))
    with reopen_vault(tmp_path / "v") as vault:
        with pytest.raises(AccessDenied):
            vault.import_legacy(url, SecretBytes(table.key), tenant="shop")
        assert vault.subjects(tenant="shop") == []


# --- the command ---------------------------------------------------------------------------------


def test_cli_import_legacy_reports_and_refuses_a_repeat(cli_vault: CliVault,
                                                        tmp_path: Path) -> None:
    table = build_table(list(random_encodings(12, seed=1)), corrupt={5: "short IV"})
    url = write_sqlite(table, tmp_path / "legacy.db")
    key_file = tmp_path / "old.key"
    key_file.write_bytes(table.key)
    done = cli_vault.run("import-legacy", "--source", url, "--legacy-key-file", str(key_file),
                         "--tenant", "shop", "--json")
    assert done.returncode == 1, done.stderr  # some rows were not imported
    report = json.loads(done.stdout)
    assert (report["imported"], report["rows_read"], report["tenant"]) == (11, 12, "shop")
    assert report["failed"] == [{"row_id": "5", "user_id": "1001",
                                 "reason": "the IV is 15 bytes, not 16"}]
    assert table.key.hex() not in done.stdout + done.stderr
    again = cli_vault.run("import-legacy", "--source", url, "--legacy-key-file", str(key_file),
                          "--tenant", "shop")
    assert again.returncode == 2
    assert "imported already" in again.stderr
    human = cli_vault.run("import-legacy", "--source", url, "--legacy-key-env", "OLD_KEY",
                          "--again", "--tenant", "other", extra_env={"OLD_KEY": table.key.hex()})
    assert human.returncode == 1
    assert "Imported 11 of 12 row(s)" in human.stdout
    assert "id 5 (user 1001): the IV is 15 bytes, not 16" in human.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--legacy-key-env", "FS_UNSET_VARIABLE"], "not set"),
    ([], "one"),
    (["--legacy-key-env", "OLD_KEY", "--batch-size", "0"], "--batch-size"),
    (["--legacy-key-env", "OLD_KEY", "--table", "x;y"], "plain table name"),
])
def test_cli_import_legacy_bad_input(cli_vault: CliVault, tmp_path: Path,
                                     small_source: tuple[str, LegacyTable],
                                     args: list[str], message: str) -> None:
    url, table = small_source
    done = cli_vault.run("import-legacy", "--source", url, *args,
                         extra_env={"OLD_KEY": table.key.hex()})
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_postgres_source_streams_with_the_password_kept_out_of_reports(
        vault: Vault, pg_db: PgTestDatabase) -> None:
    table = build_table(list(random_encodings(25, seed=12)))
    url = write_postgres(table, pg_db).replace("@", ":Sup3rSecret@", 1)
    result = vault.import_legacy(url, SecretBytes(table.key),
                                 options=LegacyImportOptions(batch_size=7))
    assert result.imported == 25
    assert "Sup3rSecret" not in json.dumps(result.to_dict())
    with sqlite3.connect(vault._store.path) as db:  # type: ignore[attr-defined]
        values = [str(v) for (v,) in db.execute("SELECT value FROM meta")]
    db.close()
    assert any(table.url.rpartition("/")[2].partition("?")[0] in v for v in values)
    assert not any("Sup3rSecret" in v for v in values)


# --- authorised and audited ----------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_each_batch_is_audited_and_the_chain_verifies(tmp_path: Path, store: str,
                                                      request: pytest.FixtureRequest) -> None:
    table = build_table(list(random_encodings(25, seed=13)), corrupt={12: "truncated"})
    url = write_sqlite(table, tmp_path / "legacy.db")
    options: dict[str, Any] = {}
    if store == "postgres":
        options["store_url"] = request.getfixturevalue("pg_app_url")
    with make_vault(tmp_path / "v", tmp_path / "k", **options) as vault:
        result = vault.import_legacy(url, SecretBytes(table.key), tenant="shop",
                                     options=LegacyImportOptions(batch_size=10))
        events = [e for e in vault.audit_tail(50) if e["action"] == "import"]
        assert vault.audit_verify().ok
    assert result.imported == 24
    assert [e["outcome"] for e in events] == ["ok"] * 4  # three batches and the summary
    assert all(e["tenant"] == "shop" and e["principal"] == "test-worker" for e in events)
    batches, summary = events[:3], events[3]
    stored = {t for e in batches for t in e["template_ids"]}
    assert len(stored) == 24
    assert [e["detail"]["failed_ids"] for e in batches] == [[], ["12"], []]
    assert batches[0]["detail"]["subjects"] == ["1000", "1001", "1002"]
    assert summary["template_ids"] == []
    assert summary["detail"]["imported"] == 24
    assert summary["detail"]["failed"] == 1
    assert table.key.hex() not in json.dumps(events)


def test_a_principal_without_the_enroller_role_is_refused_and_audited(tmp_path: Path) -> None:
    table = build_table(list(random_encodings(3, seed=14)))
    url = write_sqlite(table, tmp_path / "legacy.db")
    with make_vault(tmp_path / "v", tmp_path / "k") as vault:
        verifier = vault.add_principal("checker", ["verifier"], all_tenants=True).api_key
        with vault.as_key(verifier) as view, pytest.raises(AccessDenied):
            view.import_legacy(url, SecretBytes(table.key))
        assert vault.subjects() == []
        denied = [e for e in vault.audit_tail(10) if e["action"] == "import"]
    assert [(e["principal"], e["outcome"]) for e in denied] == [("checker", "denied")]
