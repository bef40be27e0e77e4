"""One truth across processes (issue #10): a running server follows what the CLI, cron's purge
and other replicas write; erased subjects never come back, enrolled ones are always found;
snapshots are shredded with the subject; failed-authentication limits hold across replicas."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceseal.errors import IntegrityFailure
from faceseal.vault import Vault
from faceseal.vault.snapshot import SNAPSHOT_DIR, tenant_tag

from .conftest import random_encodings, reopen_vault, run_cli, vault_keys
from .http_server import prepare_vault, start_server, stop_server, wait_healthy
from .pg_support import PgTestDatabase

TENANT = "acme"


def _vector(encoding: np.ndarray) -> list[float]:
    return [float(x) for x in encoding]


def _identified(http: httpx.Client, key: str, probe: np.ndarray, top_k: int = 5) -> list[str]:
    response = http.post(f"/v1/tenants/{TENANT}/identify", json={"encoding": _vector(probe),
                                                                  "top_k": top_k},
                         headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return [c["subject_id"] for c in response.json()["candidates"]]


def _cli(home: Path, key: str, *args: str) -> dict[str, object]:
    done = run_cli(*args, "--json", env={"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": key})
    assert done.returncode == 0, done.stderr
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


@contextmanager
def _servers(home: Path, root: Path, count: int, *args: str) -> Iterator[list[str]]:
    with ExitStack() as stack:
        urls = []
        for number in range(count):
            process, url = start_server(home, root / f"serve-{number}.log", *args)
            stack.callback(stop_server, process)
            wait_healthy(url, process)
            urls.append(url)
        yield urls


# --- one server, the CLI beside it ------------------------------------------------------------


def test_cli_erase_enrol_and_purge_reach_a_running_server(tmp_path: Path) -> None:
    home, _, keys = prepare_vault(tmp_path)
    worker = vault_keys(home).worker
    encodings = random_encodings(4, seed=7)
    with reopen_vault(home) as vault:
        vault.enroll_many(["obama", "biden", "harris"], encodings[:3], tenant=TENANT)
    np.save(tmp_path / "newcomer.npy", encodings[3])
    with _servers(home, tmp_path, 1, "--follow-interval", "0.2") as (url,), \
            httpx.Client(base_url=url, timeout=30) as http:
        identifier = keys["identifier"]
        assert _identified(http, identifier, encodings[0])[0] == "obama"  # gallery loaded
        erased = _cli(home, worker, "erase", "--subject", "obama", "--tenant", TENANT)
        assert erased["key_material_destroyed"] is True
        assert "obama" not in _identified(http, identifier, encodings[0])
        _cli(home, worker, "enroll", "--subject", "newcomer", "--tenant", TENANT,
             str(tmp_path / "newcomer.npy"))
        assert _identified(http, identifier, encodings[3])[0] == "newcomer"
        # cron's purge: everyone inactive for 0 seconds
        purged = _cli(home, worker, "purge", "--inactive-for", "0s", "--tenant", TENANT)
        assert purged["tenants"][0]["erased"] == 3  # type: ignore[index]
        assert _identified(http, identifier, encodings[1]) == []
        ready = http.get("/readyz").json()
        assert ready["caught_up"] is True
        assert ready["checks"]["changes"] == "ok"


def test_an_idle_server_drops_an_erased_subject_from_memory(tmp_path: Path) -> None:
    """No request needed: the follower applies the erasure within about one interval."""
    home, _, keys = prepare_vault(tmp_path)
    worker = vault_keys(home).worker
    encodings = random_encodings(2, seed=8)
    with reopen_vault(home) as vault:
        vault.enroll_many(["a", "b"], encodings, tenant=TENANT)
    with _servers(home, tmp_path, 1, "--follow-interval", "0.2") as (url,), \
            httpx.Client(base_url=url, timeout=30) as http:
        assert _identified(http, keys["identifier"], encodings[0])[0] == "a"
        with Vault.open(home, api_key=worker) as other:
            other.erase("a", tenant=TENANT)
            behind = [http.get("/readyz").json()["changes_behind"]]
            deadline = time.monotonic() + 10
            while behind[-1] and time.monotonic() < deadline:
                time.sleep(0.05)
                behind.append(http.get("/readyz").json()["changes_behind"])
        assert behind[-1] == 0, behind


# --- snapshots ----------------------------------------------------------------------------------


def test_a_copied_snapshot_dies_with_an_erasure(tmp_path: Path) -> None:
    """The CLI erases (no gallery in memory): before erase returns, the snapshot is replaced by
    one without the subject under a fresh key, so a copy taken before no longer opens."""
    home, _, keys = prepare_vault(tmp_path)
    worker = vault_keys(home).worker
    encodings = random_encodings(30, seed=9)
    subjects = [f"p{i}" for i in range(30)]
    with reopen_vault(home) as vault:
        vault.enroll_many(subjects, encodings, tenant=TENANT)
        vault.identify(encodings[0], tenant=TENANT)  # loads, writes the snapshot
    current = home / SNAPSHOT_DIR / f"index-{tenant_tag(TENANT)}.snap"
    copy = tmp_path / "copied.snap"
    shutil.copy2(current, copy)
    _cli(home, worker, "erase", "--subject", "p0", "--tenant", TENANT)
    with reopen_vault(home) as vault:
        snapshots = vault._cache._snapshots
        loaded = snapshots.load(TENANT, vault._models)
        assert loaded is not None  # the replacement opens ...
        held = {s for g in loaded.galleries.values() for s in g.subject_ids()}
        assert held == set(subjects[1:])  # ... and does not hold the erased subject
        for gallery in loaded.galleries.values():
            gallery.clear()
        shutil.copy2(copy, current)
        assert snapshots.load(TENANT, vault._models) is None  # the copy no longer opens
        found = vault.identify(encodings[0], tenant=TENANT)
        assert "p0" not in {c.subject_id for c in found.candidates}
    del keys


def test_a_server_replaces_its_snapshot_after_an_erasure(tmp_path: Path) -> None:
    """A server (follower running) destroys the snapshot at once and writes the replacement
    in the background; the copy taken before never opens again."""
    home, _, keys = prepare_vault(tmp_path)
    encodings = random_encodings(20, seed=12)
    with reopen_vault(home) as vault:
        vault.enroll_many([f"p{i}" for i in range(20)], encodings, tenant=TENANT)
    current = home / SNAPSHOT_DIR / f"index-{tenant_tag(TENANT)}.snap"
    with _servers(home, tmp_path, 1, "--follow-interval", "0.2") as (url,), \
            httpx.Client(base_url=url, timeout=30) as http:
        _identified(http, keys["identifier"], encodings[0])  # loads from records, snapshots
        copy = tmp_path / "copied.snap"
        shutil.copy2(current, copy)
        erased = http.delete(f"/v1/tenants/{TENANT}/subjects/p0",
                             headers={"Authorization": f"Bearer {keys['enroller']}"})
        assert erased.status_code == 200
        deadline = time.monotonic() + 20
        while not current.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert current.exists()
    with reopen_vault(home) as vault:
        snapshots = vault._cache._snapshots
        loaded = snapshots.load(TENANT, vault._models)
        assert loaded is not None
        assert "p0" not in {s for g in loaded.galleries.values() for s in g.subject_ids()}
        for gallery in loaded.galleries.values():
            gallery.clear()
        shutil.copy2(copy, current)
        assert snapshots.load(TENANT, vault._models) is None


# --- three replicas on PostgreSQL, the CLI beside them ------------------------------------------


@dataclass
class Truth:
    """What the test knows has been committed: subjects and their probe encodings."""

    present: dict[str, np.ndarray]
    erased: set[str]


@pytest.mark.slow
def test_three_replicas_and_the_cli_act_as_one_service(tmp_path: Path,
                                                       pg_schema: PgTestDatabase) -> None:
    login = pg_schema.create_login("svc_coherence")
    home, _, keys = prepare_vault(tmp_path, store_url=pg_schema.store_url(login))
    worker = vault_keys(home).worker
    admin = keys["admin"]
    rng = random.Random(20261126)  # fixed seed: the sequence replays
    pool = random_encodings(200, seed=10)
    truth = Truth({}, set())
    with _servers(home, tmp_path, 3, "--follow-interval", "5") as urls, ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(base_url=u, timeout=60)) for u in urls]
        enroller, verifier, identifier = (
            {"Authorization": f"Bearer {keys[n]}"} for n in ("enroller", "verifier", "identifier"))
        revocable = {}
        for number in range(3):
            revocable[f"temp-{number}"] = _cli(
                home, admin, "principals", "add", f"temp-{number}", "--role", "identifier",
                "--tenant", TENANT)["api_key"]
        next_subject = 0
        stats = {"enrol": 0, "erase": 0, "identify": 0, "verify": 0, "revoke": 0, "cli": 0}
        for step in range(520):
            http = rng.choice(clients)
            action = rng.choices(["enrol", "erase", "identify", "verify", "revoke"],
                                 weights=[30, 15, 35, 18, 2])[0]
            if action == "enrol" and next_subject < len(pool):
                name, encoding = f"s{next_subject}", pool[next_subject]
                next_subject += 1
                if step % 10 == 0:  # now and then through the CLI, another process
                    np.save(tmp_path / "e.npy", encoding)
                    _cli(home, worker, "enroll", "--subject", name, "--tenant", TENANT,
                         str(tmp_path / "e.npy"))
                    stats["cli"] += 1
                else:
                    done = http.post(f"/v1/tenants/{TENANT}/subjects/{name}/templates",
                                     json={"encodings": [_vector(encoding)]}, headers=enroller)
                    assert done.status_code == 201, done.text
                truth.present[name] = encoding
            elif action == "erase" and truth.present:
                name = rng.choice(sorted(truth.present))
                if step % 7 == 0:
                    _cli(home, worker, "erase", "--subject", name, "--tenant", TENANT)
                    stats["cli"] += 1
                else:
                    done = http.delete(f"/v1/tenants/{TENANT}/subjects/{name}", headers=enroller)
                    assert done.status_code == 200, done.text
                truth.erased.add(name)
                del truth.present[name]
            elif action == "identify" and (truth.present or truth.erased):
                name = rng.choice(sorted(truth.present) + sorted(truth.erased))
                probe = truth.present.get(name)
                if probe is None:
                    probe = pool[int(name[1:])]
                found = http.post(f"/v1/tenants/{TENANT}/identify",
                                  json={"encoding": _vector(probe), "top_k": 5},
                                  headers=identifier)
                assert found.status_code == 200, found.text
                names = [c["subject_id"] for c in found.json()["candidates"]]
                assert not truth.erased & set(names), (step, names)
                if name in truth.present:
                    assert names[:1] == [name], (step, name, names)
            elif action == "verify" and (truth.present or truth.erased):
                name = rng.choice(sorted(truth.present) + sorted(truth.erased))
                probe = pool[int(name[1:])]
                done = http.post(f"/v1/tenants/{TENANT}/subjects/{name}/verify",
                                 json={"encoding": _vector(probe)}, headers=verifier)
                if name in truth.present:
                    assert done.status_code == 200, done.text
                    assert done.json()["match"], done.text
                else:
                    assert done.status_code == 404, done.text
            elif action == "revoke" and revocable:
                principal = sorted(revocable)[0]
                key = revocable.pop(principal)
                rng.choice(clients).delete(f"/v1/principals/{principal}",
                                           headers={"Authorization": f"Bearer {admin}"})
                for other in clients:  # refused by every replica on its next request
                    refused = other.get(f"/v1/tenants/{TENANT}/subjects",
                                        headers={"Authorization": f"Bearer {key}"})
                    assert refused.status_code == 401, refused.text
            else:
                continue
            stats[action] += 1
        assert sum(stats.values()) - stats["cli"] >= 500, stats
        assert stats["erase"] >= 30, stats
        assert stats["identify"] >= 100, stats
        for http in clients:  # every replica ends with the same gallery
            for name, encoding in truth.present.items():
                assert _identified(http, keys["identifier"], encoding, top_k=1) == [name]


# --- failed-authentication limits across replicas -----------------------------------------------


def test_failed_auth_limits_hold_across_replicas(tmp_path: Path) -> None:
    home, _, keys = prepare_vault(tmp_path)
    with _servers(home, tmp_path, 3) as urls, ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(base_url=u, timeout=30)) for u in urls]
        statuses = []
        for attempt in range(150):
            bad = f"fsk_{attempt:016x}_{'x' * 43}"
            statuses.append(clients[attempt % 3].get(
                f"/v1/tenants/{TENANT}/subjects",
                headers={"Authorization": f"Bearer {bad}"}).status_code)
    assert statuses.count(401) == 100  # evaluated
    assert statuses.count(429) == 50  # the address is blocked: only a valid key would pass
    assert statuses[100:] == [429] * 50
    del keys


# --- key rotation and retirement made by another process ----------------------------------------


def test_rotations_and_retirements_by_another_process_take_effect(tmp_path: Path) -> None:
    home, _, _ = prepare_vault(tmp_path)
    encodings = random_encodings(3, seed=13)
    with reopen_vault(home) as a, reopen_vault(home) as b:
        a.enroll_many(["x", "y"], encodings[:2], tenant=TENANT)
        assert b.identify(encodings[0], tenant=TENANT).best.subject_id == "x"
        old_record = a._store.subject_templates(TENANT, "x")[0]
        a.rotate_kek()  # a new KEK version B has never seen
        a.rotate_data_keys()
        b._data_keys.forget()  # as when B's data-key cache expires
        b.enroll("z", [encodings[2]], tenant=TENANT)  # B unwraps the rewrapped data key
        assert a.identify(encodings[2], tenant=TENANT).best.subject_id == "z"
        a.rotate_kek()  # B rotates next, from its stale view: A's versions must survive
        b.rotate_kek()
        assert b.key_status().kek_versions == [1, 2, 3, 4]
        a._data_keys.forget()
        assert a.verify("x", encodings[0], tenant=TENANT).match
        retired = a.retire_data_keys(2)
        assert retired.min_decrypt_version == 2
        time.sleep(1.1)  # B re-reads the minimum within a second
        assert b._data_keys.min_decrypt_version() == 2
        # A record sealed under the retired key, put back by someone with database access, is
        # refused by B as well.
        b._store.replace_records([old_record])
        with pytest.raises(IntegrityFailure, match=old_record.template_id):
            b.verify("x", encodings[0], tenant=TENANT)
