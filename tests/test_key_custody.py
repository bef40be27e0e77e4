"""Vaults on every key provider: create, enroll, reopen, rotate the KEK, migrate between
providers, and what happens when the provider is unavailable (a clear error, nothing written,
the vault intact afterwards)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from faceseal.errors import IntegrityFailure, InvalidInput, KeyringError
from faceseal.keys.subject_keys import SUBJECT_KEYS_FILE
from faceseal.vault import Vault, rotation
from faceseal.vault.config import VaultConfig

from .conftest import (
    CliVault,
    invoke_cli,
    make_vault,
    random_encodings,
    reopen_vault,
    vault_keys,
)
from .keyservers import (
    PIN_ENV,
    HsmSetup,
    KeyBackend,
    MotoKms,
    OpenBao,
    SoftHsm,
    make_backend,
    unique,
)


def dump(path: Path) -> list[str]:
    """Every row of a SQLite file, as SQL text (the logical content, WAL included)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def snapshot(home: Path, keys: Path) -> tuple[list[str], list[str], bytes]:
    """The vault's data and keys; the audit log is left out, because a refused or failed key
    operation is rightly recorded there (the audit tests check those events), and so is the
    key-operation lease it took and released (test_key_lease.py)."""
    data = [line for line in dump(home / "templates.db")
            if not line.startswith(('INSERT INTO "audit_events"',
                                    """INSERT INTO "meta" VALUES('lease:"""))]
    return (data, dump(keys / SUBJECT_KEYS_FILE), (home / "vault.json").read_bytes())


def records(vault: Vault) -> dict[str, bytes]:
    return {row.template_id: row.record
            for batch in vault._store.gallery(None) for row in batch}


# --- a vault on each provider ---------------------------------------------------------------------


def test_vault_on_each_provider(key_backend: KeyBackend, tmp_path: Path,
                                encoding_of: Callable[[str], np.ndarray]) -> None:
    uri = key_backend.new_uri()
    home, keys = tmp_path / "vault", tmp_path / "keys"
    with make_vault(home, keys, key_uri=uri) as vault:
        assert vault.config.key_uri.partition(":")[0] == key_backend.kind
        assert Path(vault.config.key_store_dir) == keys.resolve()
        assert (keys / SUBJECT_KEYS_FILE).exists()
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
        status = vault.key_status()
        assert status.provider == key_backend.kind
        assert [d.records for d in status.data_keys] == [2]
    with reopen_vault(home) as vault:
        assert vault.verify("obama", encoding_of("obama-2.jpg")).match
        assert not vault.verify("biden", encoding_of("obama-2.jpg")).match
        assert vault.identify(encoding_of("biden-2.jpg")).best.subject_id == "biden"
        assert vault.check().damaged == []


def test_rotate_kek_rewraps_data_keys_and_touches_no_record(
    key_backend: KeyBackend, tmp_path: Path
) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    with make_vault(home, keys, key_uri=key_backend.new_uri(), max_encryptions_per_key=50) as vault:
        vault.enroll("s", [random_encodings(120)])  # three data keys (50 + 50 + 20)
        before = records(vault)
        old_kek = vault.key_status().active_kek_version
        result = vault.rotate_kek()
        assert result.kek_version_before == old_kek
        assert result.kek_version > old_kek
        assert result.data_keys_rewrapped == 3
        status = vault.key_status()
        assert {d.kek_version for d in status.data_keys} == {result.kek_version}
        assert records(vault) == before  # not one record re-encrypted
        assert vault.rewrap_data_keys().data_keys_rewrapped == 0  # nothing left to do
    with reopen_vault(home) as vault:
        assert vault.check().records == 120
        assert vault.check().damaged == []


# --- provider unavailable: a clear error, nothing written, the vault intact -----------------------


