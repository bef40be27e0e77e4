"""Administering a faceseal PostgreSQL schema: migrations and login grants.

These run with an *administrator's* connection (a superuser, or a role with CREATEROLE and CREATE
on the database), never with the application's login:

* :func:`migrate_schema` creates the three NOLOGIN roles if needed (``<prefix>_owner``,
  ``<prefix>_app``, ``<prefix>_auditor``), the dedicated schema owned by the owner role, and
  applies the versioned migrations in ``storage/sql/`` *as the owner* (``SET LOCAL ROLE``), so
  the owner owns every table and function. One transaction, serialised by an advisory lock.
* :func:`grant_login` attaches an operator's login role: membership in the app (or auditor)
  group role, and the tenants it may touch, recorded in ``tenant_grants`` (which the row-level
  security policies read through ``session_user``).
* :func:`revoke_login` and :func:`list_grants` undo and show them.

The SQL each step runs is spelled out in docs/storage.md for operators who prefer psql.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql

from faceseal.errors import InvalidInput, NotFound, StorageMisconfigured
from faceseal.storage.pg_common import connect, map_error
from faceseal.storage.postgres_url import PgLocation, parse_pg_url

log = logging.getLogger(__name__)

#: Versioned migrations: (version, SQL file in faceseal/storage/sql). Append only.
#: A version missing from the list is no obstacle: the runner applies every step not yet
#: recorded in ``schema_migrations``, in list order.
MIGRATIONS: list[tuple[int, str]] = [(1, "postgres_0001.sql"), (2, "postgres_0002.sql"),
                                     (3, "postgres_0003.sql"), (4, "postgres_0004.sql")]
LATEST_VERSION = max(version for version, _ in MIGRATIONS)

Group = Literal["app", "auditor"]


def migration_sql(version: int, location: PgLocation) -> str:
    """The SQL of one migration with the schema and role names filled in."""
    name = dict(MIGRATIONS)[version]
    text = resources.files("faceseal.storage").joinpath("sql", name).read_text("utf-8")
    for placeholder, value in (
        ("@schema@", location.schema),
        ("@owner@", location.roles.owner),
        ("@app@", location.roles.app),
        ("@auditor@", location.roles.auditor),
    ):
        text = text.replace(placeholder, _quoted(value))
    return text


def _quoted(name: str) -> str:
    # Names are validated plain identifiers (see postgres_url.check_identifier); quoted anyway.
    return f'"{name}"'


def create_role_sql(name: str) -> str:
    """One of faceseal's group roles: never a login, never privileged."""
    return f"CREATE ROLE {_quoted(name)} NOLOGIN"


def create_schema_sql(location: PgLocation) -> str:
    return f"CREATE SCHEMA {_quoted(location.schema)} AUTHORIZATION {_quoted(location.roles.owner)}"


def as_owner_sql(location: PgLocation) -> str:
    """Migrations run as the owner role, so it owns every table and function they make."""
    return f"SET LOCAL ROLE {_quoted(location.roles.owner)}"


def migration_script(version: int, location: PgLocation) -> str:
    """One migration and the row that records it: what `migrate` runs, what `db schema-sql`
    prints."""
    return (migration_sql(version, location) + f"\nINSERT INTO {_quoted(location.schema)}"
            f".schema_migrations (version, applied_at) VALUES ({version}, "
            "extract(epoch FROM now()));\n")


def schema_script(location: PgLocation) -> str:
    """The whole schema as one script, for review or for psql (``faceseal db schema-sql``): the
    statements :func:`migrate_schema` runs on an empty database, in its order."""
    roles = location.roles
    setup = [create_role_sql(name) for name in (roles.owner, roles.app, roles.auditor)]
    setup += [create_schema_sql(location), as_owner_sql(location)]
    return ("-- run as a superuser (or CREATEROLE + CREATE on the database), in one "
            "transaction\n" + "".join(f"{statement};\n" for statement in setup)
            + "\n".join(migration_script(version, location) for version, _ in MIGRATIONS)
            + "RESET ROLE;\n")


def _one(conn: psycopg.Connection[Any], query: Any, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def schema_version(conn: psycopg.Connection[Any], location: PgLocation) -> int:
    """The schema's migration version as the catalog shows it (0 when absent)."""
    exists = _one(conn, "SELECT to_regclass(%s) IS NOT NULL",
                  (f'"{location.schema}".schema_migrations',))
    if not exists:
        return 0
    return int(_one(conn, sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations")
                    .format(sql.Identifier(location.schema))) or 0)


def _applied_versions(conn: psycopg.Connection[Any], location: PgLocation) -> set[int]:
    return {int(r[0]) for r in conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations").format(
            sql.Identifier(location.schema))).fetchall()}


