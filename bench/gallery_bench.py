"""The gallery alone against faiss and numpy, at several sizes, in one run (issue #14).

    .venv/bin/python bench/gallery_bench.py --sizes 10000 100000 1000000
    .venv/bin/python bench/gallery_bench.py --sizes 20000 --out /tmp     # a quick look

For each size, on the synthetic dlib-like gallery (``faceseal.bench.synthetic``), timed in
interleaved rounds so that load bursts on a shared machine hit every figure alike:

* ``first_pass``: ``Gallery.candidates`` (bounded int8 first pass, top-5), p50;
* ``search_exact``: ``Gallery.search`` with an exact function over in-memory float64 vectors
  (the gallery's own cost of the exact re-rank; the vault's, which opens sealed records, is in
  ``faceseal bench``), p50, and how many subjects it opened;
* faiss ``IndexFlatL2`` (float32, exact) with one thread and with its default threads, p50;
* numpy: ``known @ probe`` float32 matrix-vector scan with ``argpartition``, p50;
* batches of 100: first pass and faiss, per probe;
* recall@1 and the largest |reported - exact float64| distance over every top-5 (must be 0).

Writes ``gallery-bench-<date>.json`` and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.bench.runner import machine
from faceseal.bench.synthetic import make_gallery
from faceseal.matching.exact import closest_exact
from faceseal.matching.gallery import Gallery

TOP_K = 5
BATCH = 100


def _p50(samples: list[float]) -> float:
    return float(statistics.median(samples)) * 1000


def _build(n: int, probes: int) -> tuple[Gallery, Any, list[str], dict[str, list[int]]]:
    data = make_gallery(n, probes=probes)
    ids = [f"{i:032x}" for i in range(n)]
    gallery = Gallery(data.encodings.shape[1], "euclidean")
    for lo in range(0, n, 200_000):
        gallery.add_many(data.subject_ids[lo:lo + 200_000], ids[lo:lo + 200_000],
                         data.encodings[lo:lo + 200_000])
    rows: dict[str, list[int]] = {}
    for row, subject in enumerate(data.subject_ids):
        rows.setdefault(subject, []).append(row)
    return gallery, data, ids, rows


def measure(n: int, probes: int, rounds: int) -> dict[str, Any]:
    import faiss  # noqa: PLC0415 - the bench extra

    gallery, data, ids, rows = _build(n, probes)
    vectors = data.encodings
    opened: list[int] = []

    def exact(subject: str, probe: npt.NDArray[np.floating]) -> tuple[str, float] | None:
        mine = rows[subject]
        return closest_exact([vectors[r] for r in mine], [ids[r] for r in mine], probe,
                             "euclidean")

    def search(probe: npt.NDArray[np.float64]) -> list[Any]:
        calls: list[str] = []

        def counted(subject: str, query: npt.NDArray[np.floating]) -> tuple[str, float] | None:
            calls.append(subject)
            return exact(subject, query)

        found = gallery.search(probe, TOP_K, counted)
        opened.append(len(calls))
        return found

    index = faiss.IndexFlatL2(vectors.shape[1])
    for lo in range(0, n, 200_000):
        index.add(vectors[lo:lo + 200_000].astype(np.float32))
    known32 = vectors.astype(np.float32)
    q32 = data.probes.astype(np.float32)
    default_threads = faiss.omp_get_max_threads()

    def numpy_scan(i: int) -> None:
        scores = known32 @ q32[i]
        np.argpartition(-scores, TOP_K)[:TOP_K]

    timings: dict[str, list[float]] = {k: [] for k in (
        "first_pass", "search_exact", "faiss_one_thread", "faiss_default_threads", "numpy")}
    gallery.candidates(data.probes[0], TOP_K)
    search(data.probes[0])
    index.search(q32[:1], TOP_K)
    for _ in range(rounds):
        for i, probe in enumerate(data.probes):
            started = time.perf_counter()
            gallery.candidates(probe, TOP_K)
            timings["first_pass"].append(time.perf_counter() - started)
            started = time.perf_counter()
            search(probe)
            timings["search_exact"].append(time.perf_counter() - started)
            started = time.perf_counter()
            numpy_scan(i)
            timings["numpy"].append(time.perf_counter() - started)
            for name, threads in (("faiss_one_thread", 1),
                                  ("faiss_default_threads", default_threads)):
                faiss.omp_set_num_threads(threads)
                started = time.perf_counter()
                index.search(q32[i:i + 1], TOP_K)
                timings[name].append(time.perf_counter() - started)
    batch = data.probes[:BATCH]
    batch_ms: dict[str, float] = {}
    batch_ms["first_pass"] = min(_timed(lambda: gallery.candidates_many(batch, TOP_K))
                                 for _ in range(3)) * 1000 / len(batch)
    for name, threads in (("faiss_one_thread", 1), ("faiss_default_threads", default_threads)):
        faiss.omp_set_num_threads(threads)
        batch_ms[name] = min(_timed(lambda: index.search(q32[:len(batch)], TOP_K))
                             for _ in range(3)) * 1000 / len(batch)
    faiss.omp_set_num_threads(default_threads)
    hits, worst = _recall(gallery, data, exact)
    report = {name: _p50(samples) for name, samples in timings.items()}
    return {"n": n, "p50_ms": report, "batch_ms_per_probe": batch_ms,
            "subjects_opened_mean": float(np.mean(opened)),
            "bytes_per_template": gallery.bytes_per_template(),
            "faiss_flat_bytes_per_template": vectors.shape[1] * 4,
            "recall_at_1": hits / len(data.probes),
            "max_abs_distance_error_vs_float64": worst,
            "ratio_first_pass_vs_faiss_one_thread":
                report["faiss_one_thread"] / report["first_pass"],
            "ratio_search_exact_vs_faiss_one_thread":
                report["faiss_one_thread"] / report["search_exact"],
            "load_average_after": os.getloadavg()}


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _recall(gallery: Gallery, data: Any, exact: Any) -> tuple[int, float]:
    """Top-1 against a float64 brute force, and every reported distance against float64."""
    hits, worst = 0, 0.0
    vectors = data.encodings
    for probe in data.probes:
        found = gallery.search(probe, TOP_K, exact)
        distances = np.linalg.norm(vectors - probe, axis=1)
        best = data.subject_ids[int(np.argmin(distances))]
        hits += bool(found) and found[0].subject_id == best
        for match in found:
            row = int(match.template_id, 16)
            worst = max(worst, abs(match.distance - float(distances[row])))
    return hits, worst


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| gallery | first pass p50 | + exact re-rank p50 (subjects opened) "
             "| faiss L2 1 thread | faiss L2 default threads | numpy matvec "
             "| batch first pass /probe | faiss batch 1 thread /probe | bytes/template "
             "| recall@1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        p = r["p50_ms"]
        b = r["batch_ms_per_probe"]
        lines.append(
            f"| {r['n']:,} | {p['first_pass']:.3f} ms | {p['search_exact']:.3f} ms "
            f"({r['subjects_opened_mean']:.1f}) | {p['faiss_one_thread']:.3f} ms | "
            f"{p['faiss_default_threads']:.3f} ms | {p['numpy']:.3f} ms | "
            f"{b['first_pass']:.3f} ms | {b['faiss_one_thread']:.3f} ms | "
            f"{r['bytes_per_template']} | {r['recall_at_1']:.0%} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    started = {"machine": machine(), "load_average_before": os.getloadavg()}
    results = []
    for n in args.sizes:
        print(f"gallery of {n}", file=sys.stderr)
        results.append(measure(n, args.probes, args.rounds))
        print(json.dumps(results[-1]), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"gallery-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps({**started, "results": results}, indent=2, sort_keys=True))
    print(markdown(results))
    print(f"\nreport written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
