"""What serving over HTTP costs: concurrent 1:1 verify requests against a real `faceseal serve`
on loopback, against the same verify done in-process (``Vault.verify``) in the same run.

    .venv/bin/python bench/http_load.py [--requests 2000] [--concurrency 1,4,16]
                                        [--subjects 1000] [--threads 8]

For each concurrency level, C client threads (one keep-alive connection each) send verify requests
with a 128-d encoding for random enrolled subjects; the baseline is C threads calling
``Vault.verify`` on one open vault in this process. Both paths authorise, re-check the API key and
write a durable audit event per verify, so the difference is what HTTP adds: parsing, JSON,
validation, the thread hop, the network stack. Prints requests per second, p50 and p99 latency,
and the ratio of the in-process rate to the HTTP rate. Figures depend on the disk's fsync latency
(every verify commits an audit event) and on sharing 2 cores between client and server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from faceseal.bench.runner import lift_budgets
from faceseal.vault import Vault


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _drive(concurrency: int, total: int, make_worker: Callable[[], Callable[[int], None]]
           ) -> tuple[float, list[float]]:
    """Run ``total`` calls over ``concurrency`` threads; return the wall time and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    barrier = threading.Barrier(concurrency + 1)

    def run() -> None:
        call = make_worker()
        mine: list[float] = []
        barrier.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            started = time.perf_counter()
            call(i)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def _start_server(home: Path, root: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port_file = root / "port"
    log = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "faceseal", "serve", "--vault", str(home), "--port", "0",
         "--port-file", str(port_file), "--threads", str(threads)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"faceseal serve did not start; see {root / 'serve.log'}")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{int(port_file.read_text())}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="verifies per measurement")
    parser.add_argument("--concurrency", default="1,4,16",
                        help="comma-separated client thread counts")
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8, help="server thread pool size")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    root = Path(tempfile.mkdtemp(prefix="faceseal-bench-http-"))
    try:
        _run(args, levels, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, levels: list[int], root: Path) -> None:
    home = root / "vault"
    rng = np.random.default_rng(0)
    encodings = rng.standard_normal((args.subjects, 128)) * 0.1
    probes = encodings + rng.standard_normal(encodings.shape) * 0.01
    with Vault.create(home, keyring_dir=root / "keys") as admin:
        key = admin.add_principal("bench", ["enroller", "verifier"]).api_key
        setup = admin.as_key(key)
        for i, encoding in enumerate(encodings):
            setup.enroll(f"s{i}", [encoding])
        lift_budgets(admin)
    payloads = [{"encoding": p.tolist()} for p in probes]
    subjects = len(encodings)

    results: list[tuple[int, str, float, list[float]]] = []
    # Baseline: the same verify, in this process, C threads on one open vault.
    with Vault.open(home, api_key=key) as vault:
        vault.verify("s0", probes[0])  # warm up

        def in_process() -> Callable[[int], None]:
            def call(i: int) -> None:
                result = vault.verify(f"s{i % subjects}", probes[i % subjects])
                assert result.match
            return call

        for level in levels:
            elapsed, latencies = _drive(level, args.requests, in_process)
            results.append((level, "in-process Vault.verify", elapsed, latencies))

    process, url = _start_server(home, root, args.threads)
    try:
        headers = {"Authorization": f"Bearer {key}"}

        def over_http() -> Callable[[int], None]:
            client = httpx.Client(base_url=url, headers=headers, timeout=60)

            def call(i: int) -> None:
                response = client.post(f"/v1/tenants/default/subjects/s{i % subjects}/verify",
                                       json=payloads[i % subjects])
                if response.status_code != 200 or not response.json()["match"]:
                    raise SystemExit(f"unexpected answer: {response.status_code} "
                                     f"{response.text[:200]}")
            call(0)  # connect before the clock starts
            return call

        for level in levels:
            elapsed, latencies = _drive(level, args.requests, over_http)
            results.append((level, "HTTP POST .../verify", elapsed, latencies))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    print(f"faceseal HTTP load: {args.requests} verifies per row, {subjects} subjects, server "
          f"threads {args.threads}, {os.cpu_count()} CPUs, loopback")
    print(f"{'clients':>7}  {'path':26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'mean ms':>8} {'in-process/HTTP':>16}")
    baseline = {level: args.requests / elapsed for level, path, elapsed, _ in results
                if path.startswith("in-process")}
    for level, path, elapsed, latencies in sorted(results, key=lambda r: (r[0], r[1])):
        rate = args.requests / elapsed
        ratio = f"{baseline[level] / rate:15.2f}x" if path.startswith("HTTP") else ""
        print(f"{level:7d}  {path:26} {rate:9.0f} {_percentile(latencies, 0.5) * 1e3:8.2f} "
              f"{_percentile(latencies, 0.99) * 1e3:8.2f} "
              f"{statistics.fmean(latencies) * 1e3:8.2f} {ratio:>16}".rstrip())


if __name__ == "__main__":
    main()