def _ensure_group_role(conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute(
        "SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = %s",
        (name,),
    ).fetchone()
    if row is None:
        conn.execute(create_role_sql(name).encode())
        log.info("created PostgreSQL role %s", name)
        return
    if any(row):
        raise StorageMisconfigured(
            f"PostgreSQL role {name} exists but can log in, is a superuser or bypasses row-level "
            "security; faceseal's owner/app/auditor roles must be plain NOLOGIN roles"
        )


def migrate_schema(conn: psycopg.Connection[Any], location: PgLocation) -> tuple[int, int]:
    """Create or upgrade the schema; returns (version before, version after)."""
    roles = location.roles
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"faceseal-migrate:{location.schema}",))
            before = schema_version(conn, location)
            if before > LATEST_VERSION:
                raise StorageMisconfigured(
                    f"the PostgreSQL schema {location.schema} is at version {before}, newer than "
                    f"this faceseal understands ({LATEST_VERSION}); upgrade faceseal"
                )
            applied = _applied_versions(conn, location) if before else set()
            if all(version in applied for version, _ in MIGRATIONS):
                return before, before
            for name in (roles.owner, roles.app, roles.auditor):
                _ensure_group_role(conn, name)
            superuser = bool(_one(conn, "SELECT rolsuper FROM pg_catalog.pg_roles "
                                        "WHERE rolname = current_user"))
            if not superuser and not _one(conn, "SELECT pg_has_role(current_user, %s, 'MEMBER')",
                                          (roles.owner,)):
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(
                    sql.Identifier(roles.owner)))
            schema_owner = _one(
                conn, "SELECT pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
                      "WHERE nspname = %s", (location.schema,))
            if schema_owner is None:
                conn.execute(create_schema_sql(location).encode())
            elif schema_owner != roles.owner:
                raise StorageMisconfigured(
                    f"schema {location.schema} exists and belongs to {schema_owner}, not "
                    f"{roles.owner}; choose another schema (?schema=...) or drop it"
                )
            conn.execute(as_owner_sql(location).encode())
            for version, _ in MIGRATIONS:
                if version in applied:
                    continue
                conn.execute(migration_script(version, location).encode())
                log.info("applied PostgreSQL migration %d to schema %s", version, location.schema)
            conn.execute("RESET ROLE")
            return before, schema_version(conn, location)
    except psycopg.Error as exc:
        raise map_error(exc, "the schema migration", location) from None


@dataclass(frozen=True)
class LoginGrant:
    """A login role's place in one faceseal schema."""

    role: str
    app: bool
    auditor: bool
    tenants: tuple[str, ...]
    all_tenants: bool


def _login_oid(conn: psycopg.Connection[Any], role: str, *, allow_superuser: bool) -> int:
    row = conn.execute(
        "SELECT oid, rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    if row is None:
        raise NotFound(f"PostgreSQL role {role!r} does not exist; create it first "
                       f"(CREATE ROLE ... LOGIN)")
    oid, superuser, bypass = row
    if (superuser or bypass) and not allow_superuser:
        raise InvalidInput(
            f"PostgreSQL role {role!r} is a superuser or bypasses row-level security: tenant "
            "separation would not apply to it; grant a plain login role instead"
        )
    return int(oid)


def grant_login(
    conn: psycopg.Connection[Any],
    location: PgLocation,
    role: str,
    tenants: Sequence[str] | None,
    *,
    group: Group = "app",
    allow_superuser: bool = False,
) -> None:
    """Let login ``role`` use the schema as ``group`` for ``tenants`` (None: every tenant)."""
    roles = location.roles
    if role in (roles.owner, roles.app, roles.auditor):
        raise InvalidInput(f"{role} is one of faceseal's own roles; grant a login role")
    if tenants is not None and not tenants:
        raise InvalidInput("name at least one tenant, or grant every tenant")
    group_role = roles.app if group == "app" else roles.auditor
    try:
        with conn.transaction():
            if schema_version(conn, location) == 0:
                raise NotFound(f"no faceseal schema {location.schema} in this database; run "
                               "`faceseal migrate --admin-url ...` first")
            oid = _login_oid(conn, role, allow_superuser=allow_superuser)
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group_role),
                                                         sql.Identifier(role)))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles.owner)))
            insert = sql.SQL(
                "INSERT INTO {}.tenant_grants (role_oid, role_name, tenant) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING").format(sql.Identifier(location.schema))
            for tenant in (None,) if tenants is None else tenants:
                conn.execute(insert, (oid, role, tenant))
            conn.execute("RESET ROLE")
            if group == "app" and not _one(
                conn, "SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')",
                (role,),
            ):
                # Bulk enrolment stages rows in a session temp table before one function call.
                conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(str(_one(conn, "SELECT current_database()"))),
                    sql.Identifier(group_role)))
    except psycopg.Error as exc:
        raise map_error(exc, f"granting {role}", location) from None
    log.info("granted PostgreSQL role %s as %s", role, group)