OUTAGES = [
    ("local", "keyring-moved", "keyring_error"),
    ("pkcs11", "token-missing", "key_provider_unavailable"),
    ("pkcs11", "wrong-pin", "keyring_error"),
    ("vault-transit", "server-stopped", "key_provider_unavailable"),
    ("vault-transit", "wrong-token", "keyring_error"),
    ("aws-kms", "emulator-stopped", "key_provider_unavailable"),
]


@pytest.fixture
def outage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> KeyBackend:
    return make_backend(str(request.param), request, tmp_path / "local-keys")


@pytest.mark.parametrize(("outage_backend", "outage", "code"), OUTAGES,
                         ids=[f"{k}-{o}" for k, o, _ in OUTAGES], indirect=["outage_backend"])
def test_unavailable_provider_writes_nothing_and_leaves_the_vault_intact(
    outage_backend: KeyBackend, outage: str, code: str, tmp_path: Path
) -> None:
    backend = outage_backend
    uri = backend.new_uri()
    if backend.kind in ("vault-transit", "aws-kms"):
        uri += "&timeout=1" + ("&attempts=1" if backend.kind == "aws-kms" else "")
    home, keys = tmp_path / "vault", tmp_path / "keys"
    gallery = random_encodings(3, seed=7)
    with make_vault(home, keys, key_uri=uri) as vault:
        vault.enroll("alice", [gallery])
    cli = CliVault(home, keys, {"FACESEAL_HOME": str(home), **backend.env,
                                "FACESEAL_API_KEY": vault_keys(home).worker})
    probe = tmp_path / "probe.npy"
    np.save(probe, gallery[0])
    before = snapshot(home, keys)

    with _outage(backend, outage, cli, tmp_path) as extra_env:
        # A missing token is only seen by a new process (PKCS#11 reads its configuration once).
        run = cli.run if outage == "token-missing" else cli.invoke
        for args in (["enroll", "--subject", "bob", str(probe)],
                     ["verify", "--subject", "alice", str(probe)],
                     ["keys", "rotate", "--data"]):
            result = run(*args, "--json", extra_env=extra_env)
            # Both codes are internal: the deployment, not the caller, fixes key custody.
            assert result.returncode == 5, (args, result.stdout, result.stderr)
            assert json.loads(result.stdout)["error"]["code"] == code, result.stdout
            assert "decryption" not in result.stdout
            assert snapshot(home, keys) == before, args

    # The provider is back: the vault is as it was.
    assert snapshot(home, keys) == before
    with reopen_vault(home) as vault:
        assert vault.verify("alice", gallery[0]).distance == 0.0
        assert vault.check().records == 3
        assert vault.check().damaged == []


@contextmanager
def _outage(backend: KeyBackend, outage: str, cli: CliVault,
            tmp_path: Path) -> Iterator[dict[str, str]]:
    if outage == "keyring-moved":
        keyring = Path(VaultConfig.load(cli.home).key_uri.partition(":")[2])
        moved = tmp_path / "moved-away"
        (keyring / "keyring.json").rename(moved)
        try:
            yield {}
        finally:
            moved.rename(keyring / "keyring.json")
    elif outage == "token-missing":
        empty = SoftHsm(tmp_path / "unplugged")  # a token directory without the vault's token
        yield {"SOFTHSM2_CONF": str(empty.conf)}
    elif outage == "wrong-pin":
        yield {PIN_ENV: "0000-wrong"}
    elif outage == "wrong-token":
        yield {"FACESEAL_TEST_BAO_TOKEN": "s.wrong-token"}
    else:
        assert isinstance(backend.server, OpenBao | MotoKms)
        with backend.server.frozen():
            yield {}


# --- migration between providers ------------------------------------------------------------------


