"""Throughput under concurrent load: a real `faceseal serve` on loopback, 1..64 clients.

    .venv/bin/python bench/http_load.py [--stores sqlite,postgres] [--clients 1,4,16,64]
        [--workloads verify,identify-1k,identify-10k,enrol,mix] [--requests 2000] [--seconds 20]
        [--threads 8] [--workers 1] [--client-procs 4] [--json PATH]
    .venv/bin/python bench/http_load.py --soak 3600 [--stores sqlite] [--json PATH]

For each store, one vault is made (a 1,000-subject gallery in tenant ``g1k``, a 10,000-subject
one in ``g10k``) and one server started; every workload then runs at each client count against
that same server, the one-client row first, so every figure has its baseline from the same run.
Clients are threads in ``--client-procs`` separate processes (plain ``http.client``, one
keep-alive connection each, bodies pre-encoded) so that the load generator is not itself
serialised on one interpreter lock. Each level stops after ``--requests`` requests or
``--seconds`` seconds, whichever comes first; the whole run is bounded and loopback only.

Workloads: ``verify`` (1:1 against a random subject of g1k), ``identify-1k`` / ``identify-10k``
(top-5 in g1k / g10k), ``enrol`` (one new subject, one template per request) and ``mix``
(70% verify, 20% identify-1k, 8% enrol, 2% erasure of a subject the same client enrolled).

Reported per row: req/s, p50, p99, errors (any non-2xx) and 5xx, and the ratios the issue asks
for: throughput against the one-client row, p99 against the one-client p50. ``uptime`` load is
recorded before and after: the machine is shared, so read ratios, not absolute figures.

Each HTTP row also says what a request cost in CPU: the server's (its processes, from /proc),
the load generator's (the clients' own clocks) and the whole machine's (``/proc/stat``, so a
PostgreSQL server's work counts too), and how busy the cores were. From the one-client row comes
``ceiling_x``: cores / (machine CPU per request) / (one-client rate), the most *any* number of
clients could gain over one on this machine, however well the server scaled.

``--soak SECONDS`` runs the mix at 16 clients for that long instead, then stops the server and
checks, in-process against the store: no 5xx, every template a client was told was enrolled is
there exactly once and nothing else (erased subjects gone), and the audit chain verifies. The
server's resident memory is sampled every 10 s and its slope after warm-up reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TENANTS = {"identify-1k": "g1k", "identify-10k": "g10k"}
PRINCIPALS = 48
MIX = (("verify", 70), ("identify-1k", 20), ("enrol", 8), ("erase", 2))


# --- the client side (runs in its own process: `http_load.py --client SPEC.json`) -------------


def _client_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    bodies = json.loads(Path(spec["payloads"]).read_text())
    host, port = spec["host"], spec["port"]
    headers = {"Authorization": f"Bearer {spec['key']}", "Content-Type": "application/json"}
    deadline = spec["start_at"] + spec["seconds"]
    budget = [spec["requests"]]
    lock = threading.Lock()
    results: list[dict[str, Any]] = []

    def take() -> bool:
        with lock:
            if budget[0] <= 0 or time.time() >= deadline:
                return False
            budget[0] -= 1
            return True

    def run(number: int) -> None:
        rng = random.Random(f"{spec['name']}-{number}")
        conn = http.client.HTTPConnection(host, port, timeout=120)
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        enrolled: dict[str, list[str]] = {}
        erased: list[str] = []
        mine: list[str] = []
        counter = 0
        kinds = [k for k, w in MIX for _ in range(w)]

        def call(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
            nonlocal conn
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
                return 599, b""  # a transport failure counts as a server error

        while time.time() < spec["start_at"]:
            time.sleep(0.001)
        while take():
            kind = spec["workload"]
            if kind == "mix":
                kind = rng.choice(kinds)
                if kind == "erase" and not mine:
                    kind = "enrol"
            i = rng.randrange(len(bodies["verify"]))
            if kind == "verify":
                method, path, body = ("POST", f"/v1/tenants/g1k/subjects/{bodies['subjects'][i]}"
                                      "/verify", bodies["verify"][i].encode())
            elif kind in TENANTS:
                method, path, body = ("POST", f"/v1/tenants/{TENANTS[kind]}/identify",
                                      bodies["identify"][i].encode())
            elif kind == "enrol":
                counter += 1
                subject = f"n-{spec['name']}-{number}-{counter}"
                method, path, body = ("POST", f"/v1/tenants/enrol/subjects/{subject}/templates",
                                      bodies["enrol"][i].encode())
            else:
                subject = mine.pop(rng.randrange(len(mine)))
                method, path, body = "DELETE", f"/v1/tenants/enrol/subjects/{subject}", None
            started = time.perf_counter()
            status, payload = call(method, path, body)
            latencies.append(time.perf_counter() - started)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if kind == "enrol" and status == 201:
                enrolled[subject] = json.loads(payload)["template_ids"]
                mine.append(subject)
            elif kind == "erase" and status == 200:
                erased.append(subject)
            elif kind == "erase":
                mine.append(subject)  # not erased: it stays expected in the store
        conn.close()
        with lock:
            results.append({"latencies": latencies, "statuses": statuses,
                            "enrolled": enrolled, "erased": erased})

    threads = [threading.Thread(target=run, args=(n,)) for n in range(spec["threads"])]
    while time.time() < spec["start_at"]:
        time.sleep(0.001)
    cpu = time.process_time()  # the load generator's own CPU, from the clock's start
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append({"cpu_seconds": time.process_time() - cpu})
    json.dump(results, sys.stdout)


# --- the driver ---------------------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else 0.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server and its worker processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _machine_busy_seconds() -> float:
    """CPU time every process of the machine spent so far (all cores; idle and I/O wait
    excluded): the server, its clients *and* a database server such as PostgreSQL."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _drive(root: Path, url: tuple[str, int], key: str, payloads: Path, workload: str,
           clients: int, requests: int, seconds: float, procs: int,
           server_pid: int | None = None) -> dict[str, Any]:
    """Run one level: ``clients`` threads over up to ``procs`` processes, started together.

    With ``server_pid``, the CPU the server (and its workers) and the clients spent per request
    is reported too, and from it the most any number of clients could gain on this machine
    (``ceiling_x``, see :func:`_ratios`)."""
    procs = max(1, min(procs, clients))
    split = [clients // procs + (1 if n < clients % procs else 0) for n in range(procs)]
    start_at = time.time() + 1.5  # every process ready before the clock starts
    running = []
    for n, threads in enumerate(split):
        spec = root / f"client-{workload}-{clients}-{n}.json"
        spec.write_text(json.dumps({
            "host": url[0], "port": url[1], "key": key, "payloads": str(payloads),
            "workload": workload, "threads": threads, "start_at": start_at,
            "seconds": seconds, "requests": requests * threads // clients or 1,
            "name": f"{workload}-{clients}-{n}-{os.urandom(3).hex()}"}))
        running.append(subprocess.Popen([sys.executable, __file__, "--client", str(spec)],
                                        stdout=subprocess.PIPE))
    while time.time() < start_at:
        time.sleep(0.001)
    server_cpu = _cpu_seconds(server_pid) if server_pid else 0.0
    machine_cpu = _machine_busy_seconds()
    parts: list[dict[str, Any]] = []
    for process in running:
        out, _ = process.communicate(timeout=seconds + 600)
        if process.returncode != 0:
            raise SystemExit(f"a client process failed ({process.returncode})")
        parts.extend(json.loads(out))
    elapsed = time.time() - start_at
    machine_cpu = _machine_busy_seconds() - machine_cpu
    if server_pid:
        server_cpu = _cpu_seconds(server_pid) - server_cpu
    client_cpu = sum(p.pop("cpu_seconds") for p in parts if "cpu_seconds" in p)
    parts = [p for p in parts if "latencies" in p]
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[str, int] = {}
    for part in parts:
        for code, count in part["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    done = len(latencies)
    errors = sum(n for code, n in statuses.items() if not code.startswith("2"))
    return {
        "workload": workload, "clients": clients, "requests": done,
        "seconds": round(elapsed, 3), "rps": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 0.5) * 1e3, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1e3, 2),
        "errors": errors, "status_5xx": sum(n for c, n in statuses.items() if c[0] == "5"),
        "statuses": statuses,
        **({"server_cpu_ms_per_request": round(server_cpu / done * 1e3, 3),
            "client_cpu_ms_per_request": round(client_cpu / done * 1e3, 3),
            "machine_cpu_ms_per_request": round(machine_cpu / done * 1e3, 3),
            "cpu_busy": round(machine_cpu / elapsed / (os.cpu_count() or 1), 3)}
           if server_pid and done else {}),
        "enrolled": {s: t for p in parts for s, t in p["enrolled"].items()},
        "erased": [s for p in parts for s in p["erased"]],
    }