def revoke_login(
    conn: psycopg.Connection[Any],
    location: PgLocation,
    role: str,
    tenants: Sequence[str] | None = None,
) -> int:
    """Take tenants (all of them, and the group memberships, when None) from ``role``."""
    roles = location.roles
    schema = sql.Identifier(location.schema)
    try:
        with conn.transaction():
            oid = _login_oid(conn, role, allow_superuser=True)
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles.owner)))
            if tenants is None:
                removed = conn.execute(
                    sql.SQL("DELETE FROM {}.tenant_grants WHERE role_oid = %s").format(schema),
                    (oid,)).rowcount
            else:
                removed = conn.execute(
                    sql.SQL("DELETE FROM {}.tenant_grants WHERE role_oid = %s "
                            "AND tenant = ANY(%s)").format(schema), (oid, list(tenants))).rowcount
            conn.execute("RESET ROLE")
            if tenants is None:
                for group_role in (roles.app, roles.auditor):
                    if _one(conn, "SELECT pg_has_role(%s, %s, 'MEMBER')", (role, group_role)):
                        conn.execute(sql.SQL("REVOKE {} FROM {}").format(
                            sql.Identifier(group_role), sql.Identifier(role)))
            return int(removed)
    except psycopg.Error as exc:
        raise map_error(exc, f"revoking {role}", location) from None


def list_grants(conn: psycopg.Connection[Any], location: PgLocation) -> list[LoginGrant]:
    """Every login role with tenants or a group membership in this schema."""
    roles = location.roles
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles.owner)))
            rows = conn.execute(sql.SQL(
                "SELECT coalesce(r.rolname, g.role_name), g.tenant FROM {}.tenant_grants g "
                "LEFT JOIN pg_catalog.pg_roles r ON r.oid = g.role_oid").format(
                    sql.Identifier(location.schema))).fetchall()
            conn.execute("RESET ROLE")
            members = conn.execute(
                "SELECT r.rolname, pg_has_role(r.oid, %s, 'MEMBER'), "
                "pg_has_role(r.oid, %s, 'MEMBER') FROM pg_catalog.pg_roles r "
                "WHERE r.rolcanlogin AND (pg_has_role(r.oid, %s, 'MEMBER') "
                "OR pg_has_role(r.oid, %s, 'MEMBER')) AND NOT r.rolsuper",
                (roles.app, roles.auditor, roles.app, roles.auditor)).fetchall()
    except psycopg.Error as exc:
        raise map_error(exc, "listing grants", location) from None
    tenants: dict[str, list[str | None]] = {}
    for name, tenant in rows:
        tenants.setdefault(str(name), []).append(tenant)
    groups = {str(name): (bool(app), bool(auditor)) for name, app, auditor in members}
    result = []
    for name in sorted(set(tenants) | set(groups)):
        scope = tenants.get(name, [])
        app, auditor = groups.get(name, (False, False))
        result.append(LoginGrant(name, app, auditor,
                                 tuple(sorted(t for t in scope if t is not None)),
                                 None in scope))
    return result


def admin_location(admin_url: str, store: PgLocation) -> PgLocation:
    """The administrator's connection, aimed at the store's schema and roles.

    The admin URL supplies credentials, host and database; schema and role prefix come from the
    store URL (an admin URL naming different ones is refused, as is another database).
    """
    admin = parse_pg_url(admin_url)
    explicit = dict(parse_qsl(urlsplit(admin_url).query))
    for param, value in (("schema", store.schema), ("roles", store.roles.prefix)):
        if param in explicit and explicit[param] != value:
            raise InvalidInput(f"the admin URL names {param}={explicit[param]} but the store uses "
                               f"{param}={value}")
    if admin.dbname and store.dbname and admin.dbname != store.dbname:
        raise InvalidInput(f"the admin URL points to database {admin.dbname!r}, the store to "
                           f"{store.dbname!r}")
    return admin.with_params(schema=store.schema, roles=store.roles.prefix)


def prepare_for_login(store: PgLocation, admin_url: str) -> tuple[int, int]:
    """Migrate the schema as the administrator and grant the store's login every tenant.

    This is what ``faceseal init --store URL --admin-url ADMIN`` does before the vault opens the
    store with its own, unprivileged login.
    """
    admin = admin_location(admin_url, store)
    conn = connect(admin, purpose="administration")
    try:
        versions = migrate_schema(conn, admin)
        login_conn = connect(store)
        try:
            login = str(login_conn.execute("SELECT session_user").fetchone()[0])  # type: ignore[index]
        finally:
            login_conn.close()
        existing = [g for g in list_grants(conn, admin) if g.role == login]
        if not existing or not (existing[0].app and (existing[0].all_tenants
                                                     or existing[0].tenants)):
            grant_login(conn, admin, login, None, allow_superuser=store.allow_superuser)
        return versions
    finally:
        conn.close()
