"""The subject key store: one random secret per subject, kept apart from the template store.

A record's key is derived from the data key *and* its subject's secret (see
:mod:`faceseal.crypto.derive`). Erasing a subject destroys its secret here, so every copy of its
records (a backup of the template database, its WAL, free pages) becomes unreadable with the
current keys: crypto-shredding. That only works if this store is not copied along with the
template database, which is why it lives beside the keyring by default and never inside the
database directory.

The file is SQLite with ``secure_delete`` on (deleted secrets are overwritten with zeros in the
file) and a rollback journal rather than a WAL (so no stale copy lingers in a log after commit).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from faceseal.crypto.derive import SUBJECT_SECRET_BYTES, new_subject_secret
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import KeyringError
from faceseal.keys.files import PRIVATE_FILE_MODE, check_safe_dir, ensure_private_dir
from faceseal.keys.private_db import PrivateDatabase

log = logging.getLogger(__name__)

SUBJECT_KEYS_FILE = "subject-keys.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subject_secrets (
    tenant      TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    secret      BLOB NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (tenant, subject_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

SubjectRef = tuple[str, str]


class SubjectKeyStore:
    """Per-subject secrets in a private SQLite file."""

    def __init__(self, path: Path) -> None:
        self._file = PrivateDatabase(path, "subject key store", journal="DELETE",
                                     secure_delete=True)
        self._path = path
        self._lock = self._file.lock
        self._write = self._file.write
        self._query = self._file.query

    @classmethod
    def create(cls, directory: Path, vault_id: str) -> SubjectKeyStore:
        ensure_private_dir(directory)
        path = directory / SUBJECT_KEYS_FILE
        if path.exists():
            raise KeyringError(f"a subject key store already exists in {directory}")
        path.touch(mode=PRIVATE_FILE_MODE)
        store = cls(path)
        with store._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO store_info VALUES ('vault_id', ?)", (vault_id,))
        return store

    @classmethod
    def open(cls, directory: Path, vault_id: str) -> SubjectKeyStore:
        path = check_safe_dir(directory) / SUBJECT_KEYS_FILE
        if not path.exists():
            raise KeyringError(f"no subject key store found in {directory}")
        store = cls(path)
        try:
            rows = store._query("SELECT value FROM store_info WHERE key='vault_id'")
        except BaseException:
            store.close()
            raise
        if not rows or rows[0][0] != vault_id:
            store.close()
            raise KeyringError("the subject key store belongs to another vault")
        return store

    @property
    def path(self) -> Path:
        return self._path

    def get_many(self, refs: Iterable[SubjectRef]) -> dict[SubjectRef, SecretBytes]:
        """Secrets of the given subjects that exist (missing ones are simply absent)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, subject in dict.fromkeys(refs):
            by_tenant.setdefault(tenant, []).append(subject)
        found: dict[SubjectRef, SecretBytes] = {}
        with self._lock:
            for tenant, subjects in by_tenant.items():
                secrets: dict[str, SecretBytes] = {}
                self._read_tenant_secrets(tenant, subjects, secrets)
                found.update(((tenant, subject), secret) for subject, secret in secrets.items())
        return found

    @property
    def direct_read_location(self) -> str | None:
        """Where a helper process of this vault may read the secrets itself (read-only; see
        :func:`read_tenant_secrets`); None where it may not."""
        return str(self._path)

    def for_tenant(self, tenant: str | None) -> dict[SubjectRef, SecretBytes]:
        """Every secret of a tenant (or of all tenants), for loading a gallery in one pass."""
        with self._lock:
            if tenant is None:
                rows = self._query("SELECT tenant, subject_id, secret FROM subject_secrets", ())
            else:
                rows = self._query(
                    "SELECT tenant, subject_id, secret FROM subject_secrets WHERE tenant = ?",
                    (tenant,),
                )
            return {(t, s): SecretBytes(secret) for t, s, secret in rows}

    def get_or_create_many(self, refs: Iterable[SubjectRef]) -> dict[SubjectRef, SecretBytes]:
        """Secrets for the given subjects, creating (durably) those that do not exist yet."""
        wanted = list(dict.fromkeys(refs))
        found = self.get_many(wanted)
        missing = [ref for ref in wanted if ref not in found]
        if missing:
            fresh = {ref: new_subject_secret() for ref in missing}
            now = time.time()
            with self._write() as db:
                db.executemany(
                    "INSERT INTO subject_secrets (tenant, subject_id, secret, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(t, s, secret.reveal(), now) for (t, s), secret in fresh.items()],
                )
            # Another process may have won a race for the same subject: read back what is stored.
            found.update(self.get_many(missing))
        return found

    def get_or_create_for_tenant(
        self, tenant: str, subject_ids: Iterable[str]
    ) -> dict[str, SecretBytes]:
        """Bulk :meth:`get_or_create_many` for one tenant (enrolling many subjects at once).

        One ``IN`` query per 900 subjects, fresh secrets drawn from one CSPRNG call, one
        transaction for all the new ones.
        """
        wanted = list(dict.fromkeys(subject_ids))
        found: dict[str, SecretBytes] = {}
        with self._lock:
            self._read_tenant_secrets(tenant, wanted, found)
            missing = [s for s in wanted if s not in found]
            if not missing:
                return found
            pool = os.urandom(SUBJECT_SECRET_BYTES * len(missing))
            now = time.time()
            rows = [(tenant, subject, pool[i * SUBJECT_SECRET_BYTES:(i + 1) * SUBJECT_SECRET_BYTES],
                     now) for i, subject in enumerate(missing)]
            with self._write() as db:
                before = db.total_changes
                db.executemany(
                    "INSERT INTO subject_secrets (tenant, subject_id, secret, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    rows,
                )
                inserted = db.total_changes - before
            if inserted == len(missing):
                for _, subject, secret, _ in rows:
                    found[subject] = SecretBytes(secret)
            else:  # another process created some of them meanwhile: read back what is stored
                self._read_tenant_secrets(tenant, missing, found)
            del rows, pool
        return found

    def _read_tenant_secrets(
        self, tenant: str, subject_ids: list[str], into: dict[str, SecretBytes]
    ) -> None:
        for start in range(0, len(subject_ids), 900):
            chunk = subject_ids[start:start + 900]
            marks = ",".join("?" * len(chunk))
            for _, subject, secret in self._query(
                "SELECT tenant, subject_id, secret FROM subject_secrets "  # noqa: S608 - placeholders only
                f"WHERE tenant = ? AND subject_id IN ({marks})",
                [tenant, *chunk],
            ):
                into[subject] = SecretBytes(secret)

    def destroy(self, tenant: str, subject_id: str) -> bool:
        """Destroy a subject's secret (overwritten in the file). True if one existed."""
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM subject_secrets WHERE tenant = ? AND subject_id = ?",
                (tenant, subject_id),
            )
            existed = cursor.rowcount > 0
        log.debug("subject secret destroyed: %s", existed)
        return existed

    def subjects(self) -> list[SubjectRef]:
        with self._lock:
            rows = self._query("SELECT tenant, subject_id, NULL FROM subject_secrets", ())
        return [(t, s) for t, s, _ in rows]

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"<SubjectKeyStore {self._path.name}>"



def read_tenant_secrets(location: str, tenant: str) -> dict[str, SecretBytes]:
    """Every secret of ``tenant`` from a subject key store file, opened read-only: the gallery
    loader's helper process reads its own copy instead of receiving them over a pipe."""
    try:
        db = sqlite3.connect(Path(location).absolute().as_uri() + "?mode=ro", uri=True,
                             timeout=30)
    except sqlite3.Error as exc:
        raise KeyringError(f"cannot open the subject key store: {exc}") from None
    try:
        rows = db.execute("SELECT subject_id, secret FROM subject_secrets WHERE tenant = ?",
                          (tenant,)).fetchall()
    except sqlite3.Error as exc:
        raise KeyringError(f"cannot read the subject key store: {exc}") from None
    finally:
        db.close()
    return {str(subject): SecretBytes(secret) for subject, secret in rows}