def _start_server(home: Path, root: Path, threads: int, workers: int
                  ) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    port_file = root / "port"
    port_file.unlink(missing_ok=True)
    log = (root / "serve.log").open("ab")
    command = [sys.executable, "-m", "faceseal", "serve", "--vault", str(home), "--port", "0",
               "--port-file", str(port_file), "--threads", str(threads)]
    if workers > 1:  # console sessions live in one process: workers serve the API only
        command += ["--workers", str(workers), "--no-console"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"faceseal serve did not start; see {root / 'serve.log'}")
        time.sleep(0.05)
    address = ("127.0.0.1", int(port_file.read_text()))
    while True:
        try:
            conn = http.client.HTTPConnection(*address, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return process, address
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"faceseal serve never became ready; see {root / 'serve.log'}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _warm_up(address: tuple[str, int], key: str, payloads: Path, workloads: list[str],
             workers: int) -> None:
    """Before any clock starts: every worker loads the galleries the workloads search (a load is
    a one-off decryption of the tenant, not what a request costs once a replica runs)."""
    bodies = json.loads(payloads.read_text())
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    tenants = {TENANTS[w] for w in workloads if w in TENANTS}
    if "mix" in workloads:
        tenants.add("g1k")
    for tenant in sorted(tenants):
        for _ in range(4 * workers):  # a new connection each: the kernel spreads them
            conn = http.client.HTTPConnection(*address, timeout=300)
            conn.request("POST", f"/v1/tenants/{tenant}/identify",
                         body=bodies["identify"][0].encode(), headers=headers)
            status = conn.getresponse().status
            conn.close()
            if status != 200:
                raise SystemExit(f"warm-up identify answered {status}")


