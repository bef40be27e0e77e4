"""A small private SQLite file in the key directory (the subject key store, the audit state).

Both hold key material, so both get the same treatment: created 0600, one connection shared by
threads under a lock, ``synchronous=FULL``, writes in ``BEGIN IMMEDIATE`` transactions, and every
SQLite failure reported as :class:`~faceseal.errors.KeyProviderUnavailable` naming the file's
role -- the key directory is part of the key custody, so an unreadable file there is an outage of
the keys, never a decryption error.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from faceseal.errors import KeyProviderUnavailable

Journal = Literal["WAL", "DELETE"]


class PrivateDatabase:
    """One SQLite connection to a key-directory file, with locked reads and writes."""

    def __init__(self, path: Path, label: str, *, journal: Journal,
                 secure_delete: bool = False) -> None:
        self._path = path
        self._label = label
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.execute(f"PRAGMA journal_mode={journal}")
            self._db.execute("PRAGMA synchronous=FULL")
            if secure_delete:
                self._db.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise KeyProviderUnavailable(f"cannot open the {label}: {exc}") from None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def lock(self) -> threading.RLock:
        """Held by :meth:`write` and :meth:`query`; callers may hold it across several calls."""
        return self._lock

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise KeyProviderUnavailable(f"{self._label} write failed: {exc}") from None

    def query(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise KeyProviderUnavailable(f"{self._label} read failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
