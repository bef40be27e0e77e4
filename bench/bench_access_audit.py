"""What access control and the audit trail cost, against baselines measured in the same run.

    .venv/bin/python bench/bench_access_audit.py [--ops 200] [--events 10000] [--subjects 500]

Prints, per operation: verify and identify through the facade (authorise, re-check the key, write
the audit event in the same transaction as last_seen_at, checkpoint as configured) against the bare
in-memory match the facade wraps; the same with a checkpoint after every event; the cost of
checking an API key; one bare durable SQLite commit on the same file system (the floor of any
fail-closed audit write); and `audit verify` throughput against just reading the log. Figures
depend on the disk's fsync latency far more than on the CPU.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from faceseal.access.principals import authenticate
from faceseal.bench.runner import lift_budgets, per_op
from faceseal.vault import Vault


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200, help="operations per round")
    parser.add_argument("--events", type=int, default=10_000, help="audit events to verify")
    parser.add_argument("--subjects", type=int, default=500)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="faceseal-bench-audit-"))
    rng = np.random.default_rng(0)
    encodings = rng.standard_normal((args.subjects, 128)) * 0.1
    with Vault.create(root / "vault", keyring_dir=root / "keys") as created:
        admin_key = created.bootstrap_admin_key
        assert admin_key is not None
        lift_budgets(created)
    with Vault.open(root / "vault", api_key=admin_key) as admin:
        worker_key = admin.add_principal("bench", ["enroller", "verifier", "identifier"]).api_key
        auditor_key = admin.add_principal("auditor", ["auditor"]).api_key
        vault = admin.as_key(worker_key)
        for i, encoding in enumerate(encodings):
            vault.enroll(f"s{i}", [encoding])
        vault.identify(encodings[0])  # decrypt the gallery into memory once
        # the bare matcher (baseline)
        gallery = vault._cache.galleries_of("default")["dlib-resnet-v1"]
        n = args.subjects

        rows: list[tuple[str, float, float]] = []
        bare_verify = per_op(lambda i: gallery.closest_of_subject(f"s{i % n}", encodings[i % n]),
                              args.ops)
        bare_identify = per_op(lambda i: gallery.search(encodings[i % n], 5), args.ops)
        for every in (16, 1):
            vault._audit._checkpoint_every = every
            audited = per_op(lambda i: vault.verify(f"s{i % n}", encodings[i % n]), args.ops)
            rows.append((f"verify, audited (checkpoint every {every})", bare_verify, audited))
            audited = per_op(lambda i: vault.identify(encodings[i % n]), args.ops)
            rows.append((f"identify top-5 of {n}, audited (checkpoint every {every})",
                         bare_identify, audited))
        vault._audit._checkpoint_every = 16
        # The floor of any fail-closed audit: one durable commit on the same file system.
        scratch = sqlite3.connect(root / "scratch.db", isolation_level=None)
        scratch.execute("PRAGMA journal_mode=WAL")
        scratch.execute("PRAGMA synchronous=FULL")
        scratch.execute("CREATE TABLE t (x BLOB)")
        commit = per_op(lambda _i: scratch.execute("INSERT INTO t VALUES (randomblob(300))"),
                         args.ops)
        scratch.close()
        store = vault._store
        seal = vault._guard.seal
        check_key = per_op(lambda _i: authenticate(store, seal, worker_key), args.ops)

        # Grow the log to --events with cheap audited reads, then verify it.
        while True:
            head = next(iter(store.audit_events(after_seq=args.events - 1, limit=1)), None)
            if head is not None:
                break
            vault.subjects()
        auditor = admin.as_key(auditor_key)
        started = time.perf_counter()
        events = sum(1 for _ in store.audit_events())
        read_time = time.perf_counter() - started
        started = time.perf_counter()
        report = auditor.audit_verify()
        verify_time = time.perf_counter() - started
        assert report.ok, report.problem

    print(f"faceseal access/audit benchmark ({n} subjects, {args.ops} ops per round, "
          "median of 5 rounds)")
    print(f"{'operation':58} {'baseline us':>12} {'faceseal us':>12} {'overhead':>9}")
    for name, base, measured in rows:
        print(f"{name:58} {base:12.1f} {measured:12.1f} {measured / base:8.1f}x")
    print(f"{'one durable SQLite commit (WAL, synchronous=FULL), for scale':58} {'':12} "
          f"{commit:12.1f}")
    print(f"{'API key check (lookup + SHA-256 + constant-time compare)':58} {'':12} "
          f"{check_key:12.1f}")
    print(f"audit verify: {report.events} events in {verify_time:.2f} s "
          f"({report.events / verify_time:,.0f} events/s); baseline, reading the same "
          f"{events} events without checking: {read_time:.2f} s "
          f"({events / read_time:,.0f} events/s)")


if __name__ == "__main__":
    main()