def _rss_bytes(pid: int) -> int:
    """Resident memory of the server and its worker processes."""
    total = 0
    for one in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _make_vault(root: Path, store: str, subjects: int, big: int
                ) -> tuple[Path, str, Any, Path, str]:
    import numpy as np  # noqa: PLC0415 - the client processes do not need it

    from faceseal.bench.runner import lift_budgets  # noqa: PLC0415
    from faceseal.bench.synthetic import make_gallery  # noqa: PLC0415
    from faceseal.vault import Vault  # noqa: PLC0415

    pg = None
    store_url = None
    if store == "postgres":
        sys.path.insert(0, str(HERE))
        from storage_bench import PgBench  # noqa: PLC0415

        pg = PgBench(os.environ.get("FACESEAL_BENCH_PG_URL",
                                    "postgresql://postgres@127.0.0.1:5432/postgres"))
        store_url = pg.store_url()
    home = root / store / "vault"
    small = make_gallery(subjects, per_subject=1, probes=subjects, seed=11)
    with Vault.create(home, keyring_dir=root / store / "keys", store_url=store_url) as admin:
        # One principal per measured level: a principal's query budget is counted from every
        # event in its window, so a level run after others with the same key would pay for
        # their traffic (see docs/performance.md).
        keys = [admin.add_principal(f"bench-{n}", ["enroller", "verifier", "identifier"],
                                    all_tenants=True).api_key for n in range(PRINCIPALS)]
        key = keys[0]
        (root / store / "keys.json").write_text(json.dumps(keys))
        admin_key = admin.add_principal("auditor", ["auditor"], all_tenants=True).api_key
        lift_budgets(admin)
        loader = admin.as_key(key)
        loader.enroll_many(small.subject_ids, small.encodings, tenant="g1k")
        if big:
            large = make_gallery(big, per_subject=1, probes=1, seed=12)
            loader.enroll_many(large.subject_ids, large.encodings, tenant="g10k")
    rng = np.random.default_rng(13)
    order = [small.subject_ids.index(s) for s in small.probe_subjects]
    payloads = root / store / "payloads.json"
    payloads.write_text(json.dumps({
        "subjects": small.probe_subjects,
        "verify": [json.dumps({"encoding": p.tolist()}) for p in small.probes],
        "identify": [json.dumps({"encoding": p.tolist(), "top_k": 5}) for p in small.probes],
        "enrol": [json.dumps({"encodings": [(small.encodings[j] + rng.standard_normal(128)
                                             * 0.002).tolist()]}) for j in order],
    }))
    return home, key, pg, payloads, admin_key


