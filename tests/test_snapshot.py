"""Encrypted gallery snapshots: used when current, refused when stale, missing, foreign or
tampered (the vault then falls back to the records), and never able to bring back an erased
subject."""

from __future__ import annotations

import logging
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from faceseal.crypto.secret import SecretBytes
from faceseal.vault import Vault
from faceseal.vault.snapshot import KEYS_FILE, SNAPSHOT_DIR, tenant_tag
from tests.conftest import make_vault, random_encodings, reopen_vault, vault_keys
from tests.pg_support import PgTestDatabase
from tests.test_legacy_import import build_table, write_sqlite

TENANT = "default"


def snapshot_path(home: Path, tenant: str = TENANT) -> Path:
    wanted = home / SNAPSHOT_DIR / f"index-{tenant_tag(tenant)}.snap"
    assert wanted.exists(), f"no snapshot for {tenant}"
    return wanted


def source(vault: Vault, tenant: str = TENANT) -> str:
    return str(vault.index_status()["tenants"][tenant]["source"])


@pytest.fixture
def gallery_data() -> tuple[list[str], np.ndarray]:
    encodings = random_encodings(600, seed=4)
    return [f"person-{i // 3:03d}" for i in range(600)], encodings


@pytest.fixture
def snapshotted(vault_dirs: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]
                ) -> tuple[Path, Path]:
    """A closed vault whose current snapshot has been written."""
    home, keys = vault_dirs
    subjects, encodings = gallery_data
    with make_vault(home, keys) as vault:
        vault.enroll_many(subjects, encodings)
        vault.identify(encodings[0])
        assert source(vault) == "records"
    snapshot_path(home)
    return home, keys


@pytest.mark.slow
def test_snapshot_is_used_and_gives_the_same_answers(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]) -> None:
    home, _ = snapshotted
    _, encodings = gallery_data
    probes = encodings[::50] + 0.001
    with reopen_vault(home) as vault:
        fast = [r.to_dict() for r in vault.identify_many(probes, top_k=4)]
        assert source(vault) == "snapshot"
        assert vault.index_status()["tenants"][TENANT]["templates"] == 600
    (snapshot_path(home)).unlink()
    with reopen_vault(home) as vault:
        slow = [r.to_dict() for r in vault.identify_many(probes, top_k=4)]
        assert source(vault) == "records"
    assert fast == slow


def test_snapshot_files_are_private_and_hold_no_clear_text(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]) -> None:
    home, keys = snapshotted
    subjects, encodings = gallery_data
    path = snapshot_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    blob = path.read_bytes()
    assert subjects[0].encode() not in blob
    assert encodings[0].tobytes()[:16] not in blob
    assert encodings[0].astype(np.float32).tobytes()[:16] not in blob
    # The snapshot key lives with the other keys, wrapped; nothing key-like in the vault dir.
    assert (keys / KEYS_FILE).exists()
    assert stat.S_IMODE((keys / KEYS_FILE).stat().st_mode) == 0o600
    assert not list(home.rglob(KEYS_FILE))


def test_a_snapshot_plus_the_delta_sees_another_process_enrolment(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]) -> None:
    home, _ = snapshotted
    subjects, encodings = gallery_data
    newcomer = random_encodings(1, seed=99)[0]
    with reopen_vault(home) as other:  # never loads its gallery: the snapshot file stays
        other.enroll("newcomer", [newcomer])
        other.erase(subjects[3])
    with reopen_vault(home) as vault:
        found = vault.identify(newcomer, top_k=1)
        # The erasing process replaced the snapshot (fresh key) without the erased subject.
        assert source(vault) == "snapshot"
        assert found.candidates[0].subject_id == "newcomer"
        vault.enroll("second", [random_encodings(1, seed=98)[0]])
    with reopen_vault(home) as vault:  # a snapshot (from the close above) plus nothing
        assert vault.identify(newcomer, top_k=1).candidates[0].subject_id == "newcomer"
        assert source(vault) == "snapshot"
        assert subjects[3] not in {c.subject_id for c in vault.identify(encodings[9]).candidates}
    with reopen_vault(home) as other:
        other.enroll("third", [random_encodings(1, seed=97)[0]])
    with reopen_vault(home) as vault:  # the snapshot plus one enrolment made elsewhere
        vault.identify(newcomer, top_k=1)
        status = vault.index_status()["tenants"][TENANT]
        assert (status["source"], status["delta_added"]) == ("snapshot", 1)
        assert status["templates"] == 600 - 3 + 3


