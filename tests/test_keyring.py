"""The local keyring: private files, passphrase sealing, kept apart from the database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from faceseal.crypto import SecretBytes
from faceseal.crypto.aead import generate_key
from faceseal.errors import DecryptionError, KeyringError
from faceseal.keys import LocalKeyring
from faceseal.keys.local import KEYRING_FILE
from faceseal.vault import Vault

from .conftest import make_vault, random_encodings, reopen_vault


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree_digest(*folders: Path) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def test_keyring_is_private(tmp_path: Path) -> None:
    keyring = LocalKeyring.create(tmp_path / "keys")
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "keys" / KEYRING_FILE) == 0o600
    assert keyring.describe().active_version == 1


def test_keyring_refuses_to_overwrite(tmp_path: Path) -> None:
    LocalKeyring.create(tmp_path / "keys")
    before = (tmp_path / "keys" / KEYRING_FILE).read_bytes()
    with pytest.raises(KeyringError, match="already exists"):
        LocalKeyring.create(tmp_path / "keys")
    assert (tmp_path / "keys" / KEYRING_FILE).read_bytes() == before


@pytest.mark.parametrize("target", ["file", "directory"])
def test_keyring_readable_by_others_is_refused(tmp_path: Path, target: str) -> None:
    LocalKeyring.create(tmp_path / "keys")
    path = tmp_path / "keys" / (KEYRING_FILE if target == "file" else "")
    os.chmod(path, 0o644 if target == "file" else 0o755)
    with pytest.raises(KeyringError, match="accessible to other users"):
        LocalKeyring.open(tmp_path / "keys")


def test_rotation_keeps_old_wraps_readable(tmp_path: Path) -> None:
    keyring = LocalKeyring.create(tmp_path / "keys")
    key = generate_key()
    old = keyring.wrap(key, b"ctx")
    assert keyring.rotate() == 2
    reopened = LocalKeyring.open(tmp_path / "keys")
    assert reopened.kek_version_of(old) == 1
    assert reopened.unwrap(old, b"ctx") == key
    assert reopened.kek_version_of(reopened.wrap(key, b"ctx")) == 2


PASSPHRASE = "correct horse battery staple"


def test_passphrase_sealed_keyring(tmp_path: Path) -> None:
    keyring = LocalKeyring.create(tmp_path / "keys", SecretBytes(PASSPHRASE.encode()))
    key = generate_key()
    wrapped = keyring.wrap(key, b"ctx")
    text = (tmp_path / "keys" / KEYRING_FILE).read_text()
    assert PASSPHRASE not in text
    assert json.loads(text)["kdf"]["name"] in {"argon2id", "scrypt"}
    assert "keys" not in json.loads(text)  # only the sealed form is on disk
    with pytest.raises(KeyringError, match="passphrase"):
        LocalKeyring.open(tmp_path / "keys")
    with pytest.raises(KeyringError, match="wrong passphrase"):
        LocalKeyring.open(tmp_path / "keys", SecretBytes(b"wrong"))
    reopened = LocalKeyring.open(tmp_path / "keys", SecretBytes(PASSPHRASE.encode()))
    assert reopened.unwrap(wrapped, b"ctx") == key


def test_unsealed_keyring_does_not_unwrap_another_keyrings_blobs(tmp_path: Path) -> None:
    first, second = LocalKeyring.create(tmp_path / "a"), LocalKeyring.create(tmp_path / "b")
    with pytest.raises(DecryptionError):
        second.unwrap(first.wrap(generate_key(), b"ctx"), b"ctx")


# --- at the vault level ---------------------------------------------------------------------------


@pytest.mark.parametrize("inside", ["same", "below", "above"])
def test_keyring_inside_the_database_directory_is_refused(tmp_path: Path, inside: str) -> None:
    home = tmp_path / "vault"
    keys = {"same": home, "below": home / "keys", "above": tmp_path}[inside]
    with pytest.raises(KeyringError, match="must not live"):
        make_vault(home, keys)
    assert not (home / "vault.json").exists()


def test_keyring_inside_the_database_directory_when_forced(tmp_path: Path) -> None:
    with make_vault(tmp_path / "vault", tmp_path / "vault" / "keys",
                    allow_keyring_in_vault_dir=True) as vault:
        assert vault.home == (tmp_path / "vault").resolve()


def test_vault_files_are_private_and_apart(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        vault.enroll("s", [random_encodings(1)[0]])
    assert _mode(home) == 0o700
    assert _mode(keys) == 0o700
    for path in (home / "templates.db", home / "vault.json", keys / KEYRING_FILE,
                 keys / "subject-keys.db"):
        assert _mode(path) == 0o600, path
    assert not list(home.glob("keyring*"))
    assert not list(keys.glob("templates*"))


def test_wrong_keyring_fails_clearly_and_changes_nothing(tmp_path: Path) -> None:
    with make_vault(tmp_path / "v1", tmp_path / "k1") as first:
        first.enroll("alice", [random_encodings(1)[0]])
    make_vault(tmp_path / "v2", tmp_path / "k2").close()
    # An operator restores the wrong keyring file next to the first vault's subject keys.
    shutil.copy2(tmp_path / "k2" / KEYRING_FILE, tmp_path / "k1" / KEYRING_FILE)
    before = _tree_digest(tmp_path / "v1", tmp_path / "k1")
    with pytest.raises(KeyringError, match="does not match"):
        reopen_vault(tmp_path / "v1")
    assert _tree_digest(tmp_path / "v1", tmp_path / "k1") == before


def test_missing_keyring_fails_clearly(tmp_path: Path) -> None:
    make_vault(tmp_path / "v", tmp_path / "k").close()
    (tmp_path / "k" / KEYRING_FILE).unlink()
    with pytest.raises(KeyringError, match="no keyring"):
        reopen_vault(tmp_path / "v")


def test_wrong_passphrase_fails_clearly_and_changes_nothing(tmp_path: Path) -> None:
    def right() -> SecretBytes:
        return SecretBytes(PASSPHRASE.encode())

    with make_vault(tmp_path / "v", tmp_path / "k", passphrase=right) as vault:
        vault.enroll("alice", [random_encodings(1)[0]])
    before = _tree_digest(tmp_path / "v", tmp_path / "k")
    with pytest.raises(KeyringError, match="wrong passphrase"):
        reopen_vault(tmp_path / "v", passphrase=lambda: SecretBytes(b"not it"))
    with pytest.raises(KeyringError, match="sealed with a passphrase"):
        reopen_vault(tmp_path / "v")
    assert _tree_digest(tmp_path / "v", tmp_path / "k") == before
    with reopen_vault(tmp_path / "v", passphrase=right) as vault:
        assert [s.subject_id for s in vault.subjects()] == ["alice"]


def test_vault_refuses_to_be_created_twice(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    with pytest.raises(Exception, match="already exists"):
        Vault.create(home, keyring_dir=keys)
