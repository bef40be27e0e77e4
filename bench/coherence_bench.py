"""Coherence benchmark (issue #10): what following the change log costs and how fast it is.

Three figures, each beside a baseline measured in the same run:

1. **Propagation**: a change committed through one vault process ("replica A") until another
   ("replica B", idle, following with ``follow_changes``) has applied it in memory, p50/p99;
   on SQLite (polling every ``--interval``) and on PostgreSQL (NOTIFY, and polling beside it).
   Answers never wait for this (every answer applies the pending delta first); it is how long an
   erased subject's templates stay in an idle replica's memory.
2. **Freshness check**: identify p50 on a ``--gallery`` gallery with the per-answer check (one
   indexed head read) against the same search without it (the gallery alone), SQLite and
   PostgreSQL.
3. **Start after others wrote**: a ``--size`` vault with a snapshot; another process then enrols
   ``--added`` templates and erases ``--erased`` subjects; the time for a new process to open
   the vault and answer its first identify (snapshot + delta), against the same open decrypting
   every record (no snapshot).

Run::

    .venv/bin/python bench/coherence_bench.py [--size 1000000] [--json]

PostgreSQL: ``$FACESEAL_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
a superuser URL used to create and drop a throwaway database (see bench/storage_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from storage_bench import PgBench

from faceseal.bench.runner import lift_budgets, machine
from faceseal.bench.synthetic import make_gallery
from faceseal.storage.base import ChangeListener
from faceseal.vault import Vault
from faceseal.vault.follower import ChangeFollower

TENANT = "default"


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


@contextmanager
def new_vault(root: Path, store_url: str | None = None) -> Iterator[tuple[Path, str]]:
    home = root / "vault"
    with Vault.create(home, keyring_dir=root / "keys", store_url=store_url) as created:
        key = created.add_principal("bench", ("enroller", "verifier", "identifier")).api_key
        lift_budgets(created)
    yield home, key


def propagation(home: Path, key: str, changes: int, interval: float, *,
                polling: bool) -> list[float]:
    """Seconds from A's commit until idle B has applied it."""
    a = Vault.open(home, api_key=key)
    b = Vault.open(home, api_key=key)
    try:
        rng = np.random.default_rng(5)
        data = make_gallery(changes + 4, per_subject=1, probes=1, seed=5)  # dlib-like norms
        seed = data.encodings[:4]
        a.enroll_many([f"seed-{i}" for i in range(4)], seed)
        b.identify(seed[0])  # B loads its gallery
        listener = ChangeListener() if polling else b._store.change_listener()
        b._root._follower = ChangeFollower(b._cache, listener, interval)
        b._root._follower.start()
        time.sleep(0.3)
        samples = []
        for number in range(changes):
            a.enroll_many([f"p-{number}"], data.encodings[4 + number:5 + number])
            head = a._store.change_head(TENANT)
            started = time.perf_counter()
            while b._cache.states()[TENANT].applied < head:
                time.sleep(0.0005)
            samples.append(time.perf_counter() - started)
            time.sleep(0.05 + rng.random() * interval)  # land anywhere in B's cycle
        return samples
    finally:
        a.close()
        b.close()


def freshness(home: Path, key: str, gallery: int, repeats: int) -> dict[str, float]:
    data = make_gallery(gallery, probes=repeats)
    with Vault.open(home, api_key=key) as vault:
        vault.enroll_many(data.subject_ids, data.encodings)
        vault.identify(data.probes[0])
        g = vault._cache.galleries_of(TENANT)["dlib-resnet-v1"]
        with_check, without, head = [], [], []
        for probe in data.probes:
            started = time.perf_counter()
            vault.identify(probe, top_k=5)
            with_check.append(time.perf_counter() - started)
            started = time.perf_counter()
            with vault._cache.holding():
                g.search(probe, 5)
            without.append(time.perf_counter() - started)
            started = time.perf_counter()
            vault._store.change_head(TENANT)
            head.append(time.perf_counter() - started)
    return {"identify_p50_ms": pct(with_check, 50) * 1e3,
            "search_only_p50_ms": pct(without, 50) * 1e3,
            "head_read_p50_ms": pct(head, 50) * 1e3,
            "head_read_share_of_identify": pct(head, 50) / pct(with_check, 50)}


