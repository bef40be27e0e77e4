"""``faceseal serve --workers N``: several processes on one socket, each a full replica.

Each worker holds its own galleries and follows the change log, so a write answered by one
worker is seen by the next request whichever worker takes it, and an erasure that returned is
never undone by a worker that had the subject in memory. SIGTERM stops every worker; a
configuration that would give each worker its own budgets is refused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import random_encodings
from .http_server import served_vault, stop_server


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
def test_two_workers_answer_each_others_writes_and_stop_together(tmp_path: Path) -> None:
    encodings = random_encodings(6, seed=31)
    with served_vault(tmp_path, "--workers", "2", "--no-console") as served:
        workers = _children(served.process.pid)
        assert len(workers) == 2
        headers = {"Authorization": f"Bearer {served.keys['worker']}"}
        base = "/v1/tenants/default"

        def fresh() -> httpx.Client:  # a new connection: any worker may take it
            return httpx.Client(base_url=served.url, headers=headers, timeout=30)

        for i, encoding in enumerate(encodings[:5]):
            with fresh() as client:
                assert client.post(f"{base}/subjects/p{i}/templates",
                                   json={"encodings": [encoding.tolist()]}).status_code == 201
        for _ in range(3):  # every worker has loaded the gallery, whoever enrolled
            for i, encoding in enumerate(encodings[:5]):
                with fresh() as client:
                    found = client.post(f"{base}/identify",
                                        json={"encoding": encoding.tolist(), "top_k": 1}).json()
                assert [c["subject_id"] for c in found["candidates"]] == [f"p{i}"]
        with fresh() as client:
            assert client.delete(f"{base}/subjects/p0").status_code == 200
            assert client.post(f"{base}/subjects/p5/templates",
                               json={"encodings": [encodings[5].tolist()]}).status_code == 201
        for _ in range(6):
            with fresh() as client:
                gone = client.post(f"{base}/identify",
                                   json={"encoding": encodings[0].tolist(), "top_k": 5}).json()
                new = client.post(f"{base}/subjects/p5/verify",
                                  json={"encoding": encodings[5].tolist()}).json()
            assert "p0" not in [c["subject_id"] for c in gone["candidates"]]
            assert new["match"] is True
        assert stop_server(served.process) == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                    and "zombie" not in Path(f"/proc/{pid}/status").read_text()]


@pytest.mark.parametrize(("extra", "reason"), [
    (["--rate-limits", "memory", "--no-console"], "shared counters"),
    ([], "--no-console"),  # console sessions live in one process's memory
])
def test_workers_that_would_split_state_are_refused(tmp_path: Path, extra: list[str],
                                                   reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faceseal", "serve", "--vault", str(tmp_path / "none"),
         "--workers", "2", "--port", "0", *extra],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert reason in result.stderr