def test_migrate_local_to_remote_and_back(remote_backend: KeyBackend, tmp_path: Path) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    originals = random_encodings(40, seed=3)
    with make_vault(home, keys, max_encryptions_per_key=15) as vault:
        vault.enroll("s", [originals])
        rotated = vault.rotate_data_keys()  # retired old versions, current ones
        vault.retire_data_keys(rotated.target_version)
        before = records(vault)
        target = remote_backend.new_uri()
        result = vault.migrate_keys(target)
        assert result.to_uri == target
        assert result.data_keys_rewrapped == len(vault.key_status().data_keys)
        assert vault.config.key_uri == target
        assert vault.key_status().provider == remote_backend.kind
        assert records(vault) == before  # rewrap only
        assert vault.check().damaged == []
    assert VaultConfig.load(home).key_uri == target
    with reopen_vault(home) as vault:
        assert vault.check().damaged == []
        back = f"local:{tmp_path / 'keys-again'}"
        vault.migrate_keys(back)
        assert vault.key_status().provider == "local"
    with reopen_vault(home) as vault:
        assert vault.check().records == 40
        assert vault.check().damaged == []
        assert vault.verify("s", originals[7]).distance == 0.0


def test_migrate_with_the_cli(softhsm: HsmSetup, tmp_path: Path, cli_vault: CliVault) -> None:
    gallery = tmp_path / "g.npy"
    np.save(gallery, random_encodings(5))
    assert cli_vault.invoke("enroll", "--subject", "a", str(gallery)).returncode == 0
    target = softhsm.hsm.uri(softhsm.token, unique("cli-kek"))
    env = {"SOFTHSM2_CONF": str(softhsm.hsm.conf), PIN_ENV: softhsm.pin}
    moved = cli_vault.invoke("keys", "migrate", "--to", target, "--json", extra_env=env)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["to_uri"] == target
    status = cli_vault.invoke("keys", "status", "--json", extra_env=env)
    assert json.loads(status.stdout)["provider"] == "pkcs11"
    assert cli_vault.invoke("check", extra_env=env).returncode == 0
    back = cli_vault.invoke("keys", "migrate", "--to", f"local:{cli_vault.keys}", extra_env=env)
    assert back.returncode == 0, back.stderr
    assert cli_vault.invoke("check").returncode == 0


BAD_TARGETS: list[tuple[str, type[Exception], str]] = [
    ("gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k", InvalidInput, "not supported"),
    ("azure-kv:https://v.vault.azure.net/keys/k", InvalidInput, "not supported"),
    ("nope:x", InvalidInput, "unsupported"),
    ("local:", InvalidInput, "names a directory"),
    ("pkcs11:token=t;object=k;pin-value=1234?module-path=/x.so", InvalidInput, "PIN"),
    ("SAME", InvalidInput, "already uses"),
    ("INSIDE", KeyringError, "must not live in"),
]


@pytest.mark.parametrize(("target", "error", "message"), BAD_TARGETS,
                         ids=["gcp", "azure", "unknown", "empty-local", "pin-in-uri", "same",
                              "inside-vault"])
def test_migrate_refuses_bad_targets_and_changes_nothing(
    vault_dirs: tuple[Path, Path], target: str, error: type[Exception], message: str
) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        vault.enroll("s", [random_encodings(3)])
        if target == "SAME":
            target = vault.config.key_uri
        elif target == "INSIDE":
            target = f"local:{home / 'keys'}"
        before = snapshot(home, keys)
        with pytest.raises(error, match=message):
            vault.migrate_keys(target)
        assert snapshot(home, keys) == before
        assert vault.check().damaged == []
    assert not (home / "keys").exists()


@pytest.mark.parametrize("crash_at", ["before-config-switch", "after-config-switch"])
def test_migration_interrupted_by_a_crash_recovers_on_open(
    vault_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    crash_at: str
) -> None:
    home, keys = vault_dirs
    target = f"local:{tmp_path / 'new-keys'}"
    with make_vault(home, keys) as vault:
        vault.enroll("s", [random_encodings(4)])
        old_uri = vault.config.key_uri
        if crash_at == "before-config-switch":
            monkeypatch.setattr(VaultConfig, "save", _crash)
        else:
            monkeypatch.setattr(rotation, "finish_pending_migration", _crash)
        with pytest.raises(_Crash):
            vault.migrate_keys(target)
    monkeypatch.undo()
    expected = old_uri if crash_at == "before-config-switch" else target
    assert VaultConfig.load(home).key_uri == expected
    with reopen_vault(home) as vault:  # finishes (or discards) the staged migration
        assert vault.config.key_uri == expected
        assert vault.check().damaged == []
        assert vault._store.get_meta(rotation.META_MIGRATION) == ""
        assert vault.key_status().provider == "local"


