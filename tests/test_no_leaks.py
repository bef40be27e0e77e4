"""Nothing secret leaks: not into logs at DEBUG, exception texts, reprs, or CLI output."""

from __future__ import annotations

import base64
import logging
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceseal.crypto import SecretBytes
from faceseal.errors import FacesealError
from faceseal.keys import LocalKeyring
from faceseal.vault import Vault

from .bad_inputs import npy_bytes
from .conftest import make_vault, random_encodings, reopen_vault, run_cli

PASSPHRASE = "leak-canary passphrase 7f3a"


def _forms(secret: bytes) -> list[str]:
    """Ways a leaked byte string could show up in text."""
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()[:20],
            repr(secret)[2:30]]


def _encoding_forms(encoding: np.ndarray) -> list[str]:
    values = [float(v) for v in encoding[:8] if abs(v) > 1e-3]
    return [*(repr(v)[:9] for v in values), *(f"{v:.5f}" for v in values),
            *_forms(encoding.tobytes()[:16])]


def _secrets(home: Path, keys: Path, vault: Vault) -> list[str]:
    keyring = LocalKeyring.open(keys, SecretBytes(PASSPHRASE.encode()))
    found = [PASSPHRASE]
    for kek in keyring._keks.values():
        found += _forms(kek.key.reveal())
    for info in vault._store.load_data_keys():
        found += _forms(vault._data_keys.key(info.version).reveal())
    with sqlite3.connect(keys / "subject-keys.db") as db:
        for (secret,) in db.execute("SELECT secret FROM subject_secrets"):
            found += _forms(bytes(secret))
    return found


@pytest.mark.slow
def test_operations_at_debug_leak_nothing(vault_dirs: tuple[Path, Path],
                                          caplog: pytest.LogCaptureFixture, tmp_path: Path
                                          ) -> None:
    home, keys = vault_dirs
    caplog.set_level(logging.DEBUG)
    encodings = random_encodings(4, seed=21)
    texts: list[str] = []

    def attempt(action: object) -> None:
        try:
            action()  # type: ignore[operator]
        except FacesealError as error:
            texts.extend([str(error), repr(error)])

    with make_vault(home, keys, passphrase=lambda: SecretBytes(PASSPHRASE.encode())) as vault:
        enrolled = vault.enroll("alice", list(encodings[:2]))
        vault.enroll("bob", [encodings[2]])
        texts += [repr(vault), repr(enrolled), str(enrolled.to_dict())]
        texts.append(str(vault.verify("alice", encodings[0]).to_dict()))
        texts.append(str(vault.identify(encodings[3]).to_dict()))
        attempt(lambda: vault.enroll("carol", [np.full(128, np.nan)]))
        attempt(lambda: vault.verify("alice", encodings[0][:64]))
        secrets = _secrets(home, keys, vault)
        for handle in (vault._data_keys.key(1), vault):
            with pytest.raises(TypeError):
                pickle.dumps(handle)
        with sqlite3.connect(home / "templates.db") as db:  # damage one record, then read it
            db.execute("UPDATE templates SET record = substr(record, 1, 40) WHERE subject_id "
                       "= 'bob'")
    with reopen_vault(home, passphrase=lambda: SecretBytes(PASSPHRASE.encode())) as vault:
        texts.append(str(vault.check().to_dict()))
        attempt(lambda: vault.verify("bob", encodings[2]))
        texts.append(str(vault.erase("alice").to_dict()))
    attempt(lambda: reopen_vault(home, passphrase=lambda: SecretBytes(b"wrong " + PASSPHRASE
                                                                       .encode())))

    probe = tmp_path / "probe.npy"
    probe.write_bytes(npy_bytes(encodings[2]))
    env = {"FACESEAL_HOME": str(home), "FACESEAL_PASSPHRASE": PASSPHRASE}
    for args in (["identify", str(probe), "--debug", "--json"],
                 ["verify", "--subject", "bob", str(probe), "--debug"],
                 ["subjects", "--debug"]):
        result = run_cli(*args, env=env)
        texts += [result.stdout, result.stderr]

    everything = "\n".join([*texts, caplog.text])
    assert "DEBUG" in caplog.text or caplog.records  # the scan did see debug logging
    assert "failed to open" in everything  # and the damaged record was logged
    needles = secrets + [form for e in encodings for form in _encoding_forms(e)]
    leaked = [needle for needle in needles if needle in everything]
    assert leaked == []
