"""bench/http_load.py runs end to end (tiny sizes) and prints its table with the baseline."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import PROJECT_ROOT


@pytest.mark.slow
def test_http_load_benchmark_prints_http_against_in_process() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "http_load.py"), "--requests", "30",
         "--concurrency", "1,2", "--subjects", "10", "--threads", "2"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\s+(\d+)\s+(HTTP POST \.\.\./verify|in-process Vault\.verify)\s+"
                      r"(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)(?:\s+([\d.]+)x)?$",
                      result.stdout, re.MULTILINE)
    assert len(rows) == 4, result.stdout
    for _clients, path, rate, p50, p99, _mean, ratio in rows:
        assert int(rate) > 0
        assert 0 < float(p50) <= float(p99)
        assert bool(ratio) == path.startswith("HTTP")
