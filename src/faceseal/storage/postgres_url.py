"""``postgresql://`` store URLs: what faceseal reads from them, and how they are shown.

A store URL is a libpq connection URI plus a few faceseal query parameters, which are taken out
before the rest goes to libpq::

    postgresql://faceseal_app@db.example:5432/faceseal?schema=faceseal&roles=faceseal&sslmode=verify-full

``schema``
    the dedicated schema holding faceseal's tables and functions (default ``faceseal``);
``roles``
    the prefix of the three NOLOGIN roles: ``<roles>_owner``, ``<roles>_app``,
    ``<roles>_auditor`` (default ``faceseal``; roles are cluster-wide, so two vaults in one
    cluster that must not share logins use two prefixes);
``allow_unsafe_durability``
    open even when the server runs with ``fsync=off`` / ``full_page_writes=off`` or the session
    with ``synchronous_commit=off`` (default ``false``);
``allow_superuser``
    open even when the login is a superuser or has BYPASSRLS, which defeats the row-level
    security the schema relies on (default ``false``);
``lock_timeout_ms``, ``statement_timeout_ms``
    how long any statement of the store waits for a lock, and runs at most (defaults 5000 and
    60000): a session that holds a lock faceseal needs -- the audit chain's head, say -- makes
    faceseal's calls fail fast with :class:`~faceseal.errors.StorageUnavailable` instead of
    stalling every tenant.

Credentials never leave this module in text meant for people: :meth:`PgLocation.describe` drops
the password (and ``password``/``sslpassword`` parameters), and that is the only form logged,
stored in error messages or shown by ``describe()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from faceseal.errors import InvalidInput

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "faceseal"
DEFAULT_ROLE_PREFIX = "faceseal"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECRET_PARAMS = {"password", "sslpassword"}
_FACESEAL_PARAMS = {"schema", "roles", "allow_unsafe_durability", "allow_superuser",
                    "lock_timeout_ms", "statement_timeout_ms"}
DEFAULT_LOCK_TIMEOUT_MS = 5_000
DEFAULT_STATEMENT_TIMEOUT_MS = 60_000


def is_postgres_url(url: str) -> bool:
    return url.partition(":")[0].lower() in SCHEMES


def check_identifier(kind: str, value: str) -> str:
    """A schema or role-prefix name: lower-case letters, digits and ``_``, at most 40 chars."""
    if not _IDENTIFIER.match(value):
        raise InvalidInput(
            f"{kind} {value!r} is not a plain identifier (a-z, 0-9, _; at most 40 characters, "
            "not starting with a digit)"
        )
    return value


@dataclass(frozen=True)
class PgRoles:
    """The three NOLOGIN roles of one faceseal schema."""

    prefix: str

    @property
    def owner(self) -> str:
        return f"{self.prefix}_owner"

    @property
    def app(self) -> str:
        return f"{self.prefix}_app"

    @property
    def auditor(self) -> str:
        return f"{self.prefix}_auditor"


@dataclass(frozen=True)
class PgLocation:
    """A parsed store URL. ``conninfo`` holds credentials: never log or show it."""

    conninfo: str
    schema: str
    roles: PgRoles
    allow_unsafe_durability: bool
    allow_superuser: bool
    lock_timeout_ms: int
    statement_timeout_ms: int
    user: str | None
    dbname: str | None
    has_password: bool
    _shown: str

    def describe(self) -> str:
        """The URL without its password: safe to log and show."""
        return self._shown

    def __repr__(self) -> str:
        return f"PgLocation({self._shown!r})"

    def with_params(self, **params: str) -> PgLocation:
        """The same location with faceseal parameters replaced (used by tests and the CLI)."""
        parts = urlsplit(self.conninfo)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.update({"schema": self.schema, "roles": self.roles.prefix})
        query.update(params)
        return parse_pg_url(urlunsplit(parts._replace(query=urlencode(query, quote_via=quote))))


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInput(f"store URL parameter {name} must be true or false")


def _milliseconds(name: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 86_400_000:
        raise InvalidInput(f"store URL parameter {name} must be a number of milliseconds "
                           "within 1..86400000")
    return int(value)


def parse_pg_url(url: str) -> PgLocation:
    """Parse a ``postgresql://`` store URL; raises :class:`InvalidInput` when malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port  # validates the port
    except ValueError:
        raise InvalidInput("the PostgreSQL store URL is malformed") from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInput("a PostgreSQL store URL starts with postgresql://")
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in params if k in _FACESEAL_PARAMS}
    libpq = [(k, v) for k, v in params if k not in _FACESEAL_PARAMS]
    schema = check_identifier("schema", ours.get("schema", DEFAULT_SCHEMA))
    prefix = check_identifier("role prefix", ours.get("roles", DEFAULT_ROLE_PREFIX))
    dbname = parts.path.lstrip("/") or None
    shown_query = urlencode(
        [(k, v) for k, v in libpq if k not in _SECRET_PARAMS]
        + [("schema", schema), ("roles", prefix)],
        quote_via=quote,
    )
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    shown = urlunsplit(("postgresql", netloc, parts.path, shown_query, ""))
    return PgLocation(
        conninfo=urlunsplit(parts._replace(scheme="postgresql",
                                           query=urlencode(libpq, quote_via=quote))),
        schema=schema,
        roles=PgRoles(prefix),
        allow_unsafe_durability=_flag("allow_unsafe_durability",
                                      ours.get("allow_unsafe_durability", "false")),
        allow_superuser=_flag("allow_superuser", ours.get("allow_superuser", "false")),
        lock_timeout_ms=_milliseconds("lock_timeout_ms", ours.get(
            "lock_timeout_ms", str(DEFAULT_LOCK_TIMEOUT_MS))),
        statement_timeout_ms=_milliseconds("statement_timeout_ms", ours.get(
            "statement_timeout_ms", str(DEFAULT_STATEMENT_TIMEOUT_MS))),
        user=unquote(parts.username) if parts.username else None,
        dbname=dbname,
        has_password=parts.password is not None or any(k in _SECRET_PARAMS for k, _ in libpq),
        _shown=shown,
    )


def redact_url(url: str) -> str:
    """Any store or source URL with its password removed, for messages and logs."""
    if is_postgres_url(url):
        try:
            return parse_pg_url(url).describe()
        except InvalidInput:
            return "postgresql://<malformed URL>"
    return url
