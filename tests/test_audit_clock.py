"""Checkpoints on a clock: events left idle are covered within the interval, whatever the traffic.

The attack this closes: a server writes a few events and then sits idle; an attacker with write
access to the database deletes those newest events, the server is SIGKILLed (no clean close, so no
final checkpoint) and restarted. Without a timed checkpoint the shorter chain verified as intact.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from faceseal.audit.clock import CheckpointClock

from .conftest import invoke_cli, make_vault, random_encodings
from .http_server import prepare_vault, start_server, stop_server, wait_healthy
from .test_audit_tamper import attack


def _head(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (head,) = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()
    return int(head)


def test_idle_events_are_covered_by_a_checkpoint_within_the_interval(tmp_path: Path) -> None:
    with make_vault(tmp_path / "vault", tmp_path / "keys") as vault:
        time.sleep(1.1)  # the last checkpoint is old: the next commit would take one at once
        vault.enroll("alice", random_encodings(1, seed=1))
        vault.subjects()  # a second event right after: not covered by a count or age rule
        head = _head(tmp_path / "vault" / "templates.db")
        state = vault._audit.state
        latest = state.latest_checkpoint()
        assert latest is not None
        assert latest.seq < head, "the newest event should not be covered yet"
        time.sleep(2.0)  # idle: no further event
        latest = state.latest_checkpoint()
        assert latest is not None
        assert latest.seq == head


def test_the_clock_runs_once_per_arming_and_stops() -> None:
    calls: list[float] = []
    fired = threading.Event()

    def action() -> None:
        calls.append(time.monotonic())
        fired.set()

    clock = CheckpointClock(0.2, action)
    armed_at = time.monotonic()
    clock.arm()
    clock.arm()  # already due: no second run
    assert fired.wait(5)
    assert 0.15 <= calls[0] - armed_at < 2.0
    time.sleep(0.4)
    assert len(calls) == 1
    clock.arm()
    clock.disarm()  # the work was done elsewhere
    time.sleep(0.4)
    assert len(calls) == 1
    clock.stop()
    clock.arm()  # stopped: never runs again
    time.sleep(0.4)
    assert len(calls) == 1


@pytest.mark.slow
def test_deleting_idle_events_then_sigkill_is_found(tmp_path: Path) -> None:
    home, _, keys = prepare_vault(tmp_path)
    db = home / "templates.db"
    log_path = tmp_path / "serve.log"
    process, url = start_server(home, log_path)
    try:
        wait_healthy(url, process)
        time.sleep(1.1)
        encoding = random_encodings(1, seed=3)[0].tolist()
        with httpx.Client(base_url=url, timeout=30) as http:
            enrolled = http.post("/v1/tenants/acme/subjects/alice/templates",
                                 headers={"Authorization": f"Bearer {keys['enroller']}"},
                                 json={"encodings": [encoding]})
            assert enrolled.status_code in (200, 201), enrolled.text
            before = _head(db)
            for _ in range(3):
                verified = http.post("/v1/tenants/acme/subjects/alice/verify",
                                     headers={"Authorization": f"Bearer {keys['verifier']}"},
                                     json={"encoding": encoding})
                assert verified.status_code == 200, verified.text
        head = _head(db)
        assert head >= before + 3
        time.sleep(2.0)  # idle
        attack(db, ("DELETE FROM audit_events WHERE seq > ?", (before,)))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    process, url = start_server(home, log_path)
    try:
        wait_healthy(url, process)
    finally:
        stop_server(process)
    env = {"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": keys["auditor-all"]}
    done = invoke_cli("audit", "verify", env=env)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "BROKEN" in done.stdout + done.stderr
