"""Encrypted snapshots of a tenant's in-memory galleries, for a fast start.

Loading a gallery from its records means opening every record (one key derivation per subject,
one AES-GCM per record, one database row per record): seconds per million. A snapshot is the
gallery's arrays as they sit in memory, sealed in large AES-256-GCM chunks; opening it is a
sequential read and a few hundred bulk decryptions, straight into the gallery's locked memory.

Safety rules (see ``docs/performance.md``):

* **Sealed, under a key apart from the data.** Each tenant's snapshot key is derived from a data
  key and a 256-bit random salt kept in ``snapshot-keys.json`` in the key directory (beside the
  keyring and the subject key store, never beside the template store), as record keys combine a
  data key with a subject secret. A copy of the vault directory alone opens nothing.
* **Erasure wins.** Before a subject is erased, the tenant's salt is destroyed and the snapshot
  file deleted; the next snapshot gets a fresh salt. A snapshot file copied before the erase
  (in a backup, say) can never be opened again, so it cannot bring an erased subject back.
* **Never stale.** A snapshot records the change-log sequence number its galleries reflect
  (see :mod:`faceseal.vault.gallery_cache`); whoever loads it applies the changes made since,
  by any process, before answering. A missing, foreign, truncated or tampered file, or one whose
  key was replaced, is ignored (logged) and the gallery is rebuilt from the records, which are
  the source of truth.
* **Shredded with the subject.** Every snapshot is sealed under a fresh key, which replaces
  (and so destroys) the previous one. Before an erasure returns, the tenant's snapshot is
  replaced by one without the subject (loaded from the old snapshot plus the change log, then
  written under a fresh key), or destroyed when that cannot be done cheaply (see
  :mod:`faceseal.vault.gallery_cache`). A process that writes a snapshot checks the change log
  afterwards and destroys it if an erasure committed meanwhile. Updates of the key file are
  serialised across processes with ``flock``, so one process's new key never resurrects a key
  another process just destroyed.

File layout (integers big-endian)::

    magic "FSSNAP\\0\\1" (8) | key id (16) | snapshot id (16) | manifest length n (4)
    chunk 0: sealed manifest (JSON), n bytes = plaintext + 16
    chunk 1..: sealed section data, each at most CHUNK_BYTES of plaintext + 16

Every chunk is AES-256-GCM under ``HMAC-SHA256(snapshot key, label || snapshot id)`` with nonce
``0^4 || index (u64)`` and associated data ``header || index (u64) || last (u8)``, so chunks cannot
be reordered, dropped, truncated or moved between snapshots. The manifest names the vault, the
tenant, the change sequence number and every section's dtype, shape and length.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceseal.crypto.aead import TAG_BYTES
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import (
    DecryptionError,
    KeyringError,
)
from faceseal.keys.datakeys import DataKeyManager
from faceseal.keys.files import (
    ensure_private_dir,
    private_atomic_writer,
    write_private_atomic,
)
from faceseal.matching.gallery import HEX_IDS, TEXT_IDS, Gallery
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateStore

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
KEYS_FILE = "snapshot-keys.json"
KEYS_FORMAT = "faceseal-snapshot-keys/2"
_KEY_LABEL = b"faceseal-snapshot-key-v1\x00"
MAGIC = b"FSSNAP\x00\x01"
FORMAT_VERSION = 3  # 3: int8 codes without residuals, 16-byte ids (2: int16 residuals held)
CHUNK_BYTES = 8 * 1024 * 1024
_HEADER = struct.Struct(">8s16s16sI")
_INDEX = struct.Struct(">QB")
_SUBKEY_LABEL = b"faceseal-snapshot-v1\x00"
_KEYS_LOCK = ".snapshot-keys.lock"


def tenant_tag(tenant: str) -> str:
    """A fixed-length, file-name-safe name for a tenant (its text never reaches a path)."""
    return hashlib.sha256(b"faceseal-snapshot-tenant\x00" + tenant.encode()).hexdigest()[:32]


class SnapshotKeys:
    """Per-tenant snapshot keys: a random salt in the key directory, combined with a data key.

    ``key = HMAC-SHA256(DEK, label || keyset id || tenant tag || key id || salt)``, like record
    keys combine the DEK with a subject secret: the salt lives in ``snapshot-keys.json`` (0600)
    in the key directory, never beside the template store, and the DEK only wrapped by the KEK
    (already unwrapped when the vault opens, so a snapshot costs no provider call). Destroying
    the salt -- done before every erasure -- makes every snapshot sealed under it unreadable,
    even to someone who holds the DEK; the old file is overwritten before it is replaced (best
    effort, as for the subject key store).
    """

    def __init__(self, directory: Path, data_keys: DataKeyManager, store: TemplateStore,
                 keyset_id: bytes) -> None:
        self._path = directory / KEYS_FILE
        self._data_keys = data_keys
        self._store = store
        self._keyset_id = keyset_id
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            document = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KeyringError(f"{KEYS_FILE} is unreadable: {exc}") from None
        if document.get("format") != KEYS_FORMAT:
            raise KeyringError(f"{KEYS_FILE} is not a faceseal snapshot key file")
        return dict(document.get("keys", {}))

    @contextlib.contextmanager
    def _exclusive(self, *, shared: bool = False) -> Iterator[None]:
        """Serialise read-modify-write of the key file across processes and threads; readers
        take the lock shared (a writer scrubs the file in place before replacing it)."""
        ensure_private_dir(self._path.parent)
        with self._lock:
            fd = os.open(self._path.parent / _KEYS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _write(self, keys: dict[str, dict[str, Any]]) -> None:
        ensure_private_dir(self._path.parent)
        _scrub(self._path)
        write_private_atomic(self._path, json.dumps({"format": KEYS_FORMAT, "keys": keys},
                                                    indent=1).encode())

    def _derive(self, tag: str, key_id: bytes, salt: bytes, dek_version: int) -> SecretBytes:
        dek = self._data_keys.key(dek_version)
        message = (_KEY_LABEL + self._keyset_id + bytes.fromhex(tag) + key_id + salt)
        return SecretBytes(hmac.digest(dek.reveal(), message, "sha256"))

    def current(self, tenant: str) -> tuple[bytes, SecretBytes] | None:
        """The tenant's key id and key, or None if it has none (never made, destroyed, or its
        data key retired)."""
        tag = tenant_tag(tenant)
        with self._exclusive(shared=True):
            entry = self._read().get(tag)
        if entry is None:
            return None
        try:
            key_id, salt = bytes.fromhex(entry["key_id"]), bytes.fromhex(entry["salt"])
            version = int(entry["dek_version"])
        except (KeyError, TypeError, ValueError):
            raise KeyringError(f"{KEYS_FILE} is damaged") from None
        try:
            return key_id, self._derive(tag, key_id, salt, version)
        except DecryptionError:
            return None  # the data key was retired: the snapshot is simply stale

    def create(self, tenant: str) -> tuple[bytes, SecretBytes]:
        """A fresh key for the tenant (new salt, newest data key), replacing any previous one."""
        tag = tenant_tag(tenant)
        key_id, salt = os.urandom(16), os.urandom(32)
        minimum = self._data_keys.min_decrypt_version()
        versions = [k.version for k in self._data_keys.live_keys() if k.version >= minimum]
        if not versions:
            raise KeyringError("no data key to derive a snapshot key from")
        version = max(versions)
        key = self._derive(tag, key_id, salt, version)
        with self._exclusive():
            keys = self._read()
            keys[tag] = {"key_id": key_id.hex(), "salt": salt.hex(), "dek_version": version}
            self._write(keys)
        return key_id, key

    def destroy(self, tenant: str) -> None:
        """Forget the tenant's salt: every snapshot sealed under its key becomes unreadable."""
        with self._exclusive():
            keys = self._read()
            if keys.pop(tenant_tag(tenant), None) is not None:
                self._write(keys)


