"""SIGKILL at random moments: ``keys rotate --data`` over 20,000 records, and enrolment against the
encryption counter. Nothing may be lost, and the counter may never go backwards."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceseal.vault import Vault

from .conftest import make_vault, random_encodings, reopen_vault, vault_keys

RECORDS = 20_000
SUBJECTS = 20
KILLS = 10


def _cli(args: list[str], home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "faceseal", *args],
        env={**os.environ, "FACESEAL_HOME": str(home),
             "FACESEAL_API_KEY": vault_keys(home).worker},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _query(home: Path, sql: str) -> list[tuple[int, ...]]:
    db = sqlite3.connect(f"file:{home / 'templates.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _next_target(home: Path) -> int:
    """The data-key version the next ``rotate --data`` moves records to (resumed or new)."""
    pending = _query(home, "SELECT value FROM meta WHERE key = 'data_key_rotation'")
    if pending and pending[0][0]:
        return int(json.loads(str(pending[0][0]))["target"])
    return int(_query(home, "SELECT MAX(version) FROM data_keys")[0][0]) + 1


def _progress(home: Path, target: int) -> tuple[int, int]:
    """(records already at the target version, all records), read by another process."""
    rows = _query(home, f"SELECT SUM(key_version >= {int(target)}), COUNT(*) FROM templates")
    return int(rows[0][0] or 0), int(rows[0][1])


@pytest.mark.slow
def test_rotate_data_survives_sigkill_at_random_moments(
    vault_dirs: tuple[Path, Path]
) -> None:
    home, keys = vault_dirs
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    originals: dict[str, np.ndarray] = {}
    with make_vault(home, keys) as vault:
        for i in range(SUBJECTS):
            encodings = random_encodings(RECORDS // SUBJECTS, seed=i)
            if i % 2:
                encodings = encodings.astype(np.float32)
            result = vault.enroll(f"subject-{i}", [encodings])
            originals.update(zip(result.template_ids, encodings, strict=True))
    assert len(originals) == RECORDS

    mid_rotation_kills = 0
    outcomes: list[tuple[int, int | None, int]] = []
    for attempt in range(3 * KILLS):
        if mid_rotation_kills >= KILLS and attempt >= KILLS + 2:
            break
        target_version = _next_target(home)
        process = _cli(["keys", "rotate", "--data", "--batch-size", "500"], home)
        if attempt % 4 == 0:
            time.sleep(rng.uniform(0.0, 0.8))  # any instant: start-up, key creation, a batch
        else:
            target = rng.uniform(0.05, 0.95) * RECORDS  # somewhere inside the re-encryption
            while process.poll() is None and _progress(home, target_version)[0] < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
        exited = process.poll()
        process.send_signal(signal.SIGKILL)
        process.wait()
        done, total = _progress(home, target_version)
        assert total == RECORDS
        outcomes.append((attempt, exited, done))
        if exited is None and 0 < done < RECORDS:
            mid_rotation_kills += 1
    assert mid_rotation_kills >= KILLS, f"too few kills inside a rotation: {outcomes}"

    # Resume to the end (a kill may also have landed after a rotation had finished).
    finished = subprocess.run([sys.executable, "-m", "faceseal", "keys", "rotate", "--data",
                               "--json"], env={**os.environ, "FACESEAL_HOME": str(home),
                                       "FACESEAL_API_KEY": vault_keys(home).worker},
                              capture_output=True, text=True, check=False, timeout=300)
    assert finished.returncode == 0, finished.stderr
    with reopen_vault(home) as vault:
        status = vault.key_status()
        assert status.rotation_in_progress is None
        active = status.active_data_key
        vault.retire_data_keys(active)  # durable count: no record needs an older key
        assert {d.version for d in status.data_keys if d.records} == {active}
        _assert_all_decrypt(vault, originals, minimum=active)
    with reopen_vault(home) as vault:  # and once more from disk, retired keys refused
        _assert_all_decrypt(vault, originals, minimum=active)


def _assert_all_decrypt(vault: Vault, originals: dict[str, np.ndarray], minimum: int) -> None:
    seen = 0
    for batch in vault._store.gallery(None):
        assert all(row.key_version >= minimum for row in batch)
        opened, damaged = vault._sealer.open(batch)
        assert damaged == []
        for item in opened:
            expected = originals[item.row.template_id]
            assert item.encoding.dtype == expected.dtype
            np.testing.assert_array_equal(item.encoding, expected)
        seen += len(opened)
    assert seen == len(originals)


@pytest.mark.slow
def test_encryption_counter_never_goes_backwards_across_sigkill(
    vault_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys, max_encryptions_per_key=1000):
        pass
    batch = tmp_path / "batch.npy"
    np.save(batch, random_encodings(240))
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    last: dict[int, int] = {}
    for _ in range(8):
        process = _cli(["enroll", "--subject", f"s{rng.randrange(5)}", str(batch)], home)
        time.sleep(rng.uniform(0.2, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        counters = dict(_query(home, "SELECT version, encryptions FROM data_keys"))
        records = dict(_query(home, "SELECT key_version, COUNT(*) FROM templates "
                                    "GROUP BY key_version"))
        for version, count in last.items():
            assert counters[version] >= count, "an encryption counter went backwards"
        for version, count in records.items():
            assert counters[version] >= count, "more records than counted encryptions"
        assert all(count <= 1000 for count in counters.values())
        last = counters
    with reopen_vault(home) as vault:
        assert vault.check().damaged == []
        status = vault.key_status()
        assert all(d.encryptions <= 1000 for d in status.data_keys)
        assert sum(d.records for d in status.data_keys) % 240 == 0  # whole enrolments only