def _ratios(rows: list[dict[str, Any]]) -> None:
    base = {r["workload"]: r for r in rows if r["clients"] == 1}
    for row in rows:
        one = base.get(row["workload"])
        if one and one["rps"] and one["p50_ms"]:
            row["rps_vs_1_client"] = round(row["rps"] / one["rps"], 2)
            row["p99_vs_1_client_p50"] = round(row["p99_ms"] / one["p50_ms"], 2)
        if one and row is one and "server_cpu_ms_per_request" in row:
            # The most any number of clients could gain over one on this machine: every core
            # kept busy with the CPU one request costs the whole machine (server, load
            # generator, database server), against the one-client rate. One client leaves the
            # cores idle only while a request waits (an fsync, the loopback); if they are busy
            # for most of its wall time, concurrency has little idle time to fill, whatever
            # the locking.
            cpu = row["machine_cpu_ms_per_request"]
            if cpu > 0:
                row["ceiling_x"] = round((os.cpu_count() or 1) * 1e3 / cpu / row["rps"], 2)


def _print(store: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{store}:\n{'workload':26} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'5xx':>4} {'x 1-client':>10} {'p99/1-client p50':>17} {'tx/commit':>9} "
          f"{'srv cpu ms':>10} {'cli cpu ms':>10} {'all cpu ms':>10} {'busy':>5} {'ceiling x':>9}")
    for r in rows:
        print(f"{r['workload']:26} {r['clients']:7d} {r['rps']:8.1f} "
              f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d} {r['status_5xx']:4d} "
              f"{r.get('rps_vs_1_client', 0):10.2f} {r.get('p99_vs_1_client_p50', 0):17.2f} "
              f"{r.get('transactions_per_commit', ''):>9} "
              f"{r.get('server_cpu_ms_per_request', ''):>10} "
              f"{r.get('client_cpu_ms_per_request', ''):>10} "
              f"{r.get('machine_cpu_ms_per_request', ''):>10} {r.get('cpu_busy', ''):>5} "
              f"{r.get('ceiling_x', ''):>9}")


