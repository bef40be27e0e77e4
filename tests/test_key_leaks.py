"""Remote key providers leak nothing: no data key, PIN, token or subject secret in logs at DEBUG
(ours and the client libraries': botocore logs bodies at DEBUG), messages or CLI output."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceseal.errors import FacesealError

from .conftest import make_vault, random_encodings, reopen_vault, run_cli, vault_keys
from .keyservers import KeyBackend
from .test_no_leaks import _forms


@pytest.mark.slow
def test_remote_providers_leak_nothing_at_debug(
    remote_backend: KeyBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    home, keys = tmp_path / "vault", tmp_path / "keys"
    texts: list[str] = []
    encodings = random_encodings(3, seed=5)
    with make_vault(home, keys, key_uri=remote_backend.new_uri()) as vault:
        vault.enroll("alice", [encodings])
        texts += [repr(vault), str(vault.key_status().to_dict()), repr(vault._data_keys.provider)]
        texts.append(str(vault.rotate_kek().to_dict()))
        texts.append(str(vault.rotate_data_keys().to_dict()))
        try:
            vault.retire_data_keys(99)
        except FacesealError as error:
            texts.append(str(error))
    probe = tmp_path / "probe.npy"
    np.save(probe, encodings[1])
    env = {"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": vault_keys(home).worker,
           **remote_backend.env}
    for args in (["verify", "--subject", "alice", str(probe), "--debug"],
                 ["enroll", "--subject", "bob", str(probe), "--debug", "--json"],
                 ["keys", "status", "--debug"],
                 ["keys", "rotate", "--kek", "--debug"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        texts += [result.stdout, result.stderr]
    assert "DEBUG" in "".join(texts)  # the CLI did log at DEBUG

    with reopen_vault(home) as vault:
        secrets: list[str] = []
        for info in vault._store.load_data_keys():
            secrets += _forms(vault._data_keys.key(info.version).reveal())
    with sqlite3.connect(keys / "subject-keys.db") as db:
        for (secret,) in db.execute("SELECT secret FROM subject_secrets"):
            secrets += _forms(bytes(secret))
    credentials = [value for name, value in remote_backend.env.items()
                   if any(word in name for word in ("PIN", "TOKEN", "SECRET"))]
    everything = "\n".join([*texts, caplog.text])
    leaked = [needle for needle in secrets + credentials if needle in everything]
    assert leaked == []
