"""A real ``faceseal serve`` process on 127.0.0.1 for the HTTP tests and the benchmark.

The vault is made with the usual test helper (``make_vault``), then served by a subprocess
started the way an operator starts it (``python -m faceseal serve --port 0 --port-file F``): the
kernel picks a free port, so parallel test runs never collide. Principals for each role are
created beforehand through the Python API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faceseal.client import FacesealClient
from faceseal.vault import Vault

from .conftest import make_vault, vault_keys

#: Principals every served test vault has, tenant-scoped to ``acme`` unless named "-all".
ROLE_PRINCIPALS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "enroller": (("enroller",), "acme"),
    "verifier": (("verifier",), "acme"),
    "calibrator": (("verifier", "identifier", "calibrator"), "acme"),
    "identifier": (("identifier",), "acme"),
    "auditor": (("auditor",), "acme"),
    "auditor-all": (("auditor",), None),
    "admin-acme": (("admin",), "acme"),
    "enroller-other": (("enroller",), "other"),
}


@dataclass
class Served:
    """A vault served over HTTP, and the keys of its principals."""

    url: str
    home: Path
    keys_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)
    tmpdir: Path = Path("/nonexistent")

    def client(self, who: str | None = "worker", **options: object) -> FacesealClient:
        key = self.keys[who] if who is not None else None
        return FacesealClient(self.url, key, **options)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)  # type: ignore[arg-type]


def prepare_vault(root: Path, **vault_options: object) -> tuple[Path, Path, dict[str, str]]:
    """A test vault with one principal per role (see :data:`ROLE_PRINCIPALS`), closed."""
    home, keys_dir = root / "vault", root / "keys"
    make_vault(home, keys_dir, **vault_options).close()
    known = vault_keys(home)
    keys = {"admin": known.admin, "worker": known.worker}
    with Vault.open(home, api_key=known.admin) as admin:
        for name, (roles, tenant) in ROLE_PRINCIPALS.items():
            created = admin.add_principal(name, roles, tenant=tenant,
                                          all_tenants=tenant is None)
            keys[name] = created.api_key
    return home, keys_dir, keys


def start_server(home: Path, log_path: Path, *args: str,
                 env: dict[str, str] | None = None, timeout: float = 60.0
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``faceseal serve`` on a free port; return the process and its base URL."""
    port_file = log_path.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    scheme = "https" if "--ssl-certfile" in args else "http"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "faceseal", "serve", "--vault", str(home), "--port", "0",
             "--port-file", str(port_file), "-v", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"faceseal serve exited with {process.returncode}:\n"
                               f"{log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError("faceseal serve did not bind a port in time")
        time.sleep(0.02)
    url = f"{scheme}://127.0.0.1:{int(port_file.read_text())}"
    return process, url


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0,
                 **options: object) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2, **options).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("faceseal serve is not healthy")
        time.sleep(0.05)


def stop_server(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a graceful stop: the vault is closed), then SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


@contextmanager
def served_vault(root: Path, *args: str, env: dict[str, str] | None = None,
                 client_options: dict[str, object] | None = None,
                 vault_options: dict[str, object] | None = None) -> Iterator[Served]:
    """A fresh vault with role principals, served until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    home, keys_dir, keys = prepare_vault(root, **(vault_options or {}))
    log_path = root / "serve.log"
    process, url = start_server(home, log_path, *args, env=env)
    try:
        wait_healthy(url, process, **(client_options or {}))
        yield Served(url, home, keys_dir, process, log_path, keys)
    finally:
        stop_server(process)
