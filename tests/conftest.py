"""Shared fixtures: sample photos, their encodings (computed once per session), fresh vaults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from faceseal.encoders import DlibResNetEncoder
from faceseal.vault import Vault

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


@pytest.fixture
def vault(vault_dirs: tuple[Path, Path]) -> Iterator[Vault]:
    home, keys = vault_dirs
    with Vault.create(home, keyring_dir=keys) as created:
        yield created


def random_encodings(count: int, dim: int = 128, dtype: str = "float64",
                     seed: int = 0) -> NDArray[np.floating]:
    """Unit-scale random encodings, like dlib's (values in about -0.3..0.3)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, dim)) * 0.1).astype(dtype)