def timed_first_answer(home: Path, key: str, probe: np.ndarray) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    with Vault.open(home, api_key=key) as vault:
        vault.identify(probe, top_k=5)
        seconds = time.perf_counter() - started
        status = dict(vault.index_status()["tenants"][TENANT])
    return seconds, status


def start_after_writes(root: Path, size: int, added: int, erased: int,
                       say: Callable[[str], None]) -> dict[str, Any]:
    """A ``size`` vault; the first open decrypts every record (the baseline) and writes the
    snapshot; another process then erases ``erased`` subjects one call at a time (each erase
    returns only once the snapshot is replaced without the subject: its latency is part of the
    report) and enrols ``added`` templates (batches of 100); then a new process opens the vault
    and answers its first identify (snapshot + the enrolments as delta)."""
    data = make_gallery(size + added, probes=10)
    with new_vault(root / "start") as (home, key):
        with Vault.open(home, api_key=key) as vault:
            step = 200_000
            for lo in range(0, size, step):
                hi = min(size, lo + step)
                vault.enroll_many(data.subject_ids[lo:hi], data.encodings[lo:hi])
                say(f"  enrolled {hi} / {size}")
        say("  first open: every record decrypted (baseline), snapshot written")
        full_seconds, full_status = timed_first_answer(home, key, data.probes[0])
        say(f"  another process: {added} enrolments, {erased} erasures")
        erase_seconds = []
        with Vault.open(home, api_key=key) as other:
            # Erasures first: each replaces the snapshot, so the enrolments after them are the
            # delta the new process applies.
            for victim in sorted(set(data.subject_ids[:size]))[:erased]:
                started = time.perf_counter()
                other.erase(victim)
                erase_seconds.append(time.perf_counter() - started)
            for lo in range(size, size + added, 100):
                hi = min(size + added, lo + 100)
                other.enroll_many([f"late-{i}" for i in range(lo, hi)], data.encodings[lo:hi])
        say("  new process: snapshot + delta")
        fast_seconds, fast_status = timed_first_answer(home, key, data.probes[1])
    return {"size": size, "added": added, "erased": erased,
            "start_after_writes_s": fast_seconds, "start_after_writes": fast_status,
            "full_decrypt_start_s": full_seconds, "full_decrypt": full_status,
            "speedup": full_seconds / fast_seconds,
            "erase_with_snapshot_replacement_ms": {
                "p50": pct(erase_seconds, 50) * 1e3, "p99": pct(erase_seconds, 99) * 1e3}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--added", type=int, default=1000)
    parser.add_argument("--erased", type=int, default=100)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    say: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if args.json else print
    server = os.environ.get("FACESEAL_BENCH_PG_URL",
                            "postgresql://postgres@127.0.0.1:5432/postgres")
    report: dict[str, Any] = {"machine": machine(), "interval_s": args.interval}
    root = Path(tempfile.mkdtemp(prefix="faceseal-coherence-"))
    pg = PgBench(server)
    try:
        say("propagation (SQLite, polling)")
        with new_vault(root / "lite") as (home, key):
            lite = propagation(home, key, args.changes, args.interval, polling=True)
            say("freshness check (SQLite)")
            report["freshness_sqlite"] = freshness(home, key, args.gallery, args.repeats)
        with new_vault(root / "pg", pg.store_url()) as (home, key):
            say("propagation (PostgreSQL, NOTIFY)")
            notify = propagation(home, key, args.changes, args.interval, polling=False)
            say("propagation (PostgreSQL, polling)")
            poll = propagation(home, key, args.changes, args.interval, polling=True)
            say("freshness check (PostgreSQL)")
            report["freshness_postgres"] = freshness(home, key, args.gallery, args.repeats)
        report["propagation_ms"] = {
            name: {"p50": pct(s, 50) * 1e3, "p99": pct(s, 99) * 1e3, "n": len(s)}
            for name, s in (("sqlite_polling", lite), ("postgres_notify", notify),
                            ("postgres_polling", poll))}
        say(f"start after others wrote ({args.size} templates)")
        report["start"] = start_after_writes(root, args.size, args.added, args.erased, say)
    finally:
        pg.drop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
