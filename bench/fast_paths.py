"""Run the fast-path benchmark and keep its report.

    .venv/bin/python bench/fast_paths.py --n 1000000            # what docs/performance.md shows
    .venv/bin/python bench/fast_paths.py --n 20000 --out /tmp   # a quick look

Writes ``fast-paths-n<N>-<date>.json`` (the full report of ``faceseal bench --json``) and prints
the table of ``faceseal bench`` plus a Markdown table for docs/performance.md. Every figure is
measured beside its baseline in the same run on the same data; see faceseal/bench/runner.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from faceseal.bench import BenchOptions, format_report, run_bench


def markdown(report: dict) -> str:
    rows = ["| figure | faceseal | baseline | baseline is | ratio | goal | met |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in report["figures"]:
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        value = "n/a" if f["value"] is None else f"{f['value']:.4g} {f['unit']}"
        base = "n/a" if f["baseline_value"] is None else f"{f['baseline_value']:.4g} {f['unit']}"
        ratio = "n/a" if f["ratio"] is None else f"{f['ratio']:.3g}x"
        rows.append(f"| {f['name']} | {value} | {base} | {f['baseline']} | {ratio} | "
                    f"{f['goal'] or '-'} | {met} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--per-subject", type=int, default=4)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    report = run_bench(BenchOptions(n=args.n, per_subject=args.per_subject, probes=args.probes,
                                    workdir=args.workdir),
                       lambda line: print(line, file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"fast-paths-n{args.n}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2, sort_keys=True))
    print("\n".join(format_report(report)))
    print()
    print(markdown(report))
    print(f"\nreport written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
