"""The audit state kept in the key directory, apart from the log: the audit key and checkpoints.

``audit-state.db`` (SQLite, 0600, WAL, ``synchronous=FULL``) sits beside the keyring and the
subject key store, never beside the template database. It holds:

* ``audit_keys``: the audit MAC key, 32 random bytes stored only wrapped by the key provider's KEK
  (bound to this vault's keyset id and the key version), so the log's MACs cannot be recomputed by
  someone who holds the database alone;
* ``checkpoints``: ``(seq, mac, written_at, tag)`` of the log's head at moments in time, MACed with
  the checkpoint subkey; only ever advanced (a checkpoint older than the newest is not written), and
  the newest :data:`KEEP_CHECKPOINTS` are kept.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from faceseal.audit.chain import AuditKey, Checkpoint
from faceseal.crypto.aead import generate_key
from faceseal.errors import (
    AuditWriteFailed,
    DecryptionError,
    KeyProviderUnavailable,
    KeyringError,
)
from faceseal.keys.files import PRIVATE_FILE_MODE, check_safe_dir, ensure_private_dir
from faceseal.keys.private_db import PrivateDatabase
from faceseal.keys.provider import KeyProvider

AUDIT_STATE_FILE = "audit-state.db"
KEEP_CHECKPOINTS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_keys (
    version     INTEGER PRIMARY KEY CHECK (version > 0),
    wrapped     BLOB NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq         INTEGER PRIMARY KEY,
    mac         BLOB NOT NULL,
    written_at  REAL NOT NULL,
    tag         BLOB NOT NULL
)
"""


def audit_key_context(keyset_id: bytes, version: int) -> bytes:
    """What a wrapped audit key is bound to: this vault's keyset and the key version."""
    return b"faceseal-audit-key\x00" + keyset_id + struct.pack(">I", version)


class AuditState:
    """The audit key (wrapped) and the checkpoints of one vault. Use :meth:`create`/:meth:`open`."""

    def __init__(self, path: Path) -> None:
        self._file = PrivateDatabase(path, "audit state file", journal="WAL")
        self._path = path
        self._write = self._file.write
        self._query = self._file.query

    # --- life cycle ------------------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / AUDIT_STATE_FILE).exists()

    @classmethod
    def create(
        cls, directory: Path, vault_id: str, provider: KeyProvider, keyset_id: bytes
    ) -> AuditState:
        """Make the state file with a fresh audit key (version 1) wrapped by ``provider``."""
        ensure_private_dir(directory)
        path = directory / AUDIT_STATE_FILE
        if path.exists():
            raise KeyringError(f"an audit state file already exists in {directory}")
        wrapped = provider.wrap(generate_key(), audit_key_context(keyset_id, 1))
        path.touch(mode=PRIVATE_FILE_MODE)
        state = cls(path)
        try:
            with state._write() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO info VALUES ('vault_id', ?)", (vault_id,))
                db.execute("INSERT INTO audit_keys VALUES (1, ?, ?)", (wrapped, time.time()))
        except BaseException:
            state.close()
            path.unlink(missing_ok=True)
            raise
        return state

    @classmethod
    def open(cls, directory: Path, vault_id: str) -> AuditState:
        path = check_safe_dir(directory) / AUDIT_STATE_FILE
        if not path.exists():
            raise KeyringError(
                f"the audit key is missing: no {AUDIT_STATE_FILE} in {directory} (restore it "
                "from the key directory's backup; without it the audit log cannot be verified)"
            )
        state = cls(path)
        try:
            row = state._query("SELECT value FROM info WHERE key = 'vault_id'")
        except BaseException:
            state.close()
            raise
        if not row or row[0][0] != vault_id:
            state.close()
            raise KeyringError("the audit state file belongs to another vault")
        return state

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"<AuditState {self._path.name}>"

    # --- keys ------------------------------------------------------------------------------------

    def wrapped_keys(self) -> dict[int, bytes]:
        return {int(v): bytes(w) for v, w in self._query(
            "SELECT version, wrapped FROM audit_keys ORDER BY version")}

    def load_keys(self, provider: KeyProvider, keyset_id: bytes) -> dict[int, AuditKey]:
        """Unwrap every audit-key version (one provider call each; there is normally one)."""
        keys: dict[int, AuditKey] = {}
        for version, wrapped in self.wrapped_keys().items():
            try:
                secret = provider.unwrap(wrapped, audit_key_context(keyset_id, version))
            except DecryptionError:
                raise KeyringError("the keyring does not match this vault: its audit key does "
                                   "not unwrap") from None
            try:
                keys[version] = AuditKey(secret, version, keyset_id)
            finally:
                secret.wipe()
        if not keys:
            raise KeyringError("the audit state file holds no audit key")
        return keys

    def wrap_for(self, source: KeyProvider, target: KeyProvider, keyset_id: bytes
                 ) -> dict[int, bytes]:
        """Every audit-key version unwrapped by ``source`` and wrapped by ``target``, without
        storing anything (a key migration stages these before it switches providers)."""
        blobs: dict[int, bytes] = {}
        for version, wrapped in self.wrapped_keys().items():
            context = audit_key_context(keyset_id, version)
            secret = source.unwrap(wrapped, context)
            try:
                blobs[version] = target.wrap(secret, context)
            finally:
                secret.wipe()
        return blobs

    def replace_wrapped(self, blobs: dict[int, bytes]) -> None:
        """Store new wrappings of existing audit-key versions, all or nothing."""
        with self._write() as db:
            db.executemany("UPDATE audit_keys SET wrapped = ? WHERE version = ?",
                           [(blob, version) for version, blob in blobs.items()])

    def rewrap(self, source: KeyProvider, target: KeyProvider, keyset_id: bytes) -> int:
        """Rewrap every audit-key version from ``source`` to ``target`` (KEK rotation or a move to
        another provider); returns how many were rewrapped. All or nothing."""
        blobs = self.wrap_for(source, target, keyset_id)
        self.replace_wrapped(blobs)
        return len(blobs)

    # --- checkpoints -----------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store ``checkpoint`` if it is newer than every stored one; True if it was stored."""
        try:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT INTO checkpoints (seq, mac, written_at, tag) "
                    "SELECT ?, ?, ?, ? WHERE ? > COALESCE((SELECT MAX(seq) FROM checkpoints), 0)",
                    (checkpoint.seq, checkpoint.mac, checkpoint.written_at, checkpoint.tag,
                     checkpoint.seq),
                )
                stored = cursor.rowcount == 1
                if stored:
                    db.execute(
                        "DELETE FROM checkpoints WHERE seq NOT IN "
                        "(SELECT seq FROM checkpoints ORDER BY seq DESC LIMIT ?)",
                        (KEEP_CHECKPOINTS,),
                    )
                return stored
        except KeyProviderUnavailable as exc:
            raise AuditWriteFailed(f"the audit checkpoint could not be written: {exc}") from None

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(int(s), bytes(m), float(w), bytes(t)) for s, m, w, t in self._query(
            "SELECT seq, mac, written_at, tag FROM checkpoints ORDER BY seq")]

    def latest_checkpoint(self) -> Checkpoint | None:
        rows = self._query(
            "SELECT seq, mac, written_at, tag FROM checkpoints ORDER BY seq DESC LIMIT 1")
        if not rows:
            return None
        s, m, w, t = rows[0]
        return Checkpoint(int(s), bytes(m), float(w), bytes(t))
