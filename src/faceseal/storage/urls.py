"""Choosing a template store by URL.

==========================  ======================================================================
``sqlite:PATH``             the embedded default (:class:`~faceseal.storage.sqlite.SQLiteStore`)
``files:DIR``               a private directory (:class:`~faceseal.storage.files.FileStore`)
``postgresql://...``        PostgreSQL (:class:`~faceseal.storage.postgres.PostgresStore`); see
                            :mod:`faceseal.storage.postgres_url` for the parameters
==========================  ======================================================================

Relative paths are inside the vault directory. PostgreSQL support needs the ``postgres`` extra
(psycopg 3) and is imported only when a ``postgresql://`` URL is used.
"""

from __future__ import annotations

from pathlib import Path

from faceseal.errors import InvalidInput
from faceseal.storage.base import TemplateStore
from faceseal.storage.files import FileStore
from faceseal.storage.postgres_url import is_postgres_url, parse_pg_url
from faceseal.storage.sqlite import SQLiteStore

LOCAL_SCHEMES = ("sqlite", "files")


def _local_path(rest: str, home: Path) -> Path:
    if not rest:
        raise InvalidInput("the store URL names no path")
    path = Path(rest).expanduser()
    return path if path.is_absolute() else home / path


def local_store_path(url: str, home: Path) -> Path | None:
    """The file or directory of a ``sqlite:`` / ``files:`` store, None for a server store."""
    scheme, _, rest = url.partition(":")
    return _local_path(rest, home) if scheme in LOCAL_SCHEMES else None


def check_store_url(url: str) -> None:
    """Refuse, before anything is created, a URL that cannot be a vault's store.

    A PostgreSQL URL saved in ``vault.json`` must not carry a password (the file holds no
    secrets): use ``~/.pgpass``, ``$PGPASSFILE`` or ``$PGPASSWORD`` (libpq reads them).
    """
    scheme = url.partition(":")[0]
    if is_postgres_url(url):
        if parse_pg_url(url).has_password:
            raise InvalidInput(
                "the store URL carries a password, and vault.json holds no secrets: put the "
                "password in ~/.pgpass (or $PGPASSFILE / $PGPASSWORD) and leave it out of the URL"
            )
        return
    if scheme not in LOCAL_SCHEMES:
        raise InvalidInput(f"unsupported store URL scheme {scheme!r} "
                           "(use sqlite:PATH, files:DIR or postgresql://...)")
    local_store_path(url, Path("."))


def open_store_url(url: str, home: Path, *, create: bool = False) -> TemplateStore:
    """The template store ``url`` names."""
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite":
        return SQLiteStore(_local_path(rest, home), create=create)
    if scheme == "files":
        return FileStore(_local_path(rest, home), create=create)
    if is_postgres_url(url):
        try:
            from faceseal.storage.postgres import PostgresStore  # noqa: PLC0415 - optional extra
        except ImportError:
            raise InvalidInput("PostgreSQL support is not installed: pip install "
                               "'faceseal[postgres]'") from None
        return PostgresStore(url, create=create)
    raise InvalidInput(f"unsupported store URL scheme {scheme!r}")


def prepare_store(url: str, admin_url: str) -> tuple[int, int]:
    """Administrator's set-up of a server store before its own login uses it (PostgreSQL)."""
    if not is_postgres_url(url):
        raise InvalidInput("an admin URL only applies to postgresql:// stores")
    try:
        from faceseal.storage.postgres_admin import prepare_for_login  # noqa: PLC0415
    except ImportError:
        raise InvalidInput("PostgreSQL support is not installed: pip install "
                           "'faceseal[postgres]'") from None
    return prepare_for_login(parse_pg_url(url), admin_url)


def migrate_as_admin(url: str, admin_url: str) -> tuple[int, int]:
    """Apply a PostgreSQL store's migrations with an administrator's connection."""
    if not is_postgres_url(url):
        raise InvalidInput("an admin URL only applies to postgresql:// stores")
    try:
        from faceseal.storage.pg_common import connect  # noqa: PLC0415 - optional extra
        from faceseal.storage.postgres_admin import admin_location, migrate_schema  # noqa: PLC0415
    except ImportError:
        raise InvalidInput("PostgreSQL support is not installed: pip install "
                           "'faceseal[postgres]'") from None
    admin = admin_location(admin_url, parse_pg_url(url))
    with connect(admin, purpose="administration") as conn:
        return migrate_schema(conn, admin)
