"""Reading a legacy ``face_encodings`` table from SQLite or PostgreSQL, read-only, in id order.

The expected layout (docs/legacy-import.md lists the accepted variants)::

    face_encodings(id, user_id, iv, encrypted_encoding, created_at)

``id``, ``user_id`` and ``encrypted_encoding`` are required; ``iv`` and ``created_at`` may be
missing (the IV is then expected in front of the ciphertext). Rows stream in ``id`` order in
batches (a server-side cursor on PostgreSQL), so a table of any size is read in bounded memory,
and an interrupted import can resume after the last id it committed.

Sources: ``sqlite:PATH`` (opened read-only) or a ``postgresql://`` URL (a read-only
transaction). The URL's password is never shown: see :func:`describe_source`.
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from faceseal.errors import InvalidInput, StorageUnavailable
from faceseal.storage.postgres_url import is_postgres_url, redact_url

REQUIRED_COLUMNS = ("id", "user_id", "encrypted_encoding")
OPTIONAL_COLUMNS = ("iv", "created_at")
DEFAULT_TABLE = "face_encodings"
#: Longest ``encrypted_encoding`` value read (bytes, or characters of hex/base64 text). A 128-d
#: float64 encoding is about 1 KiB sealed, 3 KiB as JSON; longer values are not fetched at all
#: (the row arrives with its length only, and is reported), so one huge row cannot fill memory.
MAX_CIPHERTEXT_LENGTH = 256 * 1024
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


@dataclass(frozen=True)
class LegacyRow:
    """One row as stored: binary columns may arrive as bytes or as hex/base64 text."""

    row_id: Any
    user_id: Any
    iv: bytes | str | None
    ciphertext: bytes | str | None
    created_at: Any
    #: The stored length of ``encrypted_encoding`` (its value is None when over the limit).
    length: int | None = None

    def __repr__(self) -> str:
        return f"LegacyRow(id={self.row_id!r}, user_id={self.user_id!r}, <ciphertext>)"


def check_table_name(table: str) -> list[str]:
    """``table`` or ``schema.table`` as plain identifiers; anything else is refused."""
    if not _TABLE.match(table):
        raise InvalidInput(
            f"{table!r} is not a plain table name (letters, digits and _, optionally schema.table)"
        )
    return table.split(".")


def describe_source(url: str) -> str:
    return redact_url(url)


class LegacySource(ABC):
    """An open legacy table."""

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self.parts = check_table_name(table)
        self.columns: set[str] = set()

    def describe(self) -> str:
        return f"{describe_source(self.url)} table {self.table}"

    def _check_columns(self, names: list[str]) -> None:
        self.columns = {n.lower() for n in names}
        missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
        if missing:
            raise InvalidInput(f"legacy table {self.table} lacks column(s) {', '.join(missing)} "
                               f"(needs {', '.join(REQUIRED_COLUMNS)}; optional "
                               f"{', '.join(OPTIONAL_COLUMNS)})")

    def _select(self, quote_ident: Any, placeholder: str, after: bool) -> str:
        table = ".".join(quote_ident(p) for p in self.parts)
        iv = "iv" if "iv" in self.columns else "NULL"
        created = "created_at" if "created_at" in self.columns else "NULL"
        where = f" WHERE id > {placeholder}" if after else ""
        value = (f"CASE WHEN length(encrypted_encoding) > {MAX_CIPHERTEXT_LENGTH} THEN NULL "
                 "ELSE encrypted_encoding END")
        return (f"SELECT id, user_id, {iv}, {value}, {created}, "  # noqa: S608 - checked names
                f"length(encrypted_encoding) FROM {table}{where} ORDER BY id")

    @abstractmethod
    def count(self, after_id: Any | None) -> int: ...

    @abstractmethod
    def batches(self, after_id: Any | None, size: int) -> Iterator[list[LegacyRow]]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> LegacySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlite_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteLegacySource(LegacySource):
    def __init__(self, url: str, table: str) -> None:
        super().__init__(url, table)
        path = Path(url.partition(":")[2]).expanduser()
        if not path.is_file():
            raise InvalidInput(f"no legacy SQLite database at {path}")
        try:
            self._db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
            cursor = self._db.execute(
                f"SELECT * FROM {'.'.join(_sqlite_ident(p) for p in self.parts)} LIMIT 0")  # noqa: S608 - checked name
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot read legacy table {table} from {path.name}: {exc}") \
                from None
        self._check_columns([d[0] for d in cursor.description])

    def count(self, after_id: Any | None) -> int:
        table = ".".join(_sqlite_ident(p) for p in self.parts)
        query = f"SELECT count(*) FROM {table}" + ("" if after_id is None else " WHERE id > ?")  # noqa: S608
        try:
            return int(self._db.execute(query, () if after_id is None else (after_id,))
                       .fetchone()[0])
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"reading the legacy table failed: {exc}") from None

    def batches(self, after_id: Any | None, size: int) -> Iterator[list[LegacyRow]]:
        try:
            cursor = self._db.execute(self._select(_sqlite_ident, "?", after_id is not None),
                                      () if after_id is None else (after_id,))
            while batch := cursor.fetchmany(size):
                yield [LegacyRow(*values) for values in batch]
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"reading the legacy table failed: {exc}") from None

    def close(self) -> None:
        self._db.close()


class PostgresLegacySource(LegacySource):
    def __init__(self, url: str, table: str) -> None:
        super().__init__(url, table)
        import psycopg  # noqa: PLC0415 - optional extra
        from psycopg import sql  # noqa: PLC0415

        from faceseal.storage.pg_common import connect, map_error  # noqa: PLC0415
        from faceseal.storage.postgres_url import parse_pg_url  # noqa: PLC0415

        self._psycopg, self._sql, self._map_error = psycopg, sql, map_error
        self._loc = parse_pg_url(url)
        self._conn = connect(self._loc, purpose="legacy source")
        self._table = sql.Identifier(*self.parts)
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(self._table))
                names = [d.name for d in cursor.description or []]
        except psycopg.Error as exc:
            self._conn.close()
            raise InvalidInput(f"cannot read legacy table {table}: "
                               f"{map_error(exc, 'reading', self._loc)}") from None
        self._check_columns(names)

    def count(self, after_id: Any | None) -> int:
        sql = self._sql
        query = sql.SQL("SELECT count(*) FROM {}").format(self._table)
        if after_id is not None:
            query = sql.SQL("SELECT count(*) FROM {} WHERE id > %s").format(self._table)
        try:
            row = self._conn.execute(query, () if after_id is None else (after_id,)).fetchone()
        except self._psycopg.Error as exc:
            raise self._map_error(exc, "reading the legacy table", self._loc) from None
        return int(row[0]) if row else 0

    def batches(self, after_id: Any | None, size: int) -> Iterator[list[LegacyRow]]:
        query = self._select(lambda p: self._sql.Identifier(p).as_string(self._conn), "%s",
                             after_id is not None)
        try:
            with self._conn.transaction():
                self._conn.execute("SET TRANSACTION READ ONLY")
                with self._conn.cursor(name="faceseal_legacy_import", binary=True) as cursor:
                    cursor.itersize = size
                    cursor.execute(query, () if after_id is None else (after_id,))
                    while batch := cursor.fetchmany(size):
                        yield [LegacyRow(*values) for values in batch]
        except self._psycopg.Error as exc:
            raise self._map_error(exc, "reading the legacy table", self._loc) from None

    def close(self) -> None:
        self._conn.close()


def open_legacy_source(url: str, table: str = DEFAULT_TABLE) -> LegacySource:
    """Open the legacy table ``table`` at ``url`` (``sqlite:PATH`` or ``postgresql://...``)."""
    if url.startswith("sqlite:"):
        return SQLiteLegacySource(url, table)
    if is_postgres_url(url):
        try:
            return PostgresLegacySource(url, table)
        except ImportError:
            raise InvalidInput("PostgreSQL support is not installed: pip install "
                               "'faceseal[postgres]'") from None
    raise InvalidInput("a legacy source is sqlite:PATH or postgresql://...")
