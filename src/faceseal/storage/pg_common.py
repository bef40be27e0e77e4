"""Connecting to PostgreSQL and turning its errors into faceseal's.

Error mapping follows the hierarchy's rule that an outage never looks like a user mistake:

* connection and server failures -> :class:`~faceseal.errors.StorageUnavailable`;
* ``insufficient_privilege`` (a table the login may not touch, a tenant it is not granted)
  -> :class:`~faceseal.errors.AccessDenied`;
* unique / foreign-key / chain violations -> :class:`~faceseal.errors.Conflict`;
* invalid parameters -> :class:`~faceseal.errors.InvalidInput`.

Messages carry the server's primary message only (never DETAIL, which can quote row values) and
are scrubbed of the connection password should a driver message ever contain it.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from faceseal.errors import (
    AccessDenied,
    Conflict,
    FacesealError,
    InvalidInput,
    StorageUnavailable,
)
from faceseal.storage.postgres_url import PgLocation

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10


def _password_of(location: PgLocation) -> str | None:
    try:
        info = psycopg.conninfo.conninfo_to_dict(location.conninfo)
    except psycopg.Error:
        return None
    value = info.get("password")
    return str(value) if value else None


def scrub(message: str, location: PgLocation) -> str:
    """``message`` with the location's password (if any) blanked out."""
    password = _password_of(location)
    if password and password in message:
        message = message.replace(password, "***")
    return message


def connect(location: PgLocation, *, purpose: str = "store") -> psycopg.Connection[Any]:
    """An autocommit connection to ``location``; failures are :class:`StorageUnavailable`."""
    try:
        return psycopg.connect(
            location.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.Error as exc:
        # Connection failures name host and port, never the password; scrubbed regardless.
        text = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                     location)
        raise StorageUnavailable(
            f"cannot connect to PostgreSQL ({purpose}) at {location.describe()}: {text}"
        ) from None


def primary_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    if primary:
        return str(primary)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def map_error(exc: psycopg.Error, operation: str, location: PgLocation) -> FacesealError:
    """The faceseal error that stands for ``exc`` raised while doing ``operation``."""
    message = scrub(primary_message(exc), location)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return AccessDenied(f"PostgreSQL refused {operation}: {message}")
    if isinstance(exc, psycopg.IntegrityError):  # SQLSTATE class 23
        return Conflict(f"PostgreSQL refused {operation}: {message}")
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        # Our lock_timeout / statement_timeout: another session holds what we need, or the
        # server is overloaded. An outage for this request, never a wait without end.
        return StorageUnavailable(
            f"PostgreSQL {operation} gave up: {message} (another session holds a lock faceseal "
            "needs, or the server is overloaded; see lock_timeout_ms / statement_timeout_ms)")
    if isinstance(exc, psycopg.DataError):  # SQLSTATE class 22
        return InvalidInput(f"PostgreSQL refused {operation}: {message}")
    return StorageUnavailable(f"PostgreSQL {operation} failed: {message}")