def test_a_data_key_made_during_a_migration_is_reported(
    vault_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        vault.enroll("s", [random_encodings(2)])
        monkeypatch.setattr(rotation, "finish_pending_migration", _crash)
        with pytest.raises(_Crash):
            vault.migrate_keys(f"local:{tmp_path / 'new-keys'}")
        monkeypatch.undo()
        vault._data_keys.create_version()  # another process, still on the old provider
    with pytest.raises(IntegrityFailure, match="created during a key migration"):
        reopen_vault(home)


class _Crash(BaseException):
    pass


def _crash(*args: object, **kwargs: object) -> None:
    raise _Crash()


# --- init with a key URI: bad input is refused and leaves nothing behind ------------------------


@pytest.mark.parametrize(("uri", "code"), [
    ("gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k", "invalid_input"),
    ("azure-kv:https://v.vault.azure.net/keys/k", "invalid_input"),
    ("pkcs11:token=t;object=k;pin-value=1234?module-path=/x.so", "invalid_input"),
    ("vault-transit:http://127.0.0.1:9/transit/k?token=s.abc", "invalid_input"),
    ("vault-transit:http://127.0.0.1:9/transit/k?token-source=env:FS_NO_SUCH_TOKEN_VAR",
     "keyring_error"),
    ("aws-kms:alias/k?region=us-east-1&endpoint=http://127.0.0.1:9&timeout=1&attempts=1",
     "key_provider_unavailable"),
    ("local:", "invalid_input"),
], ids=["gcp", "azure", "pin-in-uri", "token-in-uri", "token-unset", "kms-unreachable",
        "empty-local"])
def test_init_refuses_bad_key_uris_and_leaves_nothing(
    uri: str, code: str, tmp_path: Path, aws_env: dict[str, str]
) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    result = invoke_cli("init", "--key-uri", uri, "--json",
                        env={"FACESEAL_HOME": str(home), "FACESEAL_KEYRING_DIR": str(keys)})
    assert result.returncode == (2 if code == "invalid_input" else 5)
    assert json.loads(result.stdout)["error"]["code"] == code
    for secret in ("1234", "s.abc"):
        assert secret not in result.stdout + result.stderr
    assert not (home / "vault.json").exists()
    assert not home.exists() or not any(home.iterdir())
    assert not keys.exists() or not any(keys.iterdir())


def test_init_with_a_key_uri_and_key_dir_via_the_cli(openbao: OpenBao, tmp_path: Path) -> None:
    home, keys = tmp_path / "vault", tmp_path / "elsewhere"
    uri = openbao.uri(unique("init-kek"))
    result = invoke_cli("init", "--key-uri", uri, "--key-dir", str(keys), "--json",
                        env={"FACESEAL_HOME": str(home)})
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["key_uri"] == uri
    assert document["keyring"] == str(keys.resolve())
    assert (keys / SUBJECT_KEYS_FILE).exists()
    assert not (keys / "keyring.json").exists()  # the KEK lives in OpenBao
    shared = invoke_cli("init", "--key-uri", uri, "--key-dir", str(tmp_path / "k2"), "--json",
                        env={"FACESEAL_HOME": str(tmp_path / "v2")})
    assert shared.returncode == 0  # another vault may share the KEK (bound by context)
    refused = invoke_cli("init", "--key-uri", uri, "--key-dir", str(tmp_path / "v3" / "k"),
                         "--json", env={"FACESEAL_HOME": str(tmp_path / "v3")})
    assert refused.returncode == 5  # keyring errors are internal (docs/http.md, error codes)
    assert json.loads(refused.stdout)["error"]["code"] == "keyring_error"
