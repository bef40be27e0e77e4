"""The provider stays off the hot path: opening a vault of 100,000 subjects and matching against
all of them costs a constant number of provider calls, counted through a thin wrapper around a
real provider (the local keyring, then an OpenBao transit engine after a migration)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from faceseal.crypto.secret import SecretBytes
from faceseal.keys.provider import KeyProvider, ProviderStatus
from faceseal.vault import Vault, rotation
from faceseal.vault import vault as vault_module
from faceseal.vault.records import NewTemplate

from .conftest import make_vault, random_encodings, reopen_vault
from .keyservers import OpenBao, unique

SUBJECTS = 100_000


class CountingProvider(KeyProvider):
    """Delegates every call to a real provider and counts it."""

    def __init__(self, inner: KeyProvider, calls: Counter[str]) -> None:
        self.inner = inner
        self.calls = calls
        self.kind = inner.kind

    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        self.calls["wrap"] += 1
        return self.inner.wrap(key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        self.calls["unwrap"] += 1
        return self.inner.unwrap(wrapped, context)

    def unwrap_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[SecretBytes | None]:
        self.calls["unwrap_many"] += 1
        return self.inner.unwrap_many(items)

    def generate_data_key(self, context: bytes) -> tuple[SecretBytes, bytes]:
        self.calls["generate_data_key"] += 1
        return self.inner.generate_data_key(context)

    def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        self.calls["rewrap"] += 1
        return self.inner.rewrap(wrapped, context)

    def describe(self) -> ProviderStatus:
        self.calls["describe"] += 1
        return self.inner.describe()

    def rotate(self) -> int:
        self.calls["rotate"] += 1
        return self.inner.rotate()

    def kek_version_of(self, wrapped: bytes) -> int:
        return self.inner.kek_version_of(wrapped)  # reads the blob: no provider call

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    real_open = vault_module.open_provider

    def open_counting(uri: str, *args: object, **kwargs: object) -> KeyProvider:
        calls["open"] += 1
        return CountingProvider(real_open(uri, *args, **kwargs), calls)  # type: ignore[arg-type]

    monkeypatch.setattr(vault_module, "open_provider", open_counting)
    return calls


def _populate(vault: Vault, subjects: int) -> np.ndarray:
    """One template per subject, sealed and stored in bulk (as an import would)."""
    encodings = random_encodings(subjects, seed=11)
    for start in range(0, subjects, 20_000):
        chunk = encodings[start:start + 20_000]
        rows = vault._sealer.seal([
            NewTemplate("default", f"subject-{start + i:06d}", "dlib-resnet-v1", encoding)
            for i, encoding in enumerate(chunk)])
        with vault._store.transaction():  # rows and their subjects' inventories, as enroll does
            rotation.store_rows(vault._store, rows)
            vault._inventory.record_additions(vault._store, rows)
    return encodings


def _open_and_match(home: Path, probe: np.ndarray, subject: str, calls: Counter[str], *,
                    identify: bool = True) -> Counter[str]:
    calls.clear()
    with reopen_vault(home) as vault:
        assert vault.verify(subject, probe).match
        if identify:  # decrypts all 100,000 templates into the gallery
            best = vault.identify(probe, top_k=1).best
            assert best is not None
            assert best.subject_id == subject
    return Counter(calls)


@pytest.fixture(scope="module")
def big_vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("big")
    home, keys = root / "vault", root / "keys"
    with make_vault(home, keys, max_encryptions_per_key=40_000) as vault:  # 3 data keys
        encodings = _populate(vault, SUBJECTS)
        assert len(vault.key_status().data_keys) == 3
    return home, encodings


@pytest.mark.slow
def test_opening_100k_subjects_costs_constant_provider_calls(
    big_vault: tuple[Path, np.ndarray], counted: Counter[str], tmp_path: Path
) -> None:
    home, encodings = big_vault
    small_home, small_keys = tmp_path / "small", tmp_path / "small-keys"
    with make_vault(small_home, small_keys, max_encryptions_per_key=4) as small:  # 3 data keys
        small_encodings = _populate(small, 10)

    big = _open_and_match(home, encodings[77_777], "subject-077777", counted)
    tiny = _open_and_match(small_home, small_encodings[7], "subject-000007", counted)
    assert big == tiny  # the same cost for 10 subjects and for 100,000
    # One open, and one batched unwrap of the data keys (3 versions), nothing per subject or
    # per record.
    assert big["open"] == 1
    assert big["unwrap_many"] == 1
    assert big["unwrap"] == 1  # the audit key (docs/audit.md), whatever the size
    assert big["wrap"] == big["generate_data_key"] == 0


@pytest.mark.slow
def test_opening_100k_subjects_on_transit_costs_constant_calls(
    big_vault: tuple[Path, np.ndarray], counted: Counter[str], openbao: OpenBao
) -> None:
    home, encodings = big_vault
    with reopen_vault(home) as vault:
        vault.migrate_keys(openbao.uri(unique("big-kek")))
    calls = _open_and_match(home, encodings[12_345], "subject-012345", counted, identify=False)
    assert calls["open"] == 1
    assert calls["unwrap_many"] == 1  # one transit decrypt call with a batch of three
    assert calls["unwrap"] == 1  # the audit key