def _check_store(home: Path, key: str, enrolled: dict[str, list[str]], erased: list[str]
                 ) -> dict[str, Any]:
    """Count the soak's templates against the store, and verify the audit chain."""
    from faceseal.vault import Vault  # noqa: PLC0415

    gone = set(erased)
    expected = {s: sorted(t) for s, t in enrolled.items() if s not in gone}
    with Vault.open(home, api_key=key) as vault:
        found: dict[str, list[str]] = {}
        for info in vault.subjects(tenant="enrol"):
            rows = vault._store.subject_templates("enrol", info.subject_id)
            found[info.subject_id] = sorted(r.template_id for r in rows)
    lost = sum(len(set(t) - set(found.get(s, []))) for s, t in expected.items())
    extra = sum(len(set(t) - set(expected.get(s, []))) for s, t in found.items())
    duplicated = sum(len(t) - len(set(t)) for t in found.values())
    return {"expected_templates": sum(len(t) for t in expected.values()),
            "found_templates": sum(len(t) for t in found.values()),
            "lost": lost, "unexpected": extra, "duplicated": duplicated,
            "erased_subjects_still_present": len(gone & set(found))}


def _audit_verify(home: Path, auditor_key: str) -> dict[str, Any]:
    from faceseal.vault import Vault  # noqa: PLC0415

    with Vault.open(home, api_key=auditor_key) as vault:
        report = vault.audit_verify()
    return {"ok": report.ok, "events": report.events, "problem": report.problem}


def _slope(samples: list[tuple[float, int]], warmup: float) -> float:
    """Least-squares RSS slope in MB per hour over the samples after ``warmup`` seconds."""
    points = [(t, r / 1e6) for t, r in samples if t >= warmup]
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (r - mr) for t, r in points) / var * 3600 if var else 0.0


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        _client_main(sys.argv[2])
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups below
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--workloads", default="verify,identify-1k,identify-10k,enrol,mix")
    parser.add_argument("--requests", type=int, default=2000, help="per level, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level, at most")
    parser.add_argument("--subjects", type=int, default=1000, help="the g1k gallery's size")
    parser.add_argument("--big", type=int, default=10_000, help="the g10k gallery's size")
    parser.add_argument("--threads", type=int, default=8, help="server thread pool size")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--in-process", action="store_true",
                        help="also run verify/identify through Vault in this process (no HTTP)")
    parser.add_argument("--soak", type=float, default=0.0, help="soak for this many seconds")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="faceseal-bench-http-"))
    report: dict[str, Any] = {"load_before": _load(), "cpus": os.cpu_count(),
                              "threads": args.threads, "workers": args.workers, "stores": {}}
    try:
        for store in args.stores.split(","):
            report["stores"][store] = (_soak(args, root, store) if args.soak
                                       else _levels(args, root, store))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_after"] = _load()
    print(f"\nload before {report['load_before']}, after {report['load_after']} "
          f"({report['cpus']} CPUs); server threads {args.threads}, workers {args.workers}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def _in_process(home: Path, key: str, payloads: Path, workload: str, clients: int,
                requests: int, seconds: float) -> dict[str, Any]:
    """The same workload through one open vault in this process (no HTTP): C threads, shared
    counters in the store as the server uses them; reports how many operations shared each
    durable commit (group commit)."""
    import numpy as np  # noqa: PLC0415

    from faceseal.vault import Vault  # noqa: PLC0415

    bodies = json.loads(payloads.read_text())
    probes = [np.asarray(json.loads(b)["encoding"]) for b in bodies["verify"]]
    with Vault.open(home) as vault:
        vault.use_query_counters(vault.shared_counters())
        group = vault._store._group  # type: ignore[attr-defined]
        vault.as_key(key).identify(probes[0], tenant=TENANTS.get(workload, "g1k"))  # warm
        commits, members = group.commits, group.members_committed
        latencies: list[float] = []
        lock = threading.Lock()
        left = [requests]
        deadline = time.monotonic() + seconds

        def run(number: int) -> None:
            view = vault.as_key(key)
            rng = random.Random(number)
            mine: list[float] = []
            while time.monotonic() < deadline:
                with lock:
                    if left[0] <= 0:
                        break
                    left[0] -= 1
                i = rng.randrange(len(probes))
                started = time.perf_counter()
                if workload == "verify":
                    view.verify(bodies["subjects"][i], probes[i], tenant="g1k")
                else:
                    view.identify(probes[i], tenant=TENANTS[workload])
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        batches = group.commits - commits
        shared = group.members_committed - members
    return {"workload": f"{workload} (in-process)", "clients": clients,
            "requests": len(latencies), "seconds": round(elapsed, 3),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(_percentile(latencies, 0.5) * 1e3, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1e3, 2), "errors": 0,
            "status_5xx": 0, "commits": batches,
            "transactions_per_commit": round(shared / batches, 2) if batches else 0.0}


