"""What authenticating the store's rows costs (issue 12), against baselines in the same run.

    .venv/bin/python bench/integrity_bench.py [--ops 300] [--subjects 300]

Per operation, in microseconds:

* checking an API key: the row lookup and hash comparison alone (what authentication did before
  rows were signed) against the whole check now (plus the row's MAC and the key directory's
  revocation record);
* the subject-inventory check ``verify`` does (one read, one PRF per template, one MAC) against
  the whole audited ``verify`` it is part of;
* extending an inventory on enrolment against the whole audited one-template ``enroll``.

SQLite on the local disk; the figures depend on fsync latency (the enroll and verify baselines)
far more than on the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from faceseal.access.apikeys import hashes_equal, parse_api_key
from faceseal.access.principals import Credential, check_credential
from faceseal.bench.runner import per_op
from faceseal.vault import Vault


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300, help="operations per round")
    parser.add_argument("--subjects", type=int, default=300)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="faceseal-bench-integrity-"))
    rng = np.random.default_rng(0)
    encodings = rng.standard_normal((args.subjects, 128)) * 0.1
    with Vault.create(root / "vault", keyring_dir=root / "keys") as admin:
        key = admin.add_principal("bench", ["enroller", "verifier"]).api_key
        vault = admin.as_key(key)
        for i, encoding in enumerate(encodings):
            vault.enroll(f"s{i}", [encoding, encoding * 0.99])
        store, seal = vault._store, vault._guard.seal
        parsed = parse_api_key(key)
        assert parsed is not None
        credential = Credential(parsed.key_id, parsed.hash())

        def lookup_only(_i: int) -> None:
            row = store.principal_by_key_id(credential.key_id)
            assert row is not None
            assert hashes_equal(row.key_hash, credential.key_hash)

        rows: list[tuple[str, float, float]] = [(
            "check an API key: lookup + hash (before) vs + MAC + key-side revocation (now)",
            per_op(lookup_only, args.ops),
            per_op(lambda _i: check_credential(store, seal, credential), args.ops))]

        n = args.subjects
        inventory = vault._inventory

        def inventory_check(i: int) -> None:
            subject = f"s{i % n}"
            found = store.subject_templates("default", subject)
            blob = store.inventories("default", [subject])[subject]
            assert inventory.matches("default", subject, blob, [r.template_id for r in found])

        def read_rows(i: int) -> None:
            store.subject_templates("default", f"s{i % n}")

        rows.append(("verify: its rows read (baseline) vs rows + inventory check",
                     per_op(read_rows, args.ops), per_op(inventory_check, args.ops)))
        rows.append(("inventory check vs the whole audited verify",
                     per_op(inventory_check, args.ops),
                     per_op(lambda i: vault.verify(f"s{i % n}", encodings[i % n]), args.ops)))
        extra = rng.standard_normal((args.ops * 5, 128)) * 0.1
        counter = iter(range(10**9))

        def extend(_i: int) -> None:
            with store.transaction():
                inventory.record(store, "default", {"s0": [f"t{next(counter)}"]})

        rows.append(("extend an inventory vs the whole audited one-template enroll",
                     per_op(extend, args.ops),
                     per_op(lambda i: vault.enroll(f"new{i}", [extra[i]]), args.ops // 3)))

    width = max(len(name) for name, _, _ in rows)
    print(f"{'':{width}}  {'baseline':>10}  {'measured':>10}  ratio")
    for name, baseline, measured in rows:
        print(f"{name:{width}}  {baseline:9.1f}us  {measured:9.1f}us  {measured / baseline:5.2f}x")


if __name__ == "__main__":
    main()
