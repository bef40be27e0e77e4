"""What identify's exact re-ranking and the answer rules cost, against baselines in the same run.

    .venv/bin/python bench/bench_answers.py [--ops 200] [--subjects 500,5000] [--top-k 5]

Per gallery size: the bare gallery search identify used to report from (baseline) against the
search plus opening the proposed subjects' records and computing verify's float64 distances
(``ExactRanker``, what identify now reports); and the answer rules each verify/identify runs
(tenant policy read, threshold, budget charge, plausibility check) against one bare
``store.get_meta`` read (no fsync in either pair); and a whole audited verify with its budgets
counted in memory (the Python API's default) against counted in the store (what ``serve`` and the
CLI do: one more durable commit per query, for the principal's charge).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from faceseal.bench.runner import lift_budgets, per_op
from faceseal.bench.synthetic import make_gallery
from faceseal.vault import Vault
from faceseal.vault.exact_rank import ExactRanker


def _measure(n: int, ops: int, k: int) -> list[tuple[str, float, float]]:
    root = Path(tempfile.mkdtemp(prefix="faceseal-bench-answers-"))
    synthetic = make_gallery(n, per_subject=1, probes=ops)
    with Vault.create(root / "vault", keyring_dir=root / "keys") as created:
        key = created.add_principal("bench", ["enroller", "verifier", "identifier",
                                              "calibrator"]).api_key
        lift_budgets(created)
    rows: list[tuple[str, float, float]] = []
    with Vault.open(root / "vault", api_key=key) as vault:
        vault.enroll_many(synthetic.subject_ids, synthetic.encodings)
        probes = synthetic.probes
        count = min(ops, len(probes))
        vault.identify(probes[0])  # load the gallery
        gallery = vault._cache.galleries_of("default")["dlib-resnet-v1"]
        spec = vault.model()
        principal = vault.principal
        assert principal is not None
        store = vault._store

        def exact(i: int) -> None:
            probe = probes[i % count]
            with ExactRanker(store, vault._sealer, "default", spec) as ranker:
                gallery.search(probe, k, ranker.exact)

        def rules(i: int) -> None:
            terms = vault._answers.terms(principal, "default", spec, None)
            vault._answers.admit(principal, spec, [probes[i % count]])
            assert terms.disclosure == "exact"

        bare = per_op(lambda i: gallery.candidates(probes[i % count], k), count)
        rows.append((f"identify top-{k} of {n}: bounded first pass -> + exact re-rank", bare,
                     per_op(exact, count)))
        meta = per_op(lambda _i: store.get_meta("tenant_policy:default"), count)
        rows.append(("answer rules (policy, threshold, budget, plausibility) vs one meta read",
                     meta, per_op(rules, count)))
        names = synthetic.subject_ids
        in_memory = per_op(lambda i: vault.verify(names[i % n], probes[i % count]), count)
        vault.use_query_counters(vault.shared_counters())
        in_store = per_op(lambda i: vault.verify(names[i % n], probes[i % count]), count)
        rows.append(("audited verify: budgets counted in memory -> in the store (serve, CLI)",
                     in_memory, in_store))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--subjects", default="500,5000")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, float, float]] = []
    for n in (int(s) for s in args.subjects.split(",")):
        rows.extend(_measure(n, args.ops, args.top_k))
    print(f"faceseal answer-rules benchmark ({args.ops} ops per round, median of 5 rounds)")
    print(f"{'operation':78} {'baseline us':>12} {'faceseal us':>12} {'ratio':>7}")
    for name, base, measured in rows:
        print(f"{name:78} {base:12.1f} {measured:12.1f} {measured / base:6.1f}x")
    print("(identify's full audited path adds one durable commit, a few ms: see "
          "bench_access_audit.py)")


if __name__ == "__main__":
    main()
