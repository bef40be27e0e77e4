"""Shared fixtures: sample photos, their encodings (computed once per session), fresh vaults."""

from __future__ import annotations

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
from faceseal.vault import Vault

# Throwaway PostgreSQL databases and roles for tests that need the server (tests/pg_support.py).
pytest_plugins = ["pg_support"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = PROJECT_ROOT.parent / "shared" / "faces"
VECTORS_DIR = PROJECT_ROOT.parent / "shared" / "vectors" / "wycheproof"

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


def make_vault(home: Path, keys: Path, **options: object) -> Vault:
    """A new vault that tests may enroll, verify, identify and erase in.

    Tests get vaults through this function (or the ``vault`` fixture) rather than calling
    ``Vault.create`` themselves, so that what a test vault is allowed to do is decided in one place.
    """
    return Vault.create(home, keyring_dir=keys, **options)  # type: ignore[arg-type]


def reopen_vault(home: Path, **options: object) -> Vault:
    """Open an existing test vault again (see :func:`make_vault`)."""
    return Vault.open(home, **options)  # type: ignore[arg-type]


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


def run_cli(*args: str, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m faceseal ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "faceseal", *args],
        capture_output=True, text=True, env=full_env, input=input, timeout=300, check=False,
    )


@pytest.fixture
def cli_vault(tmp_path: Path) -> CliVault:
    home, keys = tmp_path / "cli-vault", tmp_path / "cli-keys"
    env = {"FACESEAL_HOME": str(home), "FACESEAL_KEYRING_DIR": str(keys)}
    created = run_cli("init", "--json", env=env)
    assert created.returncode == 0, created.stderr
    return CliVault(home, keys, env)


def random_encodings(count: int, dim: int = 128, dtype: str = "float64",
                     seed: int = 0) -> NDArray[np.floating]:
    """Unit-scale random encodings, like dlib's (values in about -0.3..0.3)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, dim)) * 0.1).astype(dtype)
