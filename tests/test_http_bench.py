"""bench/http_load.py runs end to end (tiny sizes): every workload at every client count against
one server, the ratios against the one-client row of the same run, JSON results written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT


@pytest.mark.slow
def test_http_load_benchmark_reports_every_level_against_one_client(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "http_load.py"), "--stores", "sqlite",
         "--clients", "1,2", "--workloads", "verify,identify-1k,enrol,mix", "--requests", "20",
         "--seconds", "10", "--subjects", "20", "--big", "0", "--threads", "2",
         "--client-procs", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())["stores"]["sqlite"]["rows"]
    assert [(r["workload"], r["clients"]) for r in rows] == [
        (w, c) for w in ("verify", "identify-1k", "enrol", "mix") for c in (1, 2)]
    for row in rows:
        assert row["requests"] > 0, row
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["rps_vs_1_client"] > 0
        assert row["p99_vs_1_client_p50"] > 0
        # The CPU each request cost the server and the load generator, read off /proc and the
        # clients' own clocks: never zero, and never more than the machine has.
        assert row["server_cpu_ms_per_request"] > 0, row
        assert row["client_cpu_ms_per_request"] > 0, row
        # The whole machine's CPU includes the server's and the clients' (tick rounding aside).
        assert row["machine_cpu_ms_per_request"] >= 0.8 * (
            row["server_cpu_ms_per_request"] + row["client_cpu_ms_per_request"]), row
        assert 0 < row["cpu_busy"] <= 1.05, row
        if row["clients"] == 1:  # what concurrency could gain at most, from that CPU
            cpu = row["machine_cpu_ms_per_request"]
            expected = (os.cpu_count() or 1) * 1e3 / cpu / row["rps"]
            assert row["ceiling_x"] == pytest.approx(expected, rel=0.02), row
    assert "verify" in result.stdout
    assert "x 1-client" in result.stdout
