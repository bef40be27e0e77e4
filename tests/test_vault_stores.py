"""The vault on every store: real photos enrolled, verified, identified and erased on PostgreSQL and
on the file store, vaults created through the administrator's URL, and bad store URLs refused."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import psycopg
import pytest

from faceseal.errors import AccessDenied, Conflict, InvalidInput, StorageUnavailable
from faceseal.storage.files import FileStore
from faceseal.storage.pg_common import connect
from faceseal.storage.postgres import PostgresStore
from faceseal.storage.postgres_admin import migrate_schema
from faceseal.storage.postgres_url import parse_pg_url
from faceseal.storage.sqlite import SQLiteStore

from .conftest import EncodingOf, make_vault, reopen_vault, run_cli, vault_keys
from .legacy_vaults import roll_back_to_unsigned
from .pg_support import PgTestDatabase


@pytest.fixture(params=["postgres", "files"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "files":
        return "files:templates"
    return str(request.getfixturevalue("pg_app_url"))


def test_enroll_verify_identify_erase_on_each_store(
        tmp_path: Path, store_url: str, encoding_of: EncodingOf) -> None:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    with make_vault(home, keys, store_url=store_url) as vault:
        vault.enroll("obama", [np.stack([encoding_of("obama-1.jpg"), encoding_of("obama-2.jpg")])])
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
        assert vault.verify("obama", encoding_of("obama-3.jpg")).match
        assert not vault.verify("biden", encoding_of("obama-3.jpg")).match
        found = vault.identify(encoding_of("biden-2.jpg"))
        assert found.best is not None
        assert found.best.subject_id == "biden"
        assert found.gallery_size == 3
    with reopen_vault(home) as vault:
        assert [s.subject_id for s in vault.subjects()] == ["biden", "obama"]
        assert vault.check().damaged == []
        erased = vault.erase("obama")
        assert (erased.templates_erased, erased.key_material_destroyed) == (2, True)
        assert vault.identify(encoding_of("obama-3.jpg")).gallery_size == 1


def test_answer_policy_on_each_store(tmp_path: Path, store_url: str,
                                     encoding_of: EncodingOf) -> None:
    # The tenant policy lives in the store's metadata: set by an admin, read by every process.
    home = tmp_path / "vault"
    with make_vault(home, tmp_path / "keys", store_url=store_url) as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        vault.set_tenant_policy("default", disclosure_level="decision",
                                thresholds={"dlib-resnet-v1": 0.5})
    with reopen_vault(home) as vault:
        policy = vault.tenant_policy("default")
        assert (policy.disclosure, policy.thresholds) == ("decision", {"dlib-resnet-v1": 0.5})
        assert vault.verify("obama", encoding_of("obama-2.jpg")).threshold == 0.5


def test_file_store_files_are_private(tmp_path: Path, encoding_of: EncodingOf) -> None:
    home = tmp_path / "vault"
    with make_vault(home, tmp_path / "keys", store_url="files:templates") as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
    root = home / "templates"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert not (root / "undo.jsonl").exists()


def test_file_store_refuses_a_directory_others_can_read(tmp_path: Path) -> None:
    root = tmp_path / "store"
    FileStore(root, create=True).close()
    root.chmod(0o755)
    with pytest.raises(StorageUnavailable, match="chmod 700"):
        FileStore(root)


def test_file_store_rolls_back_a_transaction_cut_short_by_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileStore(root, create=True)
    store.migrate()
    store.set_meta("vault_id", "v1")
    # A writer that died mid-transaction: its undo log is on disk, its change half applied.
    store._save_pre_images([root / "meta.json"])
    (root / "meta.json").write_text('{"vault_id": "half-written"}')
    store.close()
    with FileStore(root) as again:
        assert again.get_meta("vault_id") == "v1"
    assert not (root / "undo.jsonl").exists()


def test_create_through_the_admin_url_grants_the_login(
        tmp_path: Path, pg_schema: PgTestDatabase, encoding_of: EncodingOf) -> None:
    login = pg_schema.create_login("fresh", grant=False)
    url = pg_schema.store_url(login)
    with pytest.raises(AccessDenied, match="grant-app"):
        make_vault(tmp_path / "v0", tmp_path / "k0", store_url=url)
    assert not (tmp_path / "v0" / "vault.json").exists()
    with make_vault(tmp_path / "v1", tmp_path / "k1", store_url=url,
                    store_admin_url=pg_schema.admin_url()) as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        assert vault.store_description == PostgresStore(url).describe()
    config = json.loads((tmp_path / "v1" / "vault.json").read_text())
    assert config["store_url"] == url


def test_create_on_an_empty_database_with_the_admin_url(
        tmp_path: Path, pg_db: PgTestDatabase, encoding_of: EncodingOf) -> None:
    with pg_db.admin() as admin:
        admin.execute(f'CREATE ROLE "{pg_db.prefix}_login_svc" LOGIN')
    url = pg_db.store_url(f"{pg_db.prefix}_login_svc")
    with make_vault(tmp_path / "v", tmp_path / "k", store_url=url,
                    store_admin_url=pg_db.admin_url()) as vault:
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
    with reopen_vault(tmp_path / "v") as vault:
        assert vault.verify("biden", encoding_of("biden-2.jpg")).match


def test_a_store_holding_a_vault_is_not_taken_over(tmp_path: Path, pg_app_url: str,
                                                   encoding_of: EncodingOf) -> None:
    with make_vault(tmp_path / "v1", tmp_path / "k1", store_url=pg_app_url) as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
    with pytest.raises(Conflict, match="already holds a vault"):
        make_vault(tmp_path / "v2", tmp_path / "k2", store_url=pg_app_url)
    assert not (tmp_path / "v2" / "vault.json").exists()
    with reopen_vault(tmp_path / "v1") as vault:
        assert vault.verify("obama", encoding_of("obama-2.jpg")).match


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://app:hunter2@127.0.0.1/db", "password"),
    ("postgresql://app@127.0.0.1/db?password=hunter2", "password"),
    ("postgresql://app@127.0.0.1/db?schema=Bad-Name", "identifier"),
    ("postgresql://app@127.0.0.1/db?allow_superuser=maybe", "true or false"),
    ("mysql://app@127.0.0.1/db", "unsupported"),
    ("files:", "no path"),
])
def test_bad_store_urls_are_refused_before_anything_is_made(tmp_path: Path, url: str,
                                                            message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        make_vault(tmp_path / "v", tmp_path / "k", store_url=url)
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "v").exists()
    assert not (tmp_path / "k").exists()


def test_an_unreachable_server_is_an_outage_not_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        make_vault(tmp_path / "v", tmp_path / "k",
                   store_url="postgresql://nobody@127.0.0.1:1/nowhere")
    assert not (tmp_path / "v" / "vault.json").exists()


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_init_migrate_grant_and_list(tmp_path: Path, pg_db: PgTestDatabase,
                                         encoding_of: EncodingOf) -> None:
    with pg_db.admin() as admin:
        for name in ("svc", "clerk", "reader"):
            admin.execute(f'CREATE ROLE "{pg_db.prefix}_login_{name}" LOGIN')
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k"),
           "FACESEAL_DB_ADMIN_URL": pg_db.admin_url()}
    url = pg_db.store_url(f"{pg_db.prefix}_login_svc")
    created = run_cli("init", "--json", "--store", url, env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["store"] == PostgresStore(url).describe()
    migrated = run_cli("migrate", "--json", env=env)
    assert migrated.returncode == 0, migrated.stderr
    current = PostgresStore.SCHEMA_VERSION
    assert json.loads(migrated.stdout) == {"schema_version_before": current,
                                           "schema_version": current, "integrity": None}

    clerk, reader = f"{pg_db.prefix}_login_clerk", f"{pg_db.prefix}_login_reader"
    granted = run_cli("db", "grant-app", clerk, "--tenant", "shop", "--json", env=env)
    assert granted.returncode == 0, granted.stderr
    auditor = run_cli("db", "grant-auditor", reader, "--all-tenants", env=env)
    assert auditor.returncode == 0, auditor.stderr
    listed = json.loads(run_cli("db", "grants", "--json", env=env).stdout)["grants"]
    by_role = {g["role"]: g for g in listed}
    assert by_role[clerk] == {"role": clerk, "app": True, "auditor": False,
                              "tenants": ["shop"], "all_tenants": False}
    assert by_role[reader]["auditor"]
    assert by_role[reader]["all_tenants"]
    assert by_role[f"{pg_db.prefix}_login_svc"]["all_tenants"]

    with PostgresStore(pg_db.store_url(clerk)) as store:
        assert store.subjects("shop") == []
        with pytest.raises(AccessDenied):
            store.subjects("default")
    revoked = run_cli("db", "revoke", clerk, "--json", env=env)
    assert json.loads(revoked.stdout)["tenant_grants_removed"] == 1
    with PostgresStore(pg_db.store_url(clerk)) as store, pytest.raises(AccessDenied):
        store.subjects("shop")


@pytest.mark.parametrize(("args", "code"), [
    (["db", "grant-app", "nobody_role", "--all-tenants"], 4),
    (["db", "grant-app", "x"], 2),  # neither --tenant nor --all-tenants
    (["db", "grant-app", "x", "--tenant", "a", "--all-tenants"], 2),
])
def test_cli_grant_refuses_bad_requests(tmp_path: Path, pg_schema: PgTestDatabase,
                                        args: list[str], code: int) -> None:
    env = {"FACESEAL_DB_ADMIN_URL": pg_schema.admin_url(), "FACESEAL_HOME": str(tmp_path)}
    done = run_cli(*args, "--store", pg_schema.store_url("x"), env=env)
    assert done.returncode == code, done.stderr


def test_cli_schema_sql_names_the_store_roles(tmp_path: Path) -> None:
    done = run_cli("db", "schema-sql", "--store",
                   "postgresql://svc@db/faceseal?schema=vault1&roles=acme")
    assert done.returncode == 0, done.stderr
    assert 'CREATE ROLE "acme_owner" NOLOGIN;' in done.stdout
    assert 'CREATE SCHEMA "vault1" AUTHORIZATION "acme_owner";' in done.stdout
    assert "@schema@" not in done.stdout


def _catalog(conn: psycopg.Connection[tuple[object, ...]], schema: str,
             prefix: str) -> set[tuple[str, ...]]:
    """Tables, columns, functions and triggers of ``schema``, role names without ``prefix``."""
    rows = conn.execute(
        "SELECT 'column', table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %(s)s UNION ALL "
        "SELECT 'function', p.proname, pg_get_function_identity_arguments(p.oid), "
        "       pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n "
        "       ON n.oid = p.pronamespace WHERE n.nspname = %(s)s UNION ALL "
        "SELECT 'trigger', event_object_table, trigger_name, action_timing "
        "FROM information_schema.triggers WHERE trigger_schema = %(s)s UNION ALL "
        "SELECT 'migration', version::text, '', '' FROM " + f'"{schema}"' + ".schema_migrations",
        {"s": schema}).fetchall()
    return {tuple(str(v).replace(prefix, "P") for v in row) for row in rows}


def test_schema_sql_is_the_schema_migrate_makes(pg_db: PgTestDatabase) -> None:
    """`db schema-sql` and `migrate` share one builder: the printed script, run with psql's
    rights, makes the same tables, functions, owners and triggers as `migrate`."""
    printed_prefix, migrated_prefix = f"{pg_db.prefix}_p", f"{pg_db.prefix}_m"
    done = run_cli("db", "schema-sql", "--store", pg_db.admin_url(
        schema="printed", roles=printed_prefix))
    assert done.returncode == 0, done.stderr
    with pg_db.admin() as conn:
        with conn.transaction():
            conn.execute(done.stdout.encode())
        location = parse_pg_url(pg_db.admin_url(schema="migrated", roles=migrated_prefix))
        with connect(location) as migrating:
            migrate_schema(migrating, location)
        printed = _catalog(conn, "printed", printed_prefix)
        assert printed
        assert printed == _catalog(conn, "migrated", migrated_prefix)


def test_cli_init_with_a_files_store(tmp_path: Path, encoding_of: EncodingOf) -> None:
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k")}
    created = run_cli("init", "--json", "--store", "files:templates", env=env)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "v" / "templates" / "store.json").is_file()
    with reopen_vault(tmp_path / "v") as vault:
        assert vault.store_description == f"files:{tmp_path / 'v' / 'templates'}"
    assert os.environ.get("FACESEAL_HOME") != str(tmp_path / "v")


def _as_sqlite_schema_2(db: sqlite3.Connection) -> None:
    """Undo migrations 4 (change log) and 3 (gallery index) in place."""
    for statement in ("DROP INDEX templates_by_change", "ALTER TABLE templates DROP COLUMN "
                      "change_seq", "DROP TABLE change_heads", "DROP TABLE changes",
                      "DROP TABLE counter_events", "DROP INDEX templates_by_tenant",
                      "DELETE FROM schema_migrations WHERE version IN (3, 4)"):
        db.execute(statement)


def test_a_sqlite_vault_from_schema_2_migrates_to_the_gallery_index_and_change_log(
        tmp_path: Path, encoding_of: EncodingOf) -> None:
    home, keys = tmp_path / "v", tmp_path / "k"
    with make_vault(home, keys) as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
    roll_back_to_unsigned(home, keys)  # as the release before signed principals left it
    with sqlite3.connect(home / "templates.db") as db:  # and an earlier one
        _as_sqlite_schema_2(db)
    db.close()
    with pytest.raises(StorageUnavailable, match="faceseal migrate"):
        reopen_vault(home)
    done = run_cli("migrate", "--json", env={"FACESEAL_HOME": str(home),
                                             "FACESEAL_API_KEY": vault_keys(home).admin})
    document = json.loads(done.stdout)
    assert (document["schema_version_before"], document["schema_version"]) == (
        2, SQLiteStore.SCHEMA_VERSION)
    assert document["integrity"]["principals_signed"] == ["admin", "test-worker"]
    with reopen_vault(home) as vault:
        assert vault.verify("obama", encoding_of("obama-2.jpg")).match
        # Templates from before the change log carry change 0: loaded with everything else.
        assert vault.identify(encoding_of("obama-2.jpg")).best.subject_id == "obama"
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
        assert vault.identify(encoding_of("biden-2.jpg")).best.subject_id == "biden"
    with sqlite3.connect(home / "templates.db") as db:
        plan = db.execute("EXPLAIN QUERY PLAN SELECT template_id FROM templates WHERE "
                          "template_id > '' AND tenant = 'default' ORDER BY template_id "
                          "LIMIT 10").fetchall()
    db.close()
    assert "templates_by_tenant" in str(plan)
    assert "TEMP B-TREE" not in str(plan)
