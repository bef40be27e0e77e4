"""Shared fixtures: sample photos, their encodings (computed once per session), fresh vaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from faceseal.encoders import DlibResNetEncoder
from faceseal.errors import AuthenticationFailed, Conflict
from faceseal.vault import Vault

# Throwaway PostgreSQL databases and roles for tests that need the server (tests/pg_support.py).
pytest_plugins = ["tests.pg_support"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Copies shipped with the tests (from ../shared/ of the project's workspace; MIT and Apache-2.0,
# licences alongside), so that a clone anywhere runs the whole suite.
FACES_DIR = PROJECT_ROOT / "tests" / "data" / "faces"
VECTORS_DIR = PROJECT_ROOT / "tests" / "data" / "wycheproof"

EncodingOf = Callable[[str], NDArray[np.float64]]


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    # Fail, never skip: a missing sample set must not turn the suite silently green.
    assert FACES_DIR.is_dir(), f"sample photos not found at {FACES_DIR}"
    return FACES_DIR


@pytest.fixture(scope="session")
def session_encoder() -> DlibResNetEncoder:
    return DlibResNetEncoder()


@pytest.fixture(scope="session")
def encoding_of(session_encoder: DlibResNetEncoder, faces_dir: Path) -> EncodingOf:
    """The dlib encoding of a sample photo by file name, computed once per test session."""
    cache: dict[str, NDArray[np.float64]] = {}

    def encode(name: str) -> NDArray[np.float64]:
        if name not in cache:
            cache[name] = session_encoder.encode_photo(faces_dir / name)
        return cache[name].copy()

    return encode


@pytest.fixture
def vault_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A vault directory and, apart from it, a keyring directory."""
    return tmp_path / "vault", tmp_path / "keys"


#: The principal test vaults are bound to: every role, every tenant.
TEST_PRINCIPAL = "test-worker"
TEST_ROLES = ("admin", "enroller", "verifier", "identifier", "auditor", "calibrator")


@dataclass(frozen=True)
class VaultKeys:
    """The API keys of a test vault: its bootstrap admin's and the test principal's."""

    admin: str
    worker: str


_VAULT_KEYS: dict[Path, VaultKeys] = {}


def vault_keys(home: Path) -> VaultKeys:
    """The API keys of a vault made by :func:`make_vault` or the ``cli_vault`` fixture."""
    return _VAULT_KEYS[Path(home).resolve()]


def _add_test_principal(home: Path, admin_key: str, **open_options: object) -> str:
    with Vault.open(home, api_key=admin_key, **open_options) as admin:  # type: ignore[arg-type]
        return admin.add_principal(TEST_PRINCIPAL, TEST_ROLES, all_tenants=True).api_key


def make_vault(home: Path, keys: Path, **options: object) -> Vault:
    """A new vault that tests may enroll, verify, identify and erase in.

    Tests get vaults through this function (or the ``vault`` fixture) rather than calling
    ``Vault.create`` themselves, so that what a test vault is allowed to do is decided in one place:
    it is bound to :data:`TEST_PRINCIPAL`, who holds every role on every tenant. The keys are
    in :func:`vault_keys`.
    """
    open_options = {k: v for k, v in options.items() if k == "passphrase"}
    with Vault.create(home, keyring_dir=keys, **options) as created:  # type: ignore[arg-type]
        admin_key = created.bootstrap_admin_key
        assert admin_key is not None
        worker_key = created.add_principal(TEST_PRINCIPAL, TEST_ROLES, all_tenants=True).api_key
    _VAULT_KEYS[Path(home).resolve()] = VaultKeys(admin_key, worker_key)
    return Vault.open(home, api_key=worker_key, **open_options)  # type: ignore[arg-type]


def reopen_vault(home: Path, **options: object) -> Vault:
    """Open an existing test vault again, bound to the same principal (see :func:`make_vault`).

    A test that rolls a vault back to before principals existed (no principal left) gets them
    back the way an operator would: ``Vault.bootstrap_admin``, then the test principal."""
    known = _VAULT_KEYS.get(Path(home).resolve())
    if known is None or "api_key" in options:
        return Vault.open(home, **options)  # type: ignore[arg-type]
    try:
        return Vault.open(home, api_key=known.worker, **options)  # type: ignore[arg-type]
    except AuthenticationFailed:
        open_options = {k: v for k, v in options.items() if k == "passphrase"}
        try:
            admin = Vault.bootstrap_admin(home, **open_options)  # type: ignore[arg-type]
        except Conflict:
            raise AuthenticationFailed("the test principal's key was refused") from None
        with admin:
            admin_key = admin.bootstrap_admin_key
            assert admin_key is not None
            worker = admin.add_principal(TEST_PRINCIPAL, TEST_ROLES, all_tenants=True).api_key
        _VAULT_KEYS[Path(home).resolve()] = VaultKeys(admin_key, worker)
        return Vault.open(home, api_key=worker, **options)  # type: ignore[arg-type]


@pytest.fixture
def vault(vault_dirs: tuple[Path, Path]) -> Iterator[Vault]:
    home, keys = vault_dirs
    with make_vault(home, keys) as created:
        yield created


@dataclass
class CliVault:
    """A vault made with ``faceseal init``, and the environment that points the CLI at it."""

    home: Path
    keys: Path
    env: dict[str, str]

    def run(self, *args: str, input: str | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **(extra_env or {})}, input=input)

    def invoke(self, *args: str, extra_env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        """Run the CLI in this process (fast: no interpreter start, models stay loaded)."""
        return invoke_cli(*args, env={**self.env, **(extra_env or {})})


def invoke_cli(*args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run the ``faceseal`` click command in-process; same shape as :func:`run_cli`'s result."""
    from click.testing import CliRunner

    from faceseal.cli import cli

    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout,
                                       result.stderr)


def run_cli(*args: str, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m faceseal ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "faceseal", *args],
        capture_output=True, text=True, env=full_env, input=input, timeout=300, check=False,
    )


def make_cli_vault(root: Path) -> CliVault:
    """``faceseal init`` a vault under ``root`` (keyring apart) and return how to reach it:
    ``env`` carries ``FACESEAL_API_KEY`` of the test principal (every role, every tenant), so
    ``run``/``invoke`` are authenticated; :func:`vault_keys` has the bootstrap admin's key."""
    home, keys = root / "cli-vault", root / "cli-keys"
    env = {"FACESEAL_HOME": str(home), "FACESEAL_KEYRING_DIR": str(keys)}
    created = run_cli("init", "--json", env=env)
    assert created.returncode == 0, created.stderr
    admin_key = json.loads(created.stdout)["admin_key"]
    worker_key = _add_test_principal(home, admin_key)
    _VAULT_KEYS[home.resolve()] = VaultKeys(admin_key, worker_key)
    return CliVault(home, keys, {**env, "FACESEAL_API_KEY": worker_key})


@pytest.fixture
def cli_vault(tmp_path: Path) -> CliVault:
    return make_cli_vault(tmp_path)


def random_encodings(count: int, dim: int = 128, dtype: str = "float64",
                     seed: int = 0) -> NDArray[np.floating]:
    """Unit-scale random encodings, like dlib's (values in about -0.3..0.3)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, dim)) * 0.1).astype(dtype)


# Key services (SoftHSM2, OpenBao, moto KMS) and the parametrised key-provider fixtures (issue #3).
from .keyservers import (  # noqa: E402
    aws_env,  # noqa: F401
    key_backend,  # noqa: F401
    moto_kms,  # noqa: F401
    openbao,  # noqa: F401
    remote_backend,  # noqa: F401
    softhsm,  # noqa: F401
)