def test_enrolments_of_a_loaded_vault_are_snapshotted_at_close(
        snapshotted: tuple[Path, Path]) -> None:
    home, _ = snapshotted
    extra = random_encodings(4, seed=123)
    with reopen_vault(home) as vault:
        vault.identify(extra[0])
        vault.enroll_many(["late-a", "late-a", "late-b", "late-b"], extra)
    with reopen_vault(home) as vault:
        assert vault.identify(extra[2], top_k=1).candidates[0].subject_id == "late-b"
        assert source(vault) == "snapshot"
        assert vault.index_status()["tenants"][TENANT]["templates"] == 604


def test_missing_snapshot_falls_back(snapshotted: tuple[Path, Path],
                                     gallery_data: tuple[list[str], np.ndarray]) -> None:
    home, _ = snapshotted
    shutil.rmtree(home / SNAPSHOT_DIR)
    with reopen_vault(home) as vault:
        assert vault.identify(gallery_data[1][7], top_k=1).candidates[0].subject_id == \
            gallery_data[0][7]
        assert source(vault) == "records"


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def mutate(blob: bytes) -> bytes:
        index = offset % len(blob)
        return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1:]
    return mutate


TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "magic": _flip(0),
    "key id": _flip(8),
    "snapshot id": _flip(24),
    "manifest length": _flip(43),
    "manifest": _flip(60),
    "first data chunk": _flip(2000),
    "last byte": _flip(-1),
    "truncated by one byte": lambda blob: blob[:-1],
    "truncated to the header": lambda blob: blob[:44],
    "cut after the manifest": lambda blob: blob[:400],
    "empty": lambda blob: b"",
    "one byte appended": lambda blob: blob + b"\x00",
    "duplicated": lambda blob: blob + blob,
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampered_snapshot_is_refused_and_the_records_answer(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray], how: str,
        caplog: pytest.LogCaptureFixture) -> None:
    home, _ = snapshotted
    subjects, encodings = gallery_data
    path = snapshot_path(home)
    path.write_bytes(TAMPERING[how](path.read_bytes()))
    with caplog.at_level(logging.INFO, logger="faceseal"), reopen_vault(home) as vault:
        found = vault.identify_many(encodings[[3, 300]], top_k=2)
        assert source(vault) == "records"
        assert [r.candidates[0].subject_id for r in found] == [subjects[3], subjects[300]]
        assert vault.index_status()["tenants"][TENANT]["templates"] == 600
    assert "snapshot" in caplog.text
    with reopen_vault(home) as vault:  # and a good snapshot replaced the bad one
        vault.identify(encodings[3])
        assert source(vault) == "snapshot"


def test_snapshot_of_another_tenant_is_refused(vault: Vault) -> None:
    encodings = random_encodings(6, seed=8)
    vault.enroll_many(["a", "a", "b"], encodings[:3], tenant="one")
    vault.enroll_many(["c", "c", "d"], encodings[3:], tenant="two")
    vault.identify(encodings[0], tenant="one")
    vault.identify(encodings[3], tenant="two")
    home = vault.home
    vault.close()
    one, two = snapshot_path(home, "one"), snapshot_path(home, "two")
    one.write_bytes(two.read_bytes())  # tenant two's data dressed as tenant one's
    with reopen_vault(home) as reopened:
        found = reopened.identify(encodings[0], tenant="one", top_k=5)
        assert source(reopened, "one") == "records"
        assert {c.subject_id for c in found.candidates} == {"a", "b"}


def test_old_snapshot_cannot_bring_an_erased_subject_back(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray],
        tmp_path: Path) -> None:
    """A backup of the snapshot, restored after an erasure: its key died with the erasure."""
    home, keys = snapshotted
    subjects, encodings = gallery_data
    victim = subjects[0]
    backup = tmp_path / "backup.snap"
    shutil.copy2(snapshot_path(home), backup)
    with reopen_vault(home) as vault:
        vault.erase(victim)  # replaces the snapshot under a fresh key
        assert snapshot_path_exists(home)
    with reopen_vault(home) as vault:
        snapshots = vault._cache._snapshots
        target = snapshots.path(TENANT)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        shutil.copy2(backup, target)
        assert snapshots.load(TENANT, vault._models) is None
        found = vault.identify(encodings[0], top_k=3)
        assert source(vault) == "records"
        assert victim not in {c.subject_id for c in found.candidates}
    assert (keys / KEYS_FILE).exists()


def snapshot_path_exists(home: Path) -> bool:
    return any((home / SNAPSHOT_DIR).glob("index-*.snap"))