def _levels(args: argparse.Namespace, root: Path, store: str) -> dict[str, Any]:
    levels = [int(c) for c in args.clients.split(",")]
    workloads = args.workloads.split(",")
    home, key, pg, payloads, _ = _make_vault(root, store, args.subjects,
                                             args.big if "identify-10k" in workloads else 0)
    rows: list[dict[str, Any]] = []
    try:
        process, url = _start_server(home, root / store, args.threads, args.workers)
        try:
            _warm_up(url, key, payloads, workloads, args.workers)
            fresh = iter(json.loads((root / store / "keys.json").read_text())[1:])
            for workload in workloads:
                for clients in levels:
                    row = _drive(root / store, url, next(fresh), payloads, workload, clients,
                                 args.requests, args.seconds, args.client_procs, process.pid)
                    row.pop("enrolled")
                    row.pop("erased")
                    row["load"] = _load()
                    rows.append(row)
        finally:
            _stop(process)
        for workload in [w for w in workloads if args.in_process
                         and (w == "verify" or w in TENANTS)]:
            for clients in levels:
                row = _in_process(home, next(fresh), payloads, workload, clients,
                                  args.requests, args.seconds)
                row["load"] = _load()
                rows.append(row)
    finally:
        if pg is not None:
            pg.drop()
    _ratios(rows)
    _print(store, rows)
    return {"rows": rows}


def _soak(args: argparse.Namespace, root: Path, store: str) -> dict[str, Any]:
    home, key, pg, payloads, admin_key = _make_vault(root, store, args.subjects, 0)
    samples: list[tuple[float, int]] = []
    result: dict[str, Any] = {}
    try:
        process, url = _start_server(home, root / store, args.threads, args.workers)
        _warm_up(url, key, payloads, ["mix"], args.workers)
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.wait(10):
                samples.append((time.monotonic() - started, _rss_bytes(process.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            row = _drive(root / store, url, key, payloads, "mix", 16, 10**9, args.soak,
                         args.client_procs)
        finally:
            stop.set()
            _stop(process)
        result["load"] = {"rows": [row | {"enrolled": len(row["enrolled"]),
                                          "erased": len(row["erased"])}]}
        result["store_check"] = _check_store(home, key, row["enrolled"], row["erased"])
        result["audit"] = _audit_verify(home, admin_key)
        warmup = min(600.0, args.soak * 0.2)
        result["rss"] = {"samples": len(samples), "warmup_s": warmup,
                         "first_mb": round(samples[0][1] / 1e6, 1) if samples else None,
                         "last_mb": round(samples[-1][1] / 1e6, 1) if samples else None,
                         "slope_mb_per_hour": round(_slope(samples, warmup), 2),
                         "series": [(round(t), r) for t, r in samples]}
    finally:
        if pg is not None:
            pg.drop()
    print(json.dumps({k: v for k, v in result.items() if k != "rss"} |
                     {"rss": {k: v for k, v in result["rss"].items() if k != "series"}},
                     indent=1))
    return result


if __name__ == "__main__":
    main()
