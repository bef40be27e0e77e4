"""A shard without Ray (faceseal.cluster.shard): it holds only its partition, and an erasure by
any process destroys the owning shard's snapshot, even while the shards are stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceseal.cluster.shard import ShardCore
from faceseal.crypto.partition import Partitioner
from faceseal.matching.models import DEFAULT_MODEL_ID

from .answer_support import plausible_encodings
from .conftest import EncodingOf, make_vault, reopen_vault

SUBJECTS = 40


def _snapshots(home: Path, layout: str) -> list[Path]:
    return list((home / "shards" / layout).rglob("*.snap"))


@pytest.mark.slow
def test_shards_hold_their_partition_and_erasure_shreds_the_owners_snapshot(
        tmp_path: Path, encoding_of: EncodingOf) -> None:
    home = tmp_path / "vault"
    make_vault(home, tmp_path / "keys").close()
    real = np.stack([encoding_of("obama-1.jpg"), encoding_of("biden-1.jpg")])
    names = [f"s{i:02d}" for i in range(SUBJECTS)]
    with reopen_vault(home) as vault:
        vault.enroll_many(names, plausible_encodings(real, SUBJECTS, seed=4))
        partitioner = Partitioner(vault.partition_key(), 2)
    owned = {i: {n for n in names if partitioner.shard_of("default", n) == i} for i in (0, 1)}
    assert owned[0]
    assert owned[1]

    cores = [ShardCore(home, i, 2, follow_interval=0.05) for i in (0, 1)]
    try:
        for i, core in enumerate(cores):
            core.warm(["default"])
            status = core.status()["tenants"]["default"]
            assert status["templates"] == len(owned[i])  # its partition only
            found = core.search("default", DEFAULT_MODEL_ID, np.zeros((1, 128)) + 0.01, 100)
            assert {subject for subject, _, _ in found.proposals[0]} == owned[i]
    finally:
        for core in cores:
            core.close()
    layouts = [partitioner.layout(i) for i in (0, 1)]
    assert all(_snapshots(home, layout) for layout in layouts)

    victim = sorted(owned[0])[0]
    with reopen_vault(home) as other:  # no shard running: the CLI's erase
        other.erase(victim)
    assert not _snapshots(home, layouts[0])  # the owner's copy is gone
    assert _snapshots(home, layouts[1])  # the other shard never held the subject

    restarted = [ShardCore(home, i, 2) for i in (0, 1)]
    try:
        for core in restarted:
            core.warm(["default"])
        states = [core.status()["tenants"]["default"] for core in restarted]
        assert states[0]["source"] == "records"
        assert states[0]["templates"] == len(owned[0]) - 1
        assert states[1]["source"] == "snapshot"
        assert states[1]["templates"] == len(owned[1])
    finally:
        for core in restarted:
            core.close()
