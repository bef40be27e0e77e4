"""``faceseal db ...`` (PostgreSQL logins and schema SQL) and ``faceseal import-legacy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from faceseal.cli.common import common_options, no_password_in_argv, open_vault
from faceseal.cli.group import FullHelpGroup
from faceseal.cli.output import EXIT_NO_MATCH, EXIT_OK, Output
from faceseal.cli.progress import progress_bar
from faceseal.cli.vault_commands import model_option, tenant_option
from faceseal.errors import InvalidInput
from faceseal.storage.legacy_source import DEFAULT_TABLE
from faceseal.storage.postgres_url import PgLocation, is_postgres_url, parse_pg_url
from faceseal.vault.config import VaultConfig
from faceseal.vault.legacy_import import (
    MAX_BATCH,
    LegacyImportOptions,
    failed_rows_text,
    read_legacy_key,
)
from faceseal.vault.paths import default_home

admin_url_required = click.option(
    "--admin-url", envvar="FACESEAL_DB_ADMIN_URL", required=True, metavar="URL",
    callback=no_password_in_argv,
    help="PostgreSQL administrator URL (superuser, or CREATEROLE and owner of the database); "
         "default $FACESEAL_DB_ADMIN_URL. Never saved.")
store_url_option = click.option(
    "--store", "store_url", default=None, metavar="URL", callback=no_password_in_argv,
    help="The postgresql:// store URL (default: the store of the vault at --vault).")


def _store_location(vault_dir: Path | None, store_url: str | None) -> PgLocation:
    if store_url is None:
        home = (vault_dir or default_home()).expanduser().resolve()
        store_url = VaultConfig.load(home).store_url
    if not is_postgres_url(store_url):
        raise InvalidInput("this vault's template store is not PostgreSQL")
    return parse_pg_url(store_url)


def _admin(vault_dir: Path | None, store_url: str | None, admin_url: str) -> tuple[Any, Any]:
    from faceseal.storage.pg_common import connect  # noqa: PLC0415 - optional extra
    from faceseal.storage.postgres_admin import admin_location  # noqa: PLC0415

    location = admin_location(admin_url, _store_location(vault_dir, store_url))
    return location, connect(location, purpose="administration")


@click.group(cls=FullHelpGroup)
def db() -> None:
    """PostgreSQL: attach login roles, list them, print the schema SQL."""


def _tenant_scope(tenants: tuple[str, ...], all_tenants: bool) -> list[str] | None:
    if bool(tenants) == all_tenants:
        raise click.UsageError("name the tenants (--tenant T, repeatable) or pass --all-tenants")
    return None if all_tenants else list(tenants)


def _grant_command(group: str, summary: str) -> click.Command:
    @click.command(name=f"grant-{group}", help=summary)
    @click.argument("role")
    @click.option("--tenant", "tenants", multiple=True, help="A tenant the role may use.")
    @click.option("--all-tenants", is_flag=True, help="Let the role use every tenant.")
    @store_url_option
    @admin_url_required
    @common_options
    def command(output: Output, vault_dir: Path | None, role: str, tenants: tuple[str, ...],
                all_tenants: bool, store_url: str | None, admin_url: str) -> None:
        from faceseal.storage.postgres_admin import grant_login  # noqa: PLC0415

        scope = _tenant_scope(tenants, all_tenants)
        location, conn = _admin(vault_dir, store_url, admin_url)
        with conn:
            grant_login(conn, location, role, scope, group="app" if group == "app" else "auditor")
        document = {"role": role, "group": group, "schema": location.schema,
                    "tenants": scope, "all_tenants": scope is None}
        output.emit(document, lambda: click.echo(
            f"Granted {role} as {group} on schema {location.schema} for "
            + ("every tenant" if scope is None else "tenant(s) " + ", ".join(scope))))

    return command


db.add_command(_grant_command(
    "app", "Let login ROLE run the vault (enrol, match, erase...) for the given tenants."))
db.add_command(_grant_command(
    "auditor", "Let login ROLE read the audit log (and nothing else) for the given tenants."))


@db.command()
@click.argument("role")
@click.option("--tenant", "tenants", multiple=True,
              help="Take only this tenant (repeatable); default: everything.")
@store_url_option
@admin_url_required
@common_options
def revoke(output: Output, vault_dir: Path | None, role: str, tenants: tuple[str, ...],
           store_url: str | None, admin_url: str) -> None:
    """Take tenants, or everything (tenants and group roles), from login ROLE."""
    from faceseal.storage.postgres_admin import revoke_login  # noqa: PLC0415

    location, conn = _admin(vault_dir, store_url, admin_url)
    with conn:
        removed = revoke_login(conn, location, role, list(tenants) or None)
    output.emit({"role": role, "tenant_grants_removed": removed},
                lambda: click.echo(f"Revoked {removed} tenant grant(s) from {role}"))


@db.command()
@store_url_option
@admin_url_required
@common_options
def grants(output: Output, vault_dir: Path | None, store_url: str | None,
           admin_url: str) -> None:
    """List the login roles attached to the schema and their tenants."""
    from faceseal.storage.postgres_admin import list_grants  # noqa: PLC0415

    location, conn = _admin(vault_dir, store_url, admin_url)
    with conn:
        found = list_grants(conn, location)

    def human() -> None:
        for grant in found:
            groups = "+".join(g for g, on in (("app", grant.app), ("auditor", grant.auditor))
                              if on) or "-"
            scope = "every tenant" if grant.all_tenants else ", ".join(grant.tenants) or "none"
            click.echo(f"{grant.role}\t{groups}\t{scope}")

    output.emit({"schema": location.schema, "grants": [
        {"role": g.role, "app": g.app, "auditor": g.auditor, "tenants": list(g.tenants),
         "all_tenants": g.all_tenants} for g in found]}, human)


@db.command("schema-sql")
@store_url_option
@common_options
def schema_sql(output: Output, vault_dir: Path | None, store_url: str | None) -> None:
    """Print the SQL that `faceseal migrate` runs, for review or for running with psql."""
    from faceseal.storage.postgres_admin import schema_script  # noqa: PLC0415

    location = _store_location(vault_dir, store_url) if (store_url or vault_dir) else \
        parse_pg_url("postgresql:///")
    text = schema_script(location)
    output.emit({"sql": text}, lambda: click.echo(text, nl=False))


@click.command("import-legacy")
@click.option("--source", required=True, metavar="URL", envvar="FACESEAL_LEGACY_SOURCE",
              callback=no_password_in_argv,
              help="The legacy database: sqlite:PATH or postgresql://... (no password on the "
                   "command line: ~/.pgpass, $PGPASSWORD, or the URL in "
                   "$FACESEAL_LEGACY_SOURCE).")
@click.option("--table", default=DEFAULT_TABLE, show_default=True,
              help="The legacy table (or schema.table).")
@click.option("--legacy-key-file", "legacy_key_file",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File holding the old AES-256 key: 32 raw bytes, 64 hex digits or base64.")
@click.option("--legacy-key-env", "legacy_key_env", metavar="VAR", default=None,
              help="Environment variable holding the old key (hex or base64).")
@tenant_option
@model_option
@click.option("--iv-layout", type=click.Choice(["auto", "column", "prepended"]), default="auto",
              show_default=True, help="Where each row's 16-byte IV is.")
@click.option("--text-encoding", type=click.Choice(["auto", "hex", "base64"]), default="auto",
              show_default=True, help="How text columns spell binary values.")
@click.option("--plaintext", type=click.Choice(["auto", "float64", "json"]), default="auto",
              show_default=True, help="What the decrypted bytes are.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=1000, show_default=True,
              help="Rows committed together.")
@click.option("--again", is_flag=True,
              help="Import even though this source and table were imported before.")
@common_options
def import_legacy(output: Output, vault_dir: Path | None, source: str, table: str,
                  legacy_key_file: Path | None, legacy_key_env: str | None, tenant: str,
                  model: str | None,
                  iv_layout: str, text_encoding: str, plaintext: str, batch_size: int,
                  again: bool) -> None:
    """Re-seal a legacy AES-256-CBC face_encodings table into the vault.

    Exit 0 when every row was imported, 1 when some rows could not be (they are listed).
    Needs the enroller role on the tenant (your API key: --key-file or $FACESEAL_API_KEY).
    """
    options = LegacyImportOptions(table=table, iv_layout=iv_layout,  # type: ignore[arg-type]
                                  text_encoding=text_encoding,  # type: ignore[arg-type]
                                  plaintext=plaintext, batch_size=batch_size,  # type: ignore[arg-type]
                                  again=again)
    options.check()
    key = read_legacy_key(key_file=legacy_key_file, key_env=legacy_key_env)
    try:
        with open_vault(vault_dir) as vault, progress_bar("importing", output, "row") as progress:
            result = vault.import_legacy(source, key, tenant=tenant, model=model,
                                         options=options, progress=progress)
    finally:
        key.wipe()

    def human() -> None:
        click.echo(f"Imported {result.imported} of {result.rows_read} row(s) from "
                   f"{result.source} into tenant {result.tenant} ({result.subjects} subject(s))")
        if result.resumed_after is not None:
            click.echo(f"  (resumed after id {result.resumed_after})")
        if result.failed:
            click.echo(f"{len(result.failed)} row(s) not imported:")
            for line in failed_rows_text(result.failed):
                click.echo(f"  {line}")
            if result.imported == 0:
                click.echo("No row could be opened: is it the right key and layout?")

    output.emit(result.to_dict(), human)
    raise SystemExit(EXIT_NO_MATCH if result.failed else EXIT_OK)