def _scrub(path: Path) -> None:
    """Overwrite a small key file with zeros in place before it is replaced (best effort)."""
    try:
        with path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(0)
            handle.write(bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
    except FileNotFoundError:
        return


@dataclass(frozen=True)
class LoadedSnapshot:
    """Galleries read from a snapshot, and the change sequence number they reflect."""

    galleries: dict[str, Gallery]
    seq: int
    templates: int


class SnapshotStore:
    """Writes and reads the encrypted gallery snapshots of one vault."""

    def __init__(
        self,
        home: Path,
        key_dir: Path,
        data_keys: DataKeyManager,
        store: TemplateStore,
        *,
        vault_id: str,
        keyset_id: bytes,
    ) -> None:
        self._dir = home / SNAPSHOT_DIR
        self._keys = SnapshotKeys(key_dir, data_keys, store, keyset_id)
        self._store = store
        self._vault_id = vault_id

    def path(self, tenant: str) -> Path:
        return self._dir / f"index-{tenant_tag(tenant)}.snap"

    def exists(self, tenant: str) -> bool:
        return self.path(tenant).exists()

    def discard(self, tenant: str) -> None:
        """Destroy the tenant's snapshot key and file: no snapshot made so far can be opened
        again."""
        self._keys.destroy(tenant)
        self._remove(tenant)

    def _remove(self, tenant: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(tenant).unlink()

    # --- writing ---------------------------------------------------------------------------------

    def save(self, tenant: str, seq: int, galleries: dict[str, Gallery]) -> Path:
        """Seal the tenant's galleries (which reflect its changes up to ``seq``) into its
        snapshot, under a fresh key: writing a snapshot destroys the previous key, so a copy of
        any earlier snapshot (a backup, say) can never be opened again."""
        key_id, key = self._keys.create(tenant)
        snapshot_id = os.urandom(16)
        aead = AESGCM(_subkey(key, snapshot_id))
        key.wipe()
        ensure_private_dir(self._dir)
        target = self.path(tenant)
        with contextlib.ExitStack() as stack:
            for gallery in galleries.values():
                stack.enter_context(gallery.frozen())
            plan = [(model_id, gallery, gallery.export_sections())
                    for model_id, gallery in sorted(galleries.items())]
            manifest = _manifest(self._vault_id, tenant, seq, plan)
            chunks = [(section, start, min(start + CHUNK_BYTES, section.nbytes))
                      for _, _, sections in plan for _, section in sections
                      for start in range(0, section.nbytes, CHUNK_BYTES)]
            header = _HEADER.pack(MAGIC, key_id, snapshot_id, len(manifest) + TAG_BYTES)
            with private_atomic_writer(target) as handle:
                handle.write(header)
                handle.write(_seal(aead, header, 0, not chunks, manifest))
                for index, (section, start, end) in enumerate(chunks, start=1):
                    flat = _bytes_view(section)
                    handle.write(_seal(aead, header, index, index == len(chunks),
                                       flat[start:end]))
        log.debug("wrote an index snapshot: %d chunk(s)", len(chunks) + 1)
        return target

    # --- reading ---------------------------------------------------------------------------------

    def load(self, tenant: str, models: dict[str, ModelSpec]) -> LoadedSnapshot | None:
        """The tenant's galleries from its snapshot, or None when there is no usable snapshot."""
        path = self.path(tenant)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("index snapshot unreadable (%s); loading from the records", exc.strerror)
            return None
        with handle:
            try:
                return self._read(handle, tenant, models)
            except DecryptionError:
                log.warning("the index snapshot failed its integrity check or its key is gone; "
                            "loading from the records")
                return None
            except _Stale as why:
                log.info("index snapshot not used (%s); loading from the records", why)
                return None

    def _read(self, handle: BufferedReader, tenant: str,
              models: dict[str, ModelSpec]) -> LoadedSnapshot:
        header = handle.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise DecryptionError()
        magic, key_id, snapshot_id, manifest_len = _HEADER.unpack(header)
        if magic != MAGIC or not TAG_BYTES < manifest_len <= 1 << 24:
            raise DecryptionError()
        current = self._keys.current(tenant)
        if current is None or not hmac.compare_digest(current[0], key_id):
            raise _Stale("its key was replaced")
        aead = AESGCM(_subkey(current[1], snapshot_id))
        current[1].wipe()
        sealed = handle.read(manifest_len)
        try:
            manifest = json.loads(_open(aead, header, 0, None, sealed))
        except ValueError:
            raise DecryptionError() from None
        if (manifest.get("format") != FORMAT_VERSION or manifest.get("vault_id") != self._vault_id
                or manifest.get("tenant") != tenant):
            raise DecryptionError()
        seq = manifest.get("seq")
        if not isinstance(seq, int) or seq < 0:
            raise DecryptionError()
        galleries: dict[str, Gallery] = {}
        try:
            total = self._read_sections(handle, header, aead, manifest, models, galleries)
        except BaseException:
            for gallery in galleries.values():
                gallery.clear()
            raise
        return LoadedSnapshot(galleries, seq, total)

    def _read_sections(  # noqa: PLR0917 - one step of _read
        self, handle: BufferedReader, header: bytes, aead: AESGCM, manifest: dict[str, Any],
        models: dict[str, ModelSpec], galleries: dict[str, Gallery],
    ) -> int:
        entries = list(manifest.get("galleries", []))
        chunk_total = sum((int(s["nbytes"]) + CHUNK_BYTES - 1) // CHUNK_BYTES
                          for entry in entries for s in entry["sections"])
        index, total = 0, 0
        buffer = bytearray(CHUNK_BYTES + TAG_BYTES)
        for entry in entries:
            model_id, rows = str(entry["model_id"]), int(entry["rows"])
            spec = models.get(model_id)
            if spec is None or spec.dimension != int(entry["dimension"]) \
                    or spec.metric != entry["metric"]:
                raise _Stale(f"model {model_id} is not configured as it was")
            id_kind = str(entry.get("id_kind", ""))
            if id_kind not in (HEX_IDS, TEXT_IDS):
                raise DecryptionError()
            gallery = Gallery.for_load(spec.dimension, spec.metric, rows,
                                       int(entry["id_width"]), id_kind=id_kind)
            galleries[model_id] = gallery
            targets = gallery.load_targets(rows)
            names = bytearray()
            for section in entry["sections"]:
                name, nbytes = str(section["name"]), int(section["nbytes"])
                if name == "subject_names":
                    names = bytearray(nbytes)
                    flat = memoryview(names)
                else:
                    target = targets.get(name)
                    if target is None or target.nbytes != nbytes \
                            or target.dtype.str != section["dtype"]:
                        raise DecryptionError()
                    flat = _bytes_view(target)
                for start in range(0, nbytes, CHUNK_BYTES):
                    index += 1
                    length = min(CHUNK_BYTES, nbytes - start) + TAG_BYTES
                    view = memoryview(buffer)[:length]
                    if handle.readinto(view) != length:
                        raise DecryptionError()
                    _open(aead, header, index, flat[start:start + length - TAG_BYTES], view,
                          last=index == chunk_total)
            try:
                gallery.finish_load(rows, bytes(names))
            except (ValueError, UnicodeDecodeError):
                raise DecryptionError() from None
            total += rows
        if handle.read(1):
            raise DecryptionError()  # trailing bytes: not the file that was written
        buffer[:] = bytes(len(buffer))
        return total


class _Stale(Exception):
    """A well-formed snapshot that no longer describes the store."""


def _subkey(key: SecretBytes, snapshot_id: bytes) -> bytes:
    return hmac.digest(key.reveal(), _SUBKEY_LABEL + snapshot_id, "sha256")


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _seal(aead: AESGCM, header: bytes, index: int, last: bool, data: Any) -> bytes:
    return aead.encrypt(_nonce(index), data, header + _INDEX.pack(index, 1 if last else 0))


def _open(aead: AESGCM, header: bytes, index: int, into: memoryview | None, sealed: Any,
          *, last: bool = False) -> bytes:
    associated = header + _INDEX.pack(index, 1 if last else 0)
    try:
        if into is None:
            return aead.decrypt(_nonce(index), bytes(sealed), associated)
        aead.decrypt_into(_nonce(index), sealed, associated, into)
        return b""
    except (InvalidTag, ValueError):
        raise DecryptionError() from None


def _bytes_view(array: npt.NDArray[Any]) -> memoryview:
    return array.reshape(-1).view(np.uint8).data


def _manifest(vault_id: str, tenant: str, seq: int,
              plan: list[tuple[str, Gallery, list[tuple[str, npt.NDArray[Any]]]]]) -> bytes:
    return json.dumps({
        "format": FORMAT_VERSION,
        "vault_id": vault_id,
        "tenant": tenant,
        "seq": seq,
        "created_at": time.time(),
        "galleries": [
            {
                "model_id": model_id,
                "dimension": gallery.dimension,
                "metric": gallery.metric,
                "rows": len(gallery),
                "id_width": int(dict(sections)["template_ids"].dtype.itemsize),
                "id_kind": gallery.id_kind,
                "sections": [{"name": name, "dtype": array.dtype.str, "nbytes": array.nbytes}
                             for name, array in sections],
            }
            for model_id, gallery, sections in plan
        ],
    }).encode()
