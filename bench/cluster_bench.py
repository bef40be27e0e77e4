"""Sharded identify benchmark (issue #18): latency and memory on 1, 2 and 4 shards against the
single-process identify of the same vault, measured in the same run.

For each layout the shards run on an embedded Ray instance on this machine (loopback, one
actor per shard), load their partition (from the records the first time, writing their
snapshots), and answer:

* **single-probe identify** p50/p90 (ms): what one HTTP request costs, fan-out included;
* **batched identify** (64 probes per call) per probe (ms): throughput;
* **fan-out overhead** per request: identify on an empty tenant through the shards against the
  same call answered locally (no gallery scan at all: only the round trips and the merge);
* **memory**: each shard's gallery bytes and resident set, against the single process's.

Every figure sits beside the single-process baseline measured in the same run (ratios), with
``uptime`` load, because this machine is shared and noisy. Not a test: run by hand::

    .venv/bin/python bench/cluster_bench.py [--templates 2000000] [--shards 1,2,4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceseal.bench.runner import lift_budgets, machine
from faceseal.bench.synthetic import make_gallery
from faceseal.cluster.launch import attach, detach
from faceseal.vault import Vault

EMPTY_TENANT = "bench-empty"
BATCH = 64


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timings(call: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for number in range(count):
        started = time.perf_counter()
        call(number)
        samples.append(time.perf_counter() - started)
    return samples


def measure(vault: Vault, probes: np.ndarray, requests: int, batches: int) -> dict[str, float]:
    vault.identify(probes[0], top_k=5)  # warm: load or catch up
    single = timings(lambda i: vault.identify(probes[i % len(probes)], top_k=5), requests)
    batched = timings(lambda i: vault.identify_many(
        probes[(i * BATCH) % len(probes):][:BATCH], top_k=5), batches)
    empty = timings(lambda i: vault.identify(probes[i % len(probes)], tenant=EMPTY_TENANT,
                                             top_k=5), requests)
    return {"identify_p50_ms": 1e3 * float(np.percentile(single, 50)),
            "identify_p90_ms": 1e3 * float(np.percentile(single, 90)),
            "batched_per_probe_ms": 1e3 * float(np.median(batched)) / BATCH,
            "empty_tenant_p50_ms": 1e3 * float(np.percentile(empty, 50))}


def run(options: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="faceseal-cluster-bench-"))
    report: dict[str, Any] = {"templates": options.templates, "machine": machine(),
                              "load_start": load(), "layouts": {}}
    try:
        home = root / "vault"
        with Vault.create(home, keyring_dir=root / "keys") as created:
            key = created.add_principal("bench", ("enroller", "identifier"),
                                        all_tenants=True).api_key
            lift_budgets(created)
        data = make_gallery(options.templates, probes=max(options.requests, BATCH * 4))
        probes = data.probes
        with Vault.open(home, api_key=key) as writer:
            started = time.perf_counter()
            step = 200_000
            for lo in range(0, options.templates, step):
                hi = min(options.templates, lo + step)
                writer.enroll_many(data.subject_ids[lo:hi], data.encodings[lo:hi])
                say(f"enrolled {hi} / {options.templates}")
            report["enrol_seconds"] = time.perf_counter() - started
        del data

        with Vault.open(home, api_key=key) as single:
            rss_before = rss_bytes()
            started = time.perf_counter()
            single.identify(probes[0], top_k=5)
            load_seconds = time.perf_counter() - started
            base = measure(single, probes, options.requests, options.batches)
            galleries = single._cache.galleries_of("default").values()
            base.update(load_seconds=load_seconds,
                        gallery_bytes=sum(g.nbytes() for g in galleries),
                        rss_growth_bytes=rss_bytes() - rss_before, load=load())
            report["single"] = base
            say(f"single process: {base}")
            for shards in options.shards:
                front = Vault.open(home, api_key=key)
                try:
                    started = time.perf_counter()
                    ray_front = attach(front, shards, tenants=("default", EMPTY_TENANT),
                                       num_cpus=1.0)
                    start_seconds = time.perf_counter() - started
                    # The baseline again, right before: the machine's load drifts.
                    again = measure(single, probes, options.requests, options.batches)
                    figures = measure(front, probes, options.requests, options.batches)
                    statuses = ray_front.statuses()
                    figures.update(
                        start_seconds=start_seconds,
                        shard_gallery_bytes=[s["gallery_bytes"] for s in statuses if s],
                        shard_rss_bytes=[s["rss_bytes"] for s in statuses if s],
                        shard_templates=[s["tenants"]["default"]["templates"]
                                         for s in statuses if s],
                        load=load())
                    figures["baseline"] = again
                    figures["identify_ratio"] = figures["identify_p50_ms"] \
                        / again["identify_p50_ms"]
                    figures["batched_ratio"] = figures["batched_per_probe_ms"] \
                        / again["batched_per_probe_ms"]
                    figures["fan_out_overhead_ms"] = figures["empty_tenant_p50_ms"] \
                        - again["empty_tenant_p50_ms"]
                    report["layouts"][str(shards)] = figures
                    say(f"{shards} shard(s): {figures}")
                    detach(front, ray_front)
                finally:
                    front.close()
                import ray  # noqa: PLC0415 - a fresh embedded instance per layout

                ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_end"] = load()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=2_000_000)
    parser.add_argument("--shards", type=lambda v: [int(x) for x in v.split(",")],
                        default=[1, 2, 4])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    report = run(options)
    if options.json:
        print(json.dumps(report, indent=1))
        return
    base = report["single"]
    print(f"{report['templates']} templates; load {report['load_start']} -> {report['load_end']}")
    print(f"single: identify p50 {base['identify_p50_ms']:.1f} ms, batched "
          f"{base['batched_per_probe_ms']:.2f} ms/probe, gallery "
          f"{base['gallery_bytes'] / 2**20:.0f} MiB")
    for shards, f in report["layouts"].items():
        print(f"{shards} shard(s): identify p50 {f['identify_p50_ms']:.1f} ms vs single "
              f"{f['baseline']['identify_p50_ms']:.1f} ms "
              f"(x{f['identify_ratio']:.2f}), batched {f['batched_per_probe_ms']:.2f} ms/probe "
              f"(x{f['batched_ratio']:.2f}), fan-out +{f['fan_out_overhead_ms']:.2f} ms, "
              f"per-shard gallery {max(f['shard_gallery_bytes']) / 2**20:.0f} MiB, "
              f"rss {max(f['shard_rss_bytes']) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
