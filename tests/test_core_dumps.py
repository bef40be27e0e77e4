"""Core dumps are an attack on a process holding keys: crash a real server and look for the core.

The server is started the way an operator would start it after ``ulimit -c unlimited``, given a
few requests (so that it holds the KEK, data keys, subject secrets, API keys and a decrypted
template), then killed with SIGSEGV. Without the opt-out no core file may appear; with
``FACESEAL_ALLOW_CORE_DUMPS=1`` (the control: proves this test would see a core and find the
secrets in it) the core appears and holds them.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceseal.crypto.secret import SecretBytes
from faceseal.crypto.secure_memory import secret_memory_status
from faceseal.keys.process_guard import ALLOW_CORE_DUMPS_ENV

from .http_server import prepare_vault, wait_healthy

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


def _unlimited_core() -> None:
    # `ulimit -c unlimited` in the child (the test process itself may have dumps off already).
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _core_lands_in_cwd() -> bool:
    pattern = CORE_PATTERN.read_text().strip() if CORE_PATTERN.exists() else ""
    return bool(pattern) and not pattern.startswith("|") and "/" not in pattern


def _secrets(home: Path, keys_dir: Path, api_keys: list[str],
             encoding: np.ndarray) -> dict[str, list[bytes]]:
    keyring = json.loads((keys_dir / "keyring.json").read_text())
    hexes = [k["key"] for k in keyring["keys"]["keks"]]
    keks = [bytes.fromhex(h) for h in hexes] + [h.encode() for h in hexes]
    with sqlite3.connect(keys_dir / "subject-keys.db") as db:
        subject_secrets = [bytes(row[0]) for row in db.execute(
            "SELECT secret FROM subject_secrets")]
    return {
        "kek": keks,
        "subject secret": subject_secrets,
        "api key": [k.encode() for k in api_keys],
        "template": [encoding.astype(np.float64).tobytes()],
    }


def _crash_served(tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict[str, list[bytes]],
                                                                  int, str]:
    home, keys_dir, keys = prepare_vault(tmp_path / "v")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    port_file = tmp_path / "port"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "faceseal", "serve", "--vault", str(home), "--port", "0",
             "--port-file", str(port_file)],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
            preexec_fn=_unlimited_core,  # noqa: PLW1509 - no threads started in between
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        wait_healthy(url, process)
        encoding = np.random.default_rng(7).normal(0, 0.1, 128)
        with httpx.Client(base_url=url, timeout=30) as http:
            enrolled = http.post("/v1/tenants/acme/subjects/alice/templates",
                                 headers={"Authorization": f"Bearer {keys['enroller']}"},
                                 json={"encodings": [encoding.tolist()]})
            assert enrolled.status_code in (200, 201), enrolled.text
            verified = http.post("/v1/tenants/acme/subjects/alice/verify",
                                 headers={"Authorization": f"Bearer {keys['verifier']}"},
                                 json={"encoding": encoding.tolist()})
            assert verified.status_code == 200, verified.text
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        process.send_signal(signal.SIGSEGV)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    secrets = _secrets(home, keys_dir, [keys["enroller"], keys["verifier"]], encoding)
    return workdir, secrets, process.returncode, limits


def _core_files(workdir: Path) -> list[Path]:
    return [p for p in workdir.iterdir() if p.name.startswith("core")]


@pytest.mark.slow
def test_a_crashed_server_leaves_no_core(tmp_path: Path) -> None:
    workdir, _, returncode, limits = _crash_served(tmp_path, {})
    assert returncode == -signal.SIGSEGV
    core_line = next(line for line in limits.splitlines() if line.startswith("Max core"))
    assert core_line.split()[4] == "0", core_line  # the soft limit, lowered by the server
    assert _core_files(workdir) == []


@pytest.mark.slow
def test_the_opt_out_leaves_core_dumps_on(tmp_path: Path) -> None:
    """The control: the same crash with the documented opt-out writes a core, and that core
    holds secrets (which is why dumps are off by default)."""
    if not _core_lands_in_cwd():
        pytest.skip("kernel.core_pattern does not write cores into the working directory here")
    workdir, secrets, returncode, _ = _crash_served(tmp_path, {ALLOW_CORE_DUMPS_ENV: "1"})
    assert returncode == -signal.SIGSEGV
    cores = _core_files(workdir)
    assert len(cores) == 1
    data = cores[0].read_bytes()
    found = {kind for kind, values in secrets.items() if any(v in data for v in values)}
    assert found, "a core with dumps on should hold some secret"
    print("secrets found in the opt-out core:", sorted(found))


def _vm_flags(address: int) -> set[str]:
    """The VmFlags of the mapping holding ``address`` in this process."""
    current: tuple[int, int] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            current = (start, end)
        elif line.startswith("VmFlags:") and current and current[0] <= address < current[1]:
            return set(line.split()[1:])
    raise AssertionError("address not mapped")


def _address(secret: SecretBytes) -> int:
    view = secret._SecretBytes__slot.view()  # type: ignore[attr-defined]
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.mark.parametrize("size", [0, 32, 100, 4096, 10_000])
def test_secret_bytes_live_in_memory_kept_out_of_dumps(size: int) -> None:
    value = os.urandom(size) if size else b""
    secret = SecretBytes(value)
    assert secret.reveal() == value
    if size == 0:
        return
    flags = _vm_flags(_address(secret))
    assert "dd" in flags  # MADV_DONTDUMP
    if secret_memory_status().lock_refused is None:
        assert "lo" in flags  # mlock-ed


def test_a_freed_secret_is_zeroed_before_reuse() -> None:
    secret = SecretBytes(b"\xaa" * 32)
    view = secret._SecretBytes__slot._view  # type: ignore[attr-defined]
    offset = secret._SecretBytes__slot._offset  # type: ignore[attr-defined]
    del secret
    assert bytes(view[offset:offset + 32]) == bytes(32)


def test_vault_open_turns_core_dumps_off(tmp_path: Path) -> None:
    from .conftest import make_vault

    home, keys = tmp_path / "vault", tmp_path / "keys"
    make_vault(home, keys).close()
    script = (
        "import ctypes, resource, sys\n"
        "from faceseal.vault import Vault\n"
        "libc = ctypes.CDLL(None)\n"
        "before = (resource.getrlimit(resource.RLIMIT_CORE)[0], libc.prctl(3, 0, 0, 0, 0))\n"
        f"Vault.open({str(home)!r}).close()\n"
        "after = (resource.getrlimit(resource.RLIMIT_CORE)[0], libc.prctl(3, 0, 0, 0, 0))\n"
        "print(before, after)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ALLOW_CORE_DUMPS_ENV}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True, preexec_fn=_unlimited_core).stdout
    assert out.split() == ["(-1,", "1)", "(0,", "0)"]
