"""The local keyring: KEKs in a 0600 file, optionally sealed with a passphrase.

The file lives in its own 0700 directory, apart from the template database (by default in the
platform config dir, while the database sits in the platform data dir), so that a copy of the
database never carries the keys. Layout (JSON)::

    {"format": "faceseal-keyring/1", "keyring_id": "<hex>", "created_at": "...",
     "kdf": null | {"name": "argon2id", "salt": "<hex>", "cost": {...}},
     "keys": {"active_version": 1, "keks": [{"version": 1, "created_at": "...", "key": "<hex>"}]}
             -- or, when sealed with a passphrase --
     "sealed_keys": "<hex of nonce || AES-256-GCM(passphrase key, keys JSON)>"}

Wrapped blobs: ``b"L1" || KEK version (uint32, big-endian) || RFC 5649 wrap``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceseal.crypto.aead import AeadKey, generate_key
from faceseal.crypto.keywrap import unwrap_key, wrap_key
from faceseal.crypto.passphrase import KdfParams, default_params, derive_key
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError, KeyringError
from faceseal.keys.files import (
    check_private,
    check_safe_dir,
    ensure_private_dir,
    write_private_atomic,
)
from faceseal.keys.provider import KeyProvider, ProviderStatus

log = logging.getLogger(__name__)

KEYRING_FILE = "keyring.json"
FORMAT = "faceseal-keyring/1"
_BLOB_MAGIC = b"L1"
_VERSION = struct.Struct(">I")


@dataclass(frozen=True)
class _Kek:
    version: int
    created_at: str
    key: SecretBytes


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _keys_to_json(keks: list[_Kek], active: int) -> bytes:
    return json.dumps({
        "active_version": active,
        "keks": [
            {"version": k.version, "created_at": k.created_at, "key": k.key.reveal().hex()}
            for k in keks
        ],
    }).encode()


def _keys_from_json(raw: bytes) -> tuple[list[_Kek], int]:
    data = json.loads(raw)
    keks = [
        _Kek(int(k["version"]), str(k["created_at"]), SecretBytes(bytes.fromhex(k["key"])))
        for k in data["keks"]
    ]
    return keks, int(data["active_version"])


class LocalKeyring(KeyProvider):
    """KEKs in a keyring file. Use :meth:`create` or :meth:`open`."""

    kind = "local"

    def __init__(
        self,
        directory: Path,
        *,
        keyring_id: str,
        keks: list[_Kek],
        active: int,
        passphrase_key: tuple[KdfParams, SecretBytes] | None,
        created_at: str,
    ) -> None:
        self._directory = directory
        self._keyring_id = keyring_id
        self._keks = {k.version: k for k in keks}
        self._active = active
        self._passphrase_key = passphrase_key
        self._created_at = created_at
        self._lock = threading.Lock()

    # --- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, passphrase: SecretBytes | None = None) -> LocalKeyring:
        """Make a new keyring with one KEK in ``directory`` (created 0700). Refuses to overwrite."""
        ensure_private_dir(directory)
        path = directory / KEYRING_FILE
        if path.exists():
            raise KeyringError(f"a keyring already exists in {directory}; refusing to overwrite")
        sealing = None
        if passphrase is not None:
            if len(passphrase) == 0:
                raise KeyringError("the passphrase is empty")
            params = default_params()
            sealing = (params, derive_key(passphrase, params))
        keyring = cls(directory, keyring_id=os.urandom(16).hex(),
                      keks=[_Kek(1, _now(), generate_key())], active=1, passphrase_key=sealing,
                      created_at=_now())
        keyring._save()
        log.info("created keyring %s (sealed: %s)", keyring._keyring_id, sealing is not None)
        return keyring

    @staticmethod
    def is_sealed(directory: Path) -> bool:
        """Whether the keyring in ``directory`` needs a passphrase (False if unreadable)."""
        try:
            document = json.loads((directory / KEYRING_FILE).read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and document.get("kdf") is not None

    @classmethod
    def open(cls, directory: Path, passphrase: SecretBytes | None = None) -> LocalKeyring:
        """Open the keyring in ``directory``; a sealed one needs its passphrase."""
        directory = check_safe_dir(directory, must_exist=False)
        path = directory / KEYRING_FILE
        if not path.exists():
            raise KeyringError(f"no keyring found in {directory}")
        check_private(directory)
        check_private(path)
        try:
            document = json.loads(path.read_bytes())
            if document.get("format") != FORMAT:
                raise KeyringError(f"{path.name} is not a faceseal keyring")
            keyring_id = str(document["keyring_id"])
            created_at = str(document["created_at"])
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyringError(f"{path.name} is damaged or not a faceseal keyring") from None
        if document.get("kdf") is None:
            try:
                keks, active = _keys_from_json(json.dumps(document["keys"]).encode())
            except (ValueError, KeyError, TypeError):
                raise KeyringError(f"{path.name} is damaged") from None
            return cls(directory, keyring_id=keyring_id, keks=keks, active=active,
                       passphrase_key=None, created_at=created_at)
        if passphrase is None:
            raise KeyringError(
                "the keyring is sealed with a passphrase; set FACESEAL_PASSPHRASE or enter it "
                "at the prompt"
            )
        params = KdfParams.from_json(document["kdf"])
        pkey = derive_key(passphrase, params)
        try:
            raw = AeadKey(pkey).decrypt(
                bytes.fromhex(document["sealed_keys"]), _sealing_ad(keyring_id)
            )
            keks, active = _keys_from_json(raw)
        except (DecryptionError, ValueError, KeyError):
            raise KeyringError("wrong passphrase, or the keyring is damaged") from None
        return cls(directory, keyring_id=keyring_id, keks=keks, active=active,
                   passphrase_key=(params, pkey), created_at=created_at)

    def _save(self) -> None:
        keys_json = _keys_to_json(sorted(self._keks.values(), key=lambda k: k.version),
                                  self._active)
        document: dict[str, Any] = {
            "format": FORMAT,
            "keyring_id": self._keyring_id,
            "created_at": self._created_at,
        }
        if self._passphrase_key is None:
            document["kdf"] = None
            document["keys"] = json.loads(keys_json)
        else:
            params, pkey = self._passphrase_key
            document["kdf"] = params.to_json()
            document["sealed_keys"] = AeadKey(pkey).encrypt(
                keys_json, _sealing_ad(self._keyring_id)
            ).hex()
        write_private_atomic(self._directory / KEYRING_FILE,
                             json.dumps(document, indent=1).encode())

    # --- the provider interface ------------------------------------------------------------------

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    @property
    def directory(self) -> Path:
        return self._directory

    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        with self._lock:
            kek = self._keks[self._active]
        return _BLOB_MAGIC + _VERSION.pack(kek.version) + wrap_key(kek.key, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        version = self.kek_version_of(wrapped)
        with self._lock:
            kek = self._keks.get(version)
        if kek is None and version > max(self._keks):
            # Another process (a replica, the CLI) rotated the KEK since this one opened.
            self._reload()
            with self._lock:
                kek = self._keks.get(version)
        if kek is None:
            raise DecryptionError()
        return unwrap_key(kek.key, wrapped[len(_BLOB_MAGIC) + _VERSION.size:], context)

    def kek_version_of(self, wrapped: bytes) -> int:
        if len(wrapped) < len(_BLOB_MAGIC) + _VERSION.size or not wrapped.startswith(_BLOB_MAGIC):
            raise DecryptionError()
        (version,) = _VERSION.unpack_from(wrapped, len(_BLOB_MAGIC))
        return int(version)

    def describe(self) -> ProviderStatus:
        with self._lock:
            versions = tuple(sorted(self._keks))
            active = self._active
        return ProviderStatus(
            kind=self.kind,
            location=str(self._directory),
            kek_versions=versions,
            active_version=active,
            details={
                "keyring_id": self._keyring_id,
                "passphrase_sealed": "yes" if self._passphrase_key else "no",
            },
        )

    def _reload(self) -> None:
        """Take in KEK versions another process added to the keyring file (never drop one)."""
        path = self._directory / KEYRING_FILE
        try:
            document = json.loads(path.read_bytes())
            if document.get("keyring_id") != self._keyring_id:
                raise KeyringError(f"{path.name} now holds another keyring")
            if document.get("kdf") is None:
                keks, active = _keys_from_json(json.dumps(document["keys"]).encode())
            else:
                if self._passphrase_key is None or \
                        KdfParams.from_json(document["kdf"]) != self._passphrase_key[0]:
                    raise KeyringError("the keyring was re-sealed by another process; reopen "
                                       "the vault")
                raw = AeadKey(self._passphrase_key[1]).decrypt(
                    bytes.fromhex(document["sealed_keys"]), _sealing_ad(self._keyring_id))
                keks, active = _keys_from_json(raw)
        except (OSError, ValueError, KeyError, TypeError, DecryptionError):
            raise KeyringError(f"{path.name} is unreadable or damaged") from None
        with self._lock:
            for kek in keks:
                self._keks.setdefault(kek.version, kek)
            self._active = max(self._active, active)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise keyring updates across processes (flock on a file beside the keyring)."""
        fd = os.open(self._directory / ".keyring.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def rotate(self) -> int:
        # Another process may have rotated since this one opened: start from the file, under a
        # lock, or its new version would be overwritten (and the keys it wrapped lost).
        with self._exclusive():
            self._reload()
            return self._rotate_locked()

    def _rotate_locked(self) -> int:
        with self._lock:
            version = max(self._keks) + 1
            self._keks[version] = _Kek(version, _now(), generate_key())
            previous = self._active
            self._active = version
            try:
                self._save()
            except BaseException:
                del self._keks[version]
                self._active = previous
                raise
        log.info("rotated keyring %s to KEK version %d", self._keyring_id, version)
        return version


def _sealing_ad(keyring_id: str) -> bytes:
    return f"{FORMAT}\x00{keyring_id}".encode()
