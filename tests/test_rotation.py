"""Data-key rotation, retirement, encryption counting and crypto-shredding (local keyring)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceseal.crypto.record import HEADER_BYTES, parse_header
from faceseal.errors import Conflict, IntegrityFailure, InvalidInput
from faceseal.storage.base import TemplateRow
from faceseal.vault import Vault, rotation

from .conftest import CliVault, make_vault, random_encodings, reopen_vault


def rows_by_id(vault: Vault) -> dict[str, TemplateRow]:
    return {row.template_id: row for batch in vault._store.gallery(None) for row in batch}


def decrypt_all(vault: Vault) -> dict[str, np.ndarray]:
    opened, damaged = vault._sealer.open(
        [row for batch in vault._store.gallery(None) for row in batch])
    assert damaged == []
    return {item.row.template_id: item.encoding for item in opened}


def enroll_many(vault: Vault, subjects: int, per_subject: int, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """Enroll arrays; returns template id -> the encoding that went in."""
    originals: dict[str, np.ndarray] = {}
    for i in range(subjects):
        encodings = random_encodings(per_subject, seed=seed + i)
        result = vault.enroll(f"subject-{i}", [encodings])
        originals.update(zip(result.template_ids, encodings, strict=True))
    return originals


# --- rotate --data --------------------------------------------------------------------------------


def test_rotate_data_reencrypts_every_record_in_place(vault: Vault) -> None:
    originals = enroll_many(vault, 3, 40)
    before = rows_by_id(vault)
    seen: list[tuple[int, int]] = []
    result = vault.rotate_data_keys(batch_size=25, progress=lambda d, t: seen.append((d, t)))
    assert result.target_version == 2
    assert not result.resumed
    assert result.records_reencrypted == 120
    assert result.records_remaining == 0
    assert seen[0] == (0, 120)
    assert seen[-1] == (120, 120)
    after = rows_by_id(vault)
    assert after.keys() == before.keys()  # template ids stay
    for template_id, old in before.items():
        new = after[template_id]
        # Same place (every associated-data field but the key version), new ciphertext.
        assert (new.tenant, new.subject_id, new.model_id, new.dimension, new.dtype,
                new.created_at) == (old.tenant, old.subject_id, old.model_id, old.dimension,
                                    old.dtype, old.created_at)
        assert new.key_version == 2
        assert parse_header(new.record).key_version == 2
        assert new.record[:4] == old.record[:4]  # format, dtype, dimension
        assert new.record[HEADER_BYTES:] != old.record[HEADER_BYTES:]
    opened = decrypt_all(vault)
    for template_id, encoding in originals.items():
        np.testing.assert_array_equal(opened[template_id], encoding)
        assert opened[template_id].dtype == encoding.dtype
    status = vault.key_status()
    assert [(d.version, d.records, d.encryptions) for d in status.data_keys] == [
        (1, 0, 120), (2, 120, 120)]
    assert status.rotation_in_progress is None


def test_an_interrupted_rotation_resumes_with_the_same_key(vault: Vault) -> None:
    originals = enroll_many(vault, 2, 50)

    def interrupt(done: int, total: int) -> None:
        if done >= 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vault.rotate_data_keys(batch_size=20, progress=interrupt)
    status = vault.key_status()
    assert status.rotation_in_progress == {"target": 2, "records_remaining": 60}
    assert {d.version: d.records for d in status.data_keys} == {1: 60, 2: 40}
    resumed = vault.rotate_data_keys(batch_size=20)
    assert resumed.resumed
    assert resumed.target_version == 2  # no new data key for a resumed rotation
    assert resumed.records_reencrypted == 60
    assert len(vault.key_status().data_keys) == 2
    opened = decrypt_all(vault)
    assert all(np.array_equal(opened[t], e) for t, e in originals.items())
    # A finished rotation run again starts the next one (a new data key, as asked).
    assert vault.rotate_data_keys().target_version == 3


def test_new_enrolments_during_a_rotation_use_the_new_key(vault: Vault) -> None:
    enroll_many(vault, 1, 30)

    def enroll_midway(done: int, total: int) -> None:
        if done == 10:
            vault.enroll("late", [random_encodings(2, seed=99)])

    vault.rotate_data_keys(batch_size=10, progress=enroll_midway)
    assert {d.version: d.records for d in vault.key_status().data_keys} == {1: 0, 2: 32}


@pytest.mark.parametrize("batch_size", [0, -1, 100_001, 2.5, "10"])
def test_rotate_data_refuses_bad_batch_sizes(vault: Vault, batch_size: object) -> None:
    enroll_many(vault, 1, 3)
    with pytest.raises(InvalidInput, match="batch size"):
        vault.rotate_data_keys(batch_size=batch_size)  # type: ignore[arg-type]
    assert len(vault.key_status().data_keys) == 1


def test_damaged_records_are_reported_and_left_for_check(vault: Vault) -> None:
    originals = enroll_many(vault, 1, 10)
    victim = next(iter(originals))
    row = rows_by_id(vault)[victim]
    flipped = row.record[:-1] + bytes([row.record[-1] ^ 1])
    vault._store._execute("UPDATE templates SET record = ? WHERE template_id = ?",  # type: ignore[attr-defined]
                          (flipped, victim))
    result = vault.rotate_data_keys()
    assert result.damaged_template_ids == [victim]
    assert result.records_reencrypted == 9
    assert result.records_remaining == 1
    with pytest.raises(Conflict, match="1 record"):
        vault.retire_data_keys(2)


# --- retire ---------------------------------------------------------------------------------------


def test_retire_is_refused_while_records_need_the_old_key(vault: Vault) -> None:
    enroll_many(vault, 1, 5)
    vault._data_keys.create_version()  # a new data key, but the records are still under v1
    with pytest.raises(Conflict, match=r"5 record\(s\) still need"):
        vault.retire_data_keys(2)
    assert vault.key_status().min_decrypt_version == 1
    assert vault.check().damaged == []


@pytest.mark.parametrize(("below", "error", "message"), [
    (0, InvalidInput, "positive integer"),
    (-3, InvalidInput, "positive integer"),
    (True, InvalidInput, "positive integer"),
    ("2", InvalidInput, "positive integer"),
    (3, Conflict, "active and cannot be retired"),
])
def test_retire_refuses_bad_versions(vault: Vault, below: object, error: type[Exception],
                                     message: str) -> None:
    enroll_many(vault, 1, 2)
    vault.rotate_data_keys()
    with pytest.raises(error, match=message):
        vault.retire_data_keys(below)  # type: ignore[arg-type]
    assert vault.key_status().min_decrypt_version == 1


def test_retire_after_rotation_refuses_the_old_key(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        originals = enroll_many(vault, 2, 5)
        old_rows = list(rows_by_id(vault).values())
        vault.rotate_data_keys()
        result = vault.retire_data_keys(2)
        assert (result.min_decrypt_version_before, result.min_decrypt_version) == (1, 2)
        assert vault.retire_data_keys(2) == rotation.Retirement(2, 2)  # idempotent
        assert vault.retire_data_keys(1) == rotation.Retirement(2, 2)  # never lowered
        status = vault.key_status()
        assert [(d.version, d.retired) for d in status.data_keys] == [(1, True), (2, False)]
        # An old copy of a record (from a backup, say) no longer opens: its key is retired.
        _, damaged = vault._sealer.open(old_rows)
        assert len(damaged) == len(old_rows)
    with reopen_vault(home) as vault:
        opened = decrypt_all(vault)
        assert all(np.array_equal(opened[t], e) for t, e in originals.items())


def test_a_writer_racing_retirement_stores_nothing(vault: Vault) -> None:
    enroll_many(vault, 1, 3)
    stale = list(rows_by_id(vault).values())  # sealed under v1
    vault.rotate_data_keys()
    vault.retire_data_keys(2)
    fresh = [TemplateRow(**{**{f: getattr(r, f) for f in r.__slots__},  # type: ignore[attr-defined]
                            "template_id": r.template_id + "x"}) for r in stale]
    with pytest.raises(Conflict, match="retired while this operation ran"):
        rotation.store_rows(vault._store, fresh)
    assert len(rows_by_id(vault)) == 3


# --- the encryption counter -----------------------------------------------------------------------


def test_enrolment_past_the_limit_starts_a_new_data_key(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys, max_encryptions_per_key=1000) as vault:
        first = vault.enroll("a", [random_encodings(1000)])
        assert {r.key_version for r in rows_by_id(vault).values()} == {1}
        one_more = vault.enroll("a", [random_encodings(1, seed=5)])
        assert rows_by_id(vault)[one_more.template_ids[0]].key_version == 2
        status = vault.key_status()
        assert [(d.version, d.encryptions, d.records) for d in status.data_keys] == [
            (1, 1000, 1000), (2, 1, 1)]
        # A batch that straddles the limit is split across data keys.
        vault.enroll("b", [random_encodings(1500, seed=6)])
        status = vault.key_status()
        assert [(d.version, d.encryptions) for d in status.data_keys] == [
            (1, 1000), (2, 1000), (3, 501)]
        assert len(first.template_ids) == 1000


# --- CLI ------------------------------------------------------------------------------------------


def test_keys_cli_status_rotate_retire(cli_vault: CliVault, tmp_path: Path) -> None:
    gallery = tmp_path / "g.npy"
    np.save(gallery, random_encodings(30))
    assert cli_vault.run("enroll", "--subject", "a", str(gallery)).returncode == 0
    status = json.loads(cli_vault.invoke("keys", "status", "--json").stdout)
    assert status["provider"] == "local"
    assert status["data_keys"][0]["records"] == 30
    assert status["data_keys"][0]["encryptions"] == 30
    assert status["kek_versions"] == [1]
    kek = json.loads(cli_vault.invoke("keys", "rotate", "--kek", "--json").stdout)
    assert (kek["kek_version"], kek["data_keys_rewrapped"], kek["records_reencrypted"]) == (2, 1, 0)
    data = json.loads(cli_vault.invoke("keys", "rotate", "--data", "--batch-size", "7",
                                    "--json").stdout)
    assert (data["target_version"], data["records_reencrypted"]) == (2, 30)
    refused = cli_vault.invoke("keys", "retire", "--below", "3", "--json")
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "conflict"
    retired = json.loads(cli_vault.invoke("keys", "retire", "--below", "2", "--json").stdout)
    assert retired["min_decrypt_version"] == 2
    human = cli_vault.invoke("keys", "status")
    assert "v1: 0 record(s), 30 encryption(s), wrapped by KEK v2 [retired]" in human.stdout
    assert cli_vault.invoke("check").returncode == 0


@pytest.mark.parametrize("args", [
    ["keys", "rotate"],
    ["keys", "rotate", "--data", "--batch-size", "0"],
    ["keys", "retire"],
    ["keys", "retire", "--below", "abc"],
    ["keys", "migrate"],
], ids=["rotate-what", "batch-zero", "retire-no-version", "retire-not-a-number", "migrate-no-to"])
def test_keys_cli_usage_errors_change_nothing(cli_vault: CliVault, args: list[str]) -> None:
    before = (cli_vault.home / "vault.json").read_bytes()
    result = cli_vault.invoke(*args)
    assert result.returncode == 2
    assert (cli_vault.home / "vault.json").read_bytes() == before
    status = json.loads(cli_vault.invoke("keys", "status", "--json").stdout)
    assert len(status["data_keys"]) == 1
    assert status["min_decrypt_version"] == 1


# --- crypto-shredding -----------------------------------------------------------------------------


@pytest.mark.parametrize("copy_while_open", [False, True],
                         ids=["closed-copy", "live-copy-with-wal"])
def test_erasure_shreds_old_copies_of_the_database(
    vault_dirs: tuple[Path, Path], tmp_path: Path, copy_while_open: bool
) -> None:
    home, keys = vault_dirs
    backup = tmp_path / "backup"
    backup.mkdir()
    with make_vault(home, keys) as vault:
        originals = {name: random_encodings(3, seed=i) for i, name in
                     enumerate(["alice", "bob", "carol"])}
        ids = {name: vault.enroll(name, [enc]).template_ids for name, enc in originals.items()}
        if copy_while_open:  # a file-level copy of a live database: main file plus its WAL
            for suffix in ("", "-wal"):
                source = home / f"templates.db{suffix}"
                if source.exists():
                    shutil.copy2(source, backup / source.name)
    if not copy_while_open:
        shutil.copy2(home / "templates.db", backup / "templates.db")
    with reopen_vault(home) as vault:
        erased = vault.erase("bob")
        assert erased.key_material_destroyed
    # Restore the old copy, and open it with the current keys.
    for suffix in ("", "-wal", "-shm"):
        (home / f"templates.db{suffix}").unlink(missing_ok=True)
    for copied in backup.iterdir():
        shutil.copy2(copied, home / copied.name)
    with reopen_vault(home) as vault:
        report = vault.check()
        assert report.records == 9
        assert sorted(d["template_id"] for d in report.damaged) == sorted(ids["bob"])
        assert {d["subject_id"] for d in report.damaged} == {"bob"}
        with pytest.raises(IntegrityFailure):
            vault.verify("bob", originals["bob"][0])
        for name in ("alice", "carol"):
            assert vault.verify(name, originals[name][1]).distance == 0.0
        best = vault.identify(originals["bob"][0], top_k=3)
        assert "bob" not in {c.subject_id for c in best.candidates}
