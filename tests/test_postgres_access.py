"""PostgreSQL enforces access itself: attacks made with the application's own credentials.

Connected as the application login (or the auditor, or even the owner role), hand-written SQL
tries to read the tables, read another tenant's rows through the functions, and rewrite the
audit log; each attempt must end in PostgreSQL's permission error.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql

from faceseal.errors import AccessDenied, StorageMisconfigured, StorageUnavailable
from faceseal.storage.base import AuditRecord, TemplateRow
from faceseal.storage.postgres import PostgresStore
from faceseal.storage.postgres_admin import grant_login, revoke_login
from faceseal.storage.postgres_url import parse_pg_url

from .pg_support import PgTestDatabase

S = "faceseal"  # the schema the test databases use


def row(tenant: str, subject: str) -> TemplateRow:
    return TemplateRow(os.urandom(16).hex(), tenant, subject, "dlib-resnet-v1", 128, "float64",
                       1, os.urandom(1060), time.time())


def event(seq: int, mac: bytes, tenant: str | None) -> AuditRecord:
    return AuditRecord(seq, os.urandom(8).hex(), time.time(), "admin", "admin", "enroll", tenant,
                       None, (), "ok", "r", "", mac, os.urandom(32))


@dataclass
class Tenants:
    db: PgTestDatabase
    app: str  # every tenant
    tenant_a: str  # tenant "a" only
    auditor: str  # audit log reader, every tenant
    rows: dict[str, list[TemplateRow]]

    def connect(self, login: str) -> psycopg.Connection[tuple[object, ...]]:
        return self.db.connect_as(login)


@pytest.fixture
def tenants(pg_schema: PgTestDatabase) -> Tenants:
    """Tenants a and b with templates and audit events; logins for all, for a, for auditing."""
    app = pg_schema.create_login("app")
    tenant_a = pg_schema.create_login("tenant_a", tenants=["a"])
    auditor = pg_schema.create_login("auditor", group="auditor")
    rows = {"a": [row("a", "s1"), row("a", "s2")], "b": [row("b", "s3")]}
    with PostgresStore(pg_schema.store_url(app)) as store:
        store.insert_data_key(1, b"wrapped", 1.0)
        store.add_templates(rows["a"] + rows["b"])
        for tenant in ("a", "b", None):
            store.append_audit(lambda seq, mac, tenant=tenant: event(seq, mac, tenant))
    return Tenants(pg_schema, app, tenant_a, auditor, rows)


def refused(conn: psycopg.Connection[tuple[object, ...]], statement: str,
            params: tuple[object, ...] = ()) -> pg_errors.InsufficientPrivilege:
    with pytest.raises(pg_errors.InsufficientPrivilege) as caught:
        conn.execute(statement, params)
    return caught.value


# --- no table privileges -------------------------------------------------------------------------

TABLES = ["templates", "subjects", "data_keys", "key_usage", "meta", "principals",
          "tenant_grants", "tenants", "audit_events", "audit_head", "schema_migrations",
          "change_heads", "changes", "counter_events"]


@pytest.mark.parametrize("table", TABLES)
def test_app_login_cannot_select_any_table(tenants: Tenants, table: str) -> None:
    with tenants.connect(tenants.app) as conn:
        error = refused(conn, f"SELECT * FROM {S}.{table}")
    assert "permission denied" in str(error)


@pytest.mark.parametrize("statement", [
    f"INSERT INTO {S}.templates (template_id) VALUES ('x')",
    f"UPDATE {S}.data_keys SET wrapped = 'x'",
    f"DELETE FROM {S}.subjects",
    f"COPY {S}.templates TO STDOUT",
    f"INSERT INTO {S}.tenant_grants (role_oid, role_name) VALUES (1, 'me')",
    f"CREATE TABLE {S}.planted (x int)",
    f"SELECT {S}.fs_require_tenant('a')",
    f"SELECT {S}.fs_log_change('a', 'erase', 's1', 1)",
    f"INSERT INTO {S}.changes (tenant, seq, kind, templates, at) VALUES ('a', 99, 'erase', 0, 1)",
    f"UPDATE {S}.change_heads SET seq = 0",
])
def test_app_login_cannot_write_tables_or_use_internals(tenants: Tenants, statement: str) -> None:
    with tenants.connect(tenants.app) as conn:
        refused(conn, statement)


def test_app_login_cannot_become_the_owner(tenants: Tenants) -> None:
    with tenants.connect(tenants.app) as conn:
        refused(conn, f"SET ROLE {tenants.db.prefix}_owner")


# --- append-only audit log -----------------------------------------------------------------------

AUDIT_CHANGES = [
    f"UPDATE {S}.audit_events SET outcome = 'denied'",
    f"DELETE FROM {S}.audit_events WHERE seq = 1",
    f"TRUNCATE {S}.audit_events",
]


@pytest.mark.parametrize("login", ["app", "auditor"])
@pytest.mark.parametrize("statement", AUDIT_CHANGES)
def test_audit_table_refuses_changes(tenants: Tenants, login: str, statement: str) -> None:
    with tenants.connect(getattr(tenants, login)) as conn:
        refused(conn, statement)
    with tenants.db.admin() as admin:
        assert admin.execute(f"SELECT count(*) FROM {S}.audit_events").fetchone() == (3,)


@pytest.mark.parametrize("statement", AUDIT_CHANGES)
def test_audit_triggers_refuse_even_the_owner(tenants: Tenants, statement: str) -> None:
    with tenants.db.admin() as admin:
        admin.execute(f"SET ROLE {tenants.db.prefix}_owner")
        admin.execute(f"ALTER TABLE {S}.audit_events NO FORCE ROW LEVEL SECURITY")
        error = refused(admin, statement)
        admin.execute(f"ALTER TABLE {S}.audit_events FORCE ROW LEVEL SECURITY")
        admin.execute("RESET ROLE")
        assert "append-only" in str(error)
        assert admin.execute(f"SELECT count(*) FROM {S}.audit_events").fetchone() == (3,)


def test_audit_insert_must_continue_the_chain(tenants: Tenants) -> None:
    with tenants.connect(tenants.app) as conn, pytest.raises(
            pg_errors.IntegrityConstraintViolation):
        conn.execute(f"SELECT {S}.fs_audit_append(9, 'e', 1.0, 'p', 'r', 'a', 'a', NULL, "
                     "'{}', 'ok', 'r', '', '\\x00', '\\x01')")


def test_auditor_reads_the_audit_log_and_nothing_else(tenants: Tenants) -> None:
    with tenants.connect(tenants.auditor) as conn:
        seqs = [r[0] for r in conn.execute(f"SELECT seq FROM {S}.audit_events ORDER BY seq")]
        assert seqs == [1, 2, 3]
        assert len(conn.execute(f"SELECT * FROM {S}.fs_audit_events(0, NULL, NULL, 10)")
                   .fetchall()) == 3
        refused(conn, f"SELECT * FROM {S}.templates")
        refused(conn, f"SELECT * FROM {S}.fs_subject_templates('a', 's1')")
        refused(conn, f"SELECT * FROM {S}.fs_load_data_keys()")
        refused(conn, f"INSERT INTO {S}.audit_events (seq) VALUES (4)")


def test_auditor_scoped_to_a_tenant_reads_only_its_events(tenants: Tenants) -> None:
    scoped = tenants.db.create_login("auditor_a", tenants=["a"], group="auditor")
    with tenants.connect(scoped) as conn:
        rows = conn.execute(f"SELECT tenant FROM {S}.audit_events").fetchall()
    assert rows == [("a",)]


# --- tenant separation ---------------------------------------------------------------------------

OTHER_TENANT_CALLS = [
    ("fs_subject_templates", "SELECT * FROM {s}.fs_subject_templates('b', 's3')"),
    ("fs_gallery", "SELECT * FROM {s}.fs_gallery('b', '', 100)"),
    ("fs_subjects", "SELECT * FROM {s}.fs_subjects('b')"),
    ("fs_subject_exists", "SELECT {s}.fs_subject_exists('b', 's3')"),
    ("fs_touch_subject", "SELECT {s}.fs_touch_subject('b', 's3', 1e12)"),
    ("fs_erase_subject", "SELECT {s}.fs_erase_subject('b', 's3')"),
    ("fs_inactive_subjects", "SELECT * FROM {s}.fs_inactive_subjects('b', 1e12)"),
    ("fs_set_retention", "SELECT {s}.fs_set_retention('b', 1)"),
    ("fs_retention", "SELECT {s}.fs_retention('b')"),
    ("fs_enrol", "SELECT {s}.fs_enrol(ARRAY['t'], ARRAY['b'], ARRAY['s9'], ARRAY['m'], "
                 "ARRAY[128], ARRAY['float64'], ARRAY[1], ARRAY['\\x00'::bytea], "
                 "ARRAY[1.0::float8], 1.0)"),
    ("fs_set_meta", "SELECT {s}.fs_set_meta('vault_id', 'stolen')"),
    ("fs_replace_wrapped", "SELECT {s}.fs_replace_wrapped(1, '\\x00')"),
    ("fs_change_head", "SELECT {s}.fs_change_head('b')"),
    ("fs_changes", "SELECT * FROM {s}.fs_changes('b', 0, 100)"),
    ("fs_templates_added", "SELECT * FROM {s}.fs_templates_added('b', -1, NULL, 100, 10)"),
]


@pytest.mark.parametrize(("function", "statement"), OTHER_TENANT_CALLS,
                         ids=[f for f, _ in OTHER_TENANT_CALLS])
def test_tenant_login_cannot_reach_another_tenant_through_functions(
        tenants: Tenants, function: str, statement: str) -> None:
    with tenants.connect(tenants.tenant_a) as conn:
        error = refused(conn, statement.format(s=S))
    assert "not granted" in str(error) or "every tenant" in str(error)
    with PostgresStore(tenants.db.store_url(tenants.app)) as store:
        assert [r.template_id for r in store.subject_templates("b", "s3")] == [
            r.template_id for r in tenants.rows["b"]]
        assert store.retention("b") is None
        assert store.get_meta("vault_id") is None
        assert not store.subject_exists("b", "s9")


def test_row_security_limits_what_the_functions_return(tenants: Tenants) -> None:
    with tenants.connect(tenants.tenant_a) as conn:
        gallery = conn.execute(f"SELECT template_id FROM {S}.fs_gallery(NULL, '', 100)")
        assert sorted(r[0] for r in gallery) == sorted(r.template_id for r in tenants.rows["a"])
        assert [r[0] for r in conn.execute(f"SELECT * FROM {S}.fs_tenants()")] == ["a"]
        events = conn.execute(f"SELECT tenant FROM {S}.fs_audit_events(0, NULL, NULL, 10)")
        assert events.fetchall() == [("a",)]  # neither b's nor the tenant-less event
        b_id = tenants.rows["b"][0].template_id
        changed = conn.execute(f"SELECT {S}.fs_replace_records(ARRAY[%s], ARRAY['\\x00'::bytea],"
                               " ARRAY[1])", (b_id,)).fetchone()
        assert changed == (0,)


def test_forced_row_security_binds_the_owner_role_too(tenants: Tenants) -> None:
    with tenants.db.admin() as admin:
        admin.execute(f"SET ROLE {tenants.db.prefix}_owner")
        assert admin.execute(f"SELECT count(*) FROM {S}.templates").fetchone() == (0,)
        admin.execute("RESET ROLE")


def test_functions_ignore_a_planted_temp_table(tenants: Tenants) -> None:
    with tenants.connect(tenants.tenant_a) as conn:
        conn.execute("CREATE TEMP TABLE templates (template_id text, tenant text, "
                     "subject_id text, model_id text, dimension int, dtype text, "
                     "key_version int, record bytea, created_at float8)")
        conn.execute("INSERT INTO pg_temp.templates VALUES ('planted', 'b', 's3', 'm', 128, "
                     "'float64', 1, '\\x00', 0)")
        conn.execute("SET search_path = pg_temp, public")
        refused(conn, f"SELECT * FROM {S}.fs_subject_templates('b', 's3')")
        got = conn.execute(f"SELECT template_id FROM {S}.fs_subject_templates('a', 's1')")
        assert [r[0] for r in got] == [tenants.rows["a"][0].template_id]


def test_store_of_a_tenant_login_gets_access_denied_and_writes_nothing(tenants: Tenants) -> None:
    with PostgresStore(tenants.db.store_url(tenants.tenant_a)) as store:
        assert len(store.subject_templates("a", "s1")) == 1
        with pytest.raises(AccessDenied):
            store.subject_templates("b", "s3")
        with pytest.raises(AccessDenied):
            store.add_templates([row("a", "s7"), row("b", "s8")])
        assert not store.subject_exists("a", "s7")
        with pytest.raises(AccessDenied):
            list(store.gallery("b"))
        assert {r.tenant for batch in store.gallery(None) for r in batch} == {"a"}
        assert store.key_version_counts() == {1: 3}  # counts cover every tenant


def test_revoked_login_loses_access_at_once(tenants: Tenants) -> None:
    location = parse_pg_url(tenants.db.admin_url(schema=S, roles=tenants.db.prefix))
    with PostgresStore(tenants.db.store_url(tenants.tenant_a)) as store:
        assert store.subject_exists("a", "s1")
        with tenants.db.admin() as admin:
            assert revoke_login(admin, location, tenants.tenant_a, ["a"]) == 1
        with pytest.raises(AccessDenied):
            store.subject_exists("a", "s1")
        with tenants.db.admin() as admin:
            grant_login(admin, location, tenants.tenant_a, ["a"])
            revoke_login(admin, location, tenants.tenant_a)
        with pytest.raises(AccessDenied, match="permission denied"):
            store.subject_exists("a", "s1")


# --- how the schema is built ---------------------------------------------------------------------


def test_everything_belongs_to_the_nologin_owner(tenants: Tenants) -> None:
    owner = f"{tenants.db.prefix}_owner"
    with tenants.db.admin() as admin:
        can_login = admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                  (owner,)).fetchone()
        assert can_login == (False,)
        owners = admin.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s", (S,))
        assert owners.fetchall() == [(owner,)]
        functions = admin.execute(
            "SELECT p.proname, pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig, "
            "p.prorettype = 'trigger'::regtype FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s", (S,)).fetchall()
    assert functions
    for name, function_owner, definer, config, is_trigger in functions:
        assert function_owner == owner, name
        assert f"search_path={S}, pg_temp" in (config or []), name
        assert definer or is_trigger, name


def test_public_cannot_execute_any_function(tenants: Tenants) -> None:
    stranger = f"{tenants.db.prefix}_stranger"
    with tenants.db.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stranger)))
    with tenants.connect(stranger) as conn:
        refused(conn, f"SELECT {S}.fs_schema_version()")
    with pytest.raises(AccessDenied, match="grant-app"):
        PostgresStore(tenants.db.store_url(stranger)).schema_version()


# --- refusing unsafe servers and logins ----------------------------------------------------------


@pytest.mark.parametrize("how", ["role setting", "connection option"])
def test_synchronous_commit_off_is_refused_unless_allowed(pg_schema: PgTestDatabase,
                                                          how: str) -> None:
    login = pg_schema.create_login("lazy")
    params: dict[str, str] = {}
    if how == "role setting":
        with pg_schema.admin() as admin:
            admin.execute(sql.SQL("ALTER ROLE {} SET synchronous_commit = off").format(
                sql.Identifier(login)))
    else:
        params["options"] = "-c synchronous_commit=off"
    with pytest.raises(StorageMisconfigured, match="synchronous_commit=off"):
        PostgresStore(pg_schema.store_url(login, **params))
    with PostgresStore(pg_schema.store_url(login, allow_unsafe_durability="true",
                                           **params)) as store:
        assert store.schema_version() == store.SCHEMA_VERSION


def test_superuser_login_is_refused_unless_allowed(pg_schema: PgTestDatabase) -> None:
    url = pg_schema.superuser_store_url()
    with pytest.raises(StorageMisconfigured, match="superuser"):
        PostgresStore(url.replace("allow_superuser=true", "allow_superuser=false"))
    with PostgresStore(url) as store:
        assert store.schema_version() == store.SCHEMA_VERSION


@pytest.mark.parametrize("damage", [
    f"ALTER TABLE {S}.templates NO FORCE ROW LEVEL SECURITY",
    f"ALTER TABLE {S}.subjects DISABLE ROW LEVEL SECURITY",
    f"GRANT SELECT ON {S}.templates TO {{login}}",
    f"GRANT DELETE ON {S}.audit_events TO {{login}}",
])
def test_a_weakened_schema_is_refused(pg_schema: PgTestDatabase, damage: str) -> None:
    login = pg_schema.create_login("app")
    with pg_schema.admin() as admin:
        admin.execute(f"SET ROLE {pg_schema.prefix}_owner")
        admin.execute(damage.format(login=login))
    with pytest.raises(StorageMisconfigured, match="not locked down"):
        PostgresStore(pg_schema.store_url(login))


# --- credentials stay out of sight ---------------------------------------------------------------


def test_describe_and_repr_strip_the_password(pg_app_url: str) -> None:
    with_password = pg_app_url.replace("@", ":Sup3rSecret@", 1)
    with PostgresStore(with_password) as store:  # trust auth accepts and ignores it
        assert "Sup3rSecret" not in store.describe()
        assert "Sup3rSecret" not in repr(store)
        assert store.describe().startswith("postgresql://")


def test_connection_errors_do_not_show_the_password(pg_db: PgTestDatabase) -> None:
    url = f"postgresql://someone:Sup3rSecret@127.0.0.1:1/{pg_db.name}"
    with pytest.raises(StorageUnavailable) as caught:
        PostgresStore(url)
    assert "Sup3rSecret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


# --- a private cluster with fsync=off -------------------------------------------------------------


def test_fsync_off_server_is_refused_unless_allowed(private_cluster_url: str) -> None:
    with pytest.raises(StorageMisconfigured, match="fsync=off"):
        PostgresStore(private_cluster_url)
    with PostgresStore(private_cluster_url + "&allow_unsafe_durability=true") as store:
        assert store.schema_version() == 0


def test_a_dropped_connection_is_an_outage_then_recovers(tenants: Tenants) -> None:
    with PostgresStore(tenants.db.store_url(tenants.app)) as store:
        assert store.subject_exists("a", "s1")
        with tenants.db.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = %s", (tenants.app,))
        with pytest.raises(StorageUnavailable):
            store.subject_exists("a", "s1")
        assert store.subject_exists("a", "s1")  # reconnected


def test_granting_twice_keeps_one_grant(tenants: Tenants) -> None:
    location = parse_pg_url(tenants.db.admin_url(schema=S, roles=tenants.db.prefix))
    with tenants.db.admin() as admin:
        grant_login(admin, location, tenants.tenant_a, ["a"])
        grant_login(admin, location, tenants.tenant_a, ["a", "c"])
        admin.execute(f"SET ROLE {tenants.db.prefix}_owner")
        rows = admin.execute(f"SELECT tenant FROM {S}.tenant_grants g JOIN pg_roles r "
                             "ON r.oid = g.role_oid WHERE r.rolname = %s ORDER BY tenant",
                             (tenants.tenant_a,)).fetchall()
        admin.execute("RESET ROLE")
    assert rows == [("a",), ("c",)]


def test_a_login_in_the_owner_role_is_refused(pg_schema: PgTestDatabase) -> None:
    login = pg_schema.create_login("dba")
    with pg_schema.admin() as admin:
        admin.execute(f'GRANT "{pg_schema.prefix}_owner" TO "{login}"')
    with pytest.raises(StorageMisconfigured, match="member of"):
        PostgresStore(pg_schema.store_url(login))
