# ruff: noqa: I001 - tests/ray_tls.py must be imported before Ray
"""Sharded identify on a local multi-node Ray cluster with TLS on (issue #18).

One cluster (a head and two more nodes, all on this machine) and one sharded vault serve every
test of this module: Ray takes seconds to start. The vault's gallery is split over three shard
actors; the same vault opened without shards is the single-process reference.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import anyio
import httpx

from .ray_tls import TLS_FILES, write_certificates  # first: Ray reads RAY_USE_TLS once

import ray
from ray.cluster_utils import Cluster

from faceseal.cli.output import exit_code_for
from faceseal.cluster.front import RayShards
from faceseal.cluster.launch import attach, detach, is_loopback_address
from faceseal.cluster.partition import Partitioner
from faceseal.errors import InvalidInput, ShardUnavailable
from faceseal.http.app import create_app
from faceseal.http.problems import status_for
from faceseal.vault import Vault

from .answer_support import plausible_encodings, set_budgets
from .conftest import EncodingOf, make_vault, reopen_vault

pytestmark = pytest.mark.slow

SHARDS = 3
SUBJECTS = 500
PROBES = 1000
TOP_K = 5


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    assert os.environ.get("RAY_USE_TLS") == "1"
    assert os.environ.get(TLS_FILES[0])
    write_certificates({ray.util.get_node_ip_address()})  # the address Ray will use here
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@dataclass
class Sharded:
    home: Path
    front: Vault
    shards: RayShards
    enrolled: np.ndarray
    names: list[str]


@pytest.fixture(scope="module")
def sharded(ray_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
            encoding_of: EncodingOf) -> Iterator[Sharded]:
    root = tmp_path_factory.mktemp("sharded")
    home = root / "vault"
    make_vault(home, root / "keys").close()
    set_budgets(home, per_principal=100 * PROBES, per_subject=100 * PROBES)
    real = np.stack([encoding_of(n) for n in ("obama-1.jpg", "biden-1.jpg", "obama-2.jpg")])
    enrolled = plausible_encodings(real, 2 * SUBJECTS, seed=18)
    names = [f"p{i:04d}" for i in range(SUBJECTS)]
    with reopen_vault(home) as writer:  # two templates per subject
        writer.enroll_many([n for n in names for _ in range(2)], enrolled)
    front = reopen_vault(home)
    shards = attach(front, SHARDS, follow_interval=0.2)
    try:
        yield Sharded(home, front, shards, enrolled, names)
    finally:
        detach(front, shards)
        front.close()


def _answers(results: list) -> list[list[tuple[str, str, float | None]]]:
    return [[(c.subject_id, c.template_id, c.distance) for c in r.candidates] for r in results]


def _probes(sharded: Sharded, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = sharded.enrolled[rng.integers(0, len(sharded.enrolled), count)]
    return near + rng.standard_normal(near.shape) * rng.uniform(0.01, 0.08, (count, 1))


def test_three_shards_return_exactly_the_single_process_top_k(sharded: Sharded) -> None:
    probes = _probes(sharded, PROBES, seed=1)
    with reopen_vault(sharded.home) as single:
        assert single.shards is None
        expected = single.identify_many(probes, top_k=TOP_K)
    found = sharded.front.identify_many(probes, top_k=TOP_K)
    assert _answers(found) == _answers(expected)  # same candidates, same float64 distances
    assert [r.gallery_size for r in found] == [r.gallery_size for r in expected]
    assert all(r.disclosure == "exact" for r in found)
    # Each shard holds a real part of the gallery; together exactly the whole of it.
    statuses = sharded.shards.statuses()
    held = [s["tenants"]["default"]["templates"] for s in statuses if s is not None]
    assert len(held) == SHARDS
    assert all(h > 0 for h in held)
    assert sum(held) == 2 * SUBJECTS
    # A single probe goes the same way.
    one = sharded.front.identify(probes[0], top_k=TOP_K)
    assert _answers([one]) == _answers(expected[:1])


def test_enrol_and_erase_through_any_front_end_are_seen_before_the_next_answer(
        sharded: Sharded) -> None:
    new = sharded.enrolled[0] + 0.02
    front = sharded.front
    front.enroll("late-comer", [new])  # through the sharded front end
    assert front.identify(new, top_k=1).candidates[0].subject_id == "late-comer"
    with reopen_vault(sharded.home) as other:  # another process, no shards
        other.erase("late-comer")
    assert "late-comer" not in {c.subject_id for c in front.identify(new, top_k=3).candidates}
    with reopen_vault(sharded.home) as other:
        other.enroll("late-comer-2", [new])
    assert front.identify(new, top_k=1).candidates[0].subject_id == "late-comer-2"
    front.erase("late-comer-2")  # the owning shard drops it before erase returns
    assert "late-comer-2" not in {c.subject_id for c in front.identify(new, top_k=3).candidates}
    statuses = sharded.shards.statuses()
    assert sum(s["tenants"]["default"]["templates"] for s in statuses if s) == 2 * SUBJECTS


def test_a_killed_shard_fails_closed_then_recovers_without_loss(sharded: Sharded) -> None:
    probes = _probes(sharded, 200, seed=2)
    with reopen_vault(sharded.home) as single:
        expected = _answers(single.identify_many(probes, top_k=TOP_K))
    # Shard 1 has written its snapshot (erasures in earlier tests destroy it; it is rewritten
    # within seconds), so its restart can load from it.
    layout = Partitioner(sharded.front.partition_key(), SHARDS).layout(1)
    deadline = time.monotonic() + 60
    while not list((sharded.home / "shards" / layout).rglob("*.snap")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    before = sharded.shards.statuses()[1]
    assert before is not None
    os.kill(before["pid"], signal.SIGKILL)
    with pytest.raises(ShardUnavailable, match="refused") as refused:
        sharded.front.identify_many(probes, top_k=TOP_K)
    assert status_for(refused.value) == 503
    assert exit_code_for(refused.value) == 5
    deadline = time.monotonic() + 120
    while True:
        readiness = sharded.front.readiness()
        if readiness.ready:
            break
        assert time.monotonic() < deadline, readiness
        time.sleep(0.5)
    assert readiness.shards == {str(i): "ok" for i in range(SHARDS)}
    assert _answers(sharded.front.identify_many(probes, top_k=TOP_K)) == expected
    after = sharded.shards.statuses()
    assert after[1] is not None
    assert after[1]["pid"] != before["pid"]
    assert after[1]["tenants"]["default"]["source"] == "snapshot"  # reloaded, then the delta
    assert after[1]["tenants"]["default"]["templates"] == before["tenants"]["default"]["templates"]
    assert sum(s["tenants"]["default"]["templates"] for s in after if s) == 2 * SUBJECTS


def test_partition_key_is_the_vaults_and_never_pickled(sharded: Sharded) -> None:
    key = sharded.front.partition_key()
    partitioner = Partitioner(key, SHARDS)
    with reopen_vault(sharded.home) as other:
        assert Partitioner(other.partition_key(), SHARDS).fingerprint() \
            == partitioner.fingerprint()
    with pytest.raises(TypeError):
        ray.put(partitioner)
    assert "redacted" in repr(partitioner)
    owners = {partitioner.shard_of("default", n) for n in sharded.names}
    assert owners == set(range(SHARDS))


def test_a_remote_cluster_without_tls_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                 sharded: Sharded) -> None:
    assert is_loopback_address("127.0.0.1:6379")
    assert not is_loopback_address("10.1.2.3:6379")
    monkeypatch.setenv("RAY_USE_TLS", "0")
    with pytest.raises(InvalidInput, match="TLS"):
        attach(sharded.front, 2, ray_address="10.1.2.3:6379")
    assert sharded.front.shards is sharded.shards  # nothing changed


def test_readyz_reports_every_shard(sharded: Sharded) -> None:
    async def readyz(app: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://shards") as http:
            return await http.get("/readyz")

    with Vault.open(sharded.home) as served:  # unbound, as faceseal serve opens it
        served.use_shards(sharded.shards)
        ready = anyio.run(readyz, create_app(served))
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["shards"] == "ok"
    assert body["shards"] == {str(i): "ok" for i in range(SHARDS)}
