"""Real key services for the tests and the benchmark: a SoftHSM2 token directory, an OpenBao dev
server and the moto KMS emulator, each on loopback and on a free port, each started and stopped
by the code that needs it. No fixed ports, no fixed names: other test runs share the machine.

Also the pytest fixtures built on them (imported by ``conftest.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN_ENV = "FACESEAL_PKCS11_PIN"
BAO_TOKEN_ENV = "FACESEAL_TEST_BAO_TOKEN"
AWS_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (pip install -e '.[dev]')")
    return found


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout} s")


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is in the stopped state (SIGSTOP is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not stop")


class _Server:
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server process stopped (SIGSTOP): it holds its port but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        _wait_stopped(self.process.pid)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


@dataclass
class SoftHsm:
    """A SoftHSM2 configuration whose token directory is a temporary folder."""

    root: Path
    conf: Path = field(init=False)

    def __post_init__(self) -> None:
        (self.root / "tokens").mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.root / 'tokens'}\n"
                             "objectstore.backend = file\nlog.level = ERROR\n")

    def init_token(self, label: str, pin: str, so_pin: str = "so-pin-0000") -> None:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", so_pin],
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)}, check=True,
            capture_output=True,
        )

    def uri(self, token: str, key_label: str, pin_env: str = PIN_ENV) -> str:
        return (f"pkcs11:token={token};object={key_label}?module-path={SOFTHSM_MODULE}"
                f"&pin-source=env:{pin_env}")


class OpenBao(_Server):
    """``bao server -dev`` on a free loopback port with a random root token, transit enabled."""

    def __init__(self) -> None:
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.address = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [executable("bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
             f"-dev-root-token-id={self.token}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")},
        )
        _wait_port(self.port, self.process)
        import hvac

        client = hvac.Client(url=self.address, token=self.token, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.sys.enable_secrets_engine("transit", path="transit")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def uri(self, key: str, token_env: str = BAO_TOKEN_ENV, timeout: float | None = None) -> str:
        extra = f"&timeout={timeout}" if timeout else ""
        return f"vault-transit:{self.address}/transit/{key}?token-source=env:{token_env}{extra}"


class MotoKms(_Server):
    """``moto_server`` (the AWS emulator) on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [executable("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.process)

    def uri(self, alias: str, timeout: float | None = None) -> str:
        extra = f"&timeout={timeout}&attempts=1" if timeout else ""
        return f"aws-kms:alias/{alias}?region={AWS_REGION}&endpoint={self.endpoint}{extra}"


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": AWS_REGION,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


# --- pytest fixtures -----------------------------------------------------------------------------


@dataclass
class HsmSetup:
    hsm: SoftHsm
    token: str
    pin: str
    #: A second token that no session in this process ever stays logged in to (for PIN tests).
    lonely_token: str


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HsmSetup]:
    """One SoftHSM2 token directory for the test session (PKCS#11 reads its configuration once
    per process), with two tokens; ``SOFTHSM2_CONF`` and the PIN variable are set."""
    assert Path(SOFTHSM_MODULE).exists(), "SoftHSM2 missing: apt-get install -y softhsm2"
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
    pin = uuid.uuid4().hex[:8]
    token, lonely = unique("fs-test"), unique("fs-lonely")
    hsm.init_token(token, pin)
    hsm.init_token(lonely, pin)
    saved = {name: os.environ.get(name) for name in ("SOFTHSM2_CONF", PIN_ENV)}
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    os.environ[PIN_ENV] = pin
    yield HsmSetup(hsm, token, pin, lonely)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    server = OpenBao()
    saved = os.environ.get(BAO_TOKEN_ENV)
    os.environ[BAO_TOKEN_ENV] = server.token
    yield server
    server.stop()
    if saved is None:
        os.environ.pop(BAO_TOKEN_ENV, None)
    else:
        os.environ[BAO_TOKEN_ENV] = saved


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """Fake credentials for the emulator (never real ones), set for the whole session."""
    saved = {name: os.environ.get(name) for name in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield dict(AWS_ENV)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_kms(aws_env: dict[str, str]) -> Iterator[MotoKms]:
    server = MotoKms()
    yield server
    server.stop()


@dataclass
class KeyBackend:
    """One kind of key provider, ready for tests: fresh key URIs and the environment that a
    subprocess (the CLI) needs to reach it."""

    kind: str
    root: Path
    env: dict[str, str]
    server: _Server | None = None
    hsm: HsmSetup | None = None

    def new_uri(self) -> str:
        name = unique("fs-kek")
        if self.kind == "local":
            return f"local:{self.root / name}"
        if self.kind == "pkcs11":
            assert self.hsm is not None
            return self.hsm.hsm.uri(self.hsm.token, name)
        if self.kind == "vault-transit":
            assert isinstance(self.server, OpenBao)
            return self.server.uri(name)
        assert isinstance(self.server, MotoKms)
        return self.server.uri(name)


KINDS = ["local", "pkcs11", "vault-transit", "aws-kms"]


def make_backend(kind: str, request: pytest.FixtureRequest, root: Path) -> KeyBackend:
    if kind == "local":
        return KeyBackend(kind, root, {})
    if kind == "pkcs11":
        hsm: HsmSetup = request.getfixturevalue("softhsm")
        return KeyBackend(kind, root, {"SOFTHSM2_CONF": str(hsm.hsm.conf), PIN_ENV: hsm.pin},
                          hsm=hsm)
    if kind == "vault-transit":
        bao: OpenBao = request.getfixturevalue("openbao")
        return KeyBackend(kind, root, {BAO_TOKEN_ENV: bao.token}, server=bao)
    moto: MotoKms = request.getfixturevalue("moto_kms")
    return KeyBackend(kind, root, dict(AWS_ENV), server=moto)


@pytest.fixture(params=KINDS)
def key_backend(request: pytest.FixtureRequest, tmp_path: Path) -> KeyBackend:
    """Each provider kind in turn (local keyring, SoftHSM2, OpenBao transit, moto KMS)."""
    return make_backend(str(request.param), request, tmp_path / "local-keys")


@pytest.fixture(params=KINDS[1:])
def remote_backend(request: pytest.FixtureRequest, tmp_path: Path) -> KeyBackend:
    """Each provider kind that is not the local keyring."""
    return make_backend(str(request.param), request, tmp_path / "local-keys")