def test_erasure_in_a_loaded_vault_keeps_the_snapshot_consistent(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]) -> None:
    home, _ = snapshotted
    subjects, encodings = gallery_data
    with reopen_vault(home) as vault:
        vault.identify(encodings[0])
        vault.erase(subjects[0])
        assert subjects[0] not in {c.subject_id for c in vault.identify(encodings[0]).candidates}
    with reopen_vault(home) as vault:
        found = vault.identify(encodings[0], top_k=5)
        assert source(vault) == "snapshot"
        assert subjects[0] not in {c.subject_id for c in found.candidates}
        assert vault.index_status()["tenants"][TENANT]["templates"] == 597


def test_a_tenant_scoped_postgres_login_gets_snapshots_too(
        tmp_path: Path, pg_schema: PgTestDatabase) -> None:
    """A login granted one tenant may not write vault metadata; snapshots need none (they
    record the tenant's change sequence number, which the login reads through its functions)."""
    login = pg_schema.create_login("svc_snap")
    scoped = pg_schema.create_login("shop_snap", tenants=["shop"])
    home = tmp_path / "v"
    with make_vault(home, tmp_path / "k", store_url=pg_schema.store_url(login)) as made:
        admin = made.as_key(vault_keys(home).admin)
        admin.config.store_url = pg_schema.store_url(scoped)
        admin.save_config()  # vault.json is signed: an admin changes it through the vault
    encodings = random_encodings(6, seed=21)
    with reopen_vault(home) as vault:
        vault.enroll_many(["a", "a", "b", "b", "c", "c"], encodings, tenant="shop")
        assert vault.identify(encodings[2], tenant="shop").best.subject_id == "b"
        vault.erase("a", tenant="shop")
        assert vault.identify(encodings[0], tenant="shop", top_k=3).gallery_size == 4
    assert (home / SNAPSHOT_DIR / f"index-{tenant_tag('shop')}.snap").exists()
    with reopen_vault(home) as vault:
        found = vault.identify(encodings[4], tenant="shop", top_k=3)
        assert source(vault, "shop") == "snapshot"
        assert [c.subject_id for c in found.candidates][:1] == ["c"]
        assert "a" not in {c.subject_id for c in found.candidates}


def test_a_legacy_import_reaches_the_snapshot_through_the_change_log(
        snapshotted: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = snapshotted
    imported = random_encodings(4, seed=31)
    table = build_table(list(imported), user_of=lambda i: 5000 + i)
    url = write_sqlite(table, tmp_path / "legacy.db")
    with reopen_vault(home) as vault:  # its gallery is not loaded: only the log can tell
        assert vault.import_legacy(url, SecretBytes(table.key)).imported == 4
    with reopen_vault(home) as vault:
        found = vault.identify(imported[2], top_k=1)
        assert source(vault) == "snapshot"
        assert vault.index_status()["tenants"][TENANT]["delta_added"] == 4
        assert found.candidates[0].subject_id == "5002"
        assert vault.index_status()["tenants"][TENANT]["templates"] == 604


def test_the_status_counts_what_the_gallery_holds_now(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray]) -> None:
    """index_status (the console's overview) shows the gallery's size now, not at its load."""
    home, _ = snapshotted
    _, encodings = gallery_data
    with reopen_vault(home) as vault:
        vault.identify(encodings[0])
        vault.enroll_many(["newcomer"] * 2, random_encodings(2, seed=11))
        vault.identify(encodings[0])  # catches up with its own enrolment
        status = vault.index_status()["tenants"][TENANT]
        assert (status["templates_at_load"], status["templates"]) == (600, 602)
        vault.erase("person-000")
        vault.identify(encodings[5])
        status = vault.index_status()["tenants"][TENANT]
        assert (status["templates_at_load"], status["templates"]) == (600, 599)
        assert status["damaged_templates"] == 0


@pytest.mark.parametrize("wait", ["waits for it", "closes at once"])
def test_a_large_load_writes_its_snapshot_after_the_first_answer(
        snapshotted: tuple[Path, Path], gallery_data: tuple[list[str], np.ndarray],
        monkeypatch: pytest.MonkeyPatch, wait: str) -> None:
    """Loads of at least DIRECT_READ_AT_LEAST templates answer first and write the snapshot
    from a thread; close() waits for it, so the next start uses it."""
    from faceseal.vault import gallery_cache

    monkeypatch.setattr(gallery_cache, "DIRECT_READ_AT_LEAST", 100)
    home, _ = snapshotted
    _, encodings = gallery_data
    snapshot_path(home).unlink()
    with reopen_vault(home) as vault:
        vault.identify(encodings[0])
        assert source(vault) == "records"
        if wait == "waits for it":
            vault._cache.wait_for_snapshots()
            assert snapshot_path(home).exists()
    with reopen_vault(home) as vault:
        vault.identify(encodings[0])
        assert source(vault) == "snapshot"
