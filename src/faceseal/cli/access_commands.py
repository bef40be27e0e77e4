"""principals, tenants, purge: who may do what, per tenant, and for how long data is kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from faceseal.cli.common import (
    common_options,
    open_vault,
    passphrase_from_env_or_prompt,
    show_new_key,
    write_key_file,
)
from faceseal.cli.group import FullHelpGroup
from faceseal.cli.output import Output
from faceseal.cli.progress import progress_bar
from faceseal.vault import Vault
from faceseal.vault.durations import format_duration, parse_duration

ROLE_NAMES = ("admin", "enroller", "verifier", "identifier", "auditor")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group(cls=FullHelpGroup)
def principals() -> None:
    """Principals: who holds an API key, with which roles, over which tenant."""


@principals.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(ROLE_NAMES, case_sensitive=False),
              help="A role to grant (repeat for several).")
@click.option("--tenant", default=None,
              help="Tenant the principal is scoped to (default: 'default' for enroller, verifier "
                   "and identifier; every tenant for admins and auditors).")
@click.option("--all-tenants", is_flag=True, help="Scope the principal to every tenant.")
@click.option("--write-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the new API key to this new file (0600) instead of printing it.")
@common_options
def principals_add(output: Output, vault_dir: Path | None, name: str, roles: tuple[str, ...],
                   tenant: str | None, all_tenants: bool, write_key: Path | None) -> None:
    """Add principal NAME; its API key is shown once (only a hash is stored). Needs admin."""
    if write_key is not None and write_key.exists():
        raise click.UsageError(f"{write_key} exists already; refusing to overwrite it")
    with open_vault(vault_dir) as vault:
        created = vault.add_principal(name, list(roles), tenant=tenant, all_tenants=all_tenants)
    document = created.to_dict()
    if write_key is not None:
        write_key_file(write_key, created.api_key)
        document.pop("api_key")
        document["api_key_file"] = str(write_key)
    principal = created.principal

    def human() -> None:
        click.echo(f"Added principal {principal.name}: roles {principal.role_names}, tenant "
                   f"{'every tenant' if principal.tenant is None else principal.tenant}.")
        show_new_key(principal.name, created.api_key, write_key)

    output.emit(document, human)


@principals.command("list")
@common_options
def principals_list(output: Output, vault_dir: Path | None) -> None:
    """List principals (no keys, no hashes). Needs admin."""
    with open_vault(vault_dir) as vault:
        found = vault.principals()

    def human() -> None:
        for p in found:
            state = "active" if p.active else f"revoked {_when(p.revoked_at)}"
            click.echo(f"{p.name}\t{p.role_names}\ttenant {p.scope}\tkey {p.key_id}\t{state}")
        click.echo(f"{len(found)} principal(s)")

    output.emit({"principals": [p.to_dict() for p in found]}, human)


@principals.command("revoke")
@click.argument("name")
@common_options
def principals_revoke(output: Output, vault_dir: Path | None, name: str) -> None:
    """Revoke NAME's API key, effective at once. Needs admin."""
    with open_vault(vault_dir) as vault:
        revoked = vault.revoke_principal(name)
    output.emit(revoked.to_dict(), lambda: click.echo(
        f"Revoked {revoked.name}: its key {revoked.key_id} is refused from now on."))


@principals.command("bootstrap")
@click.option("--name", default="admin", show_default=True, help="Name of the first admin.")
@click.option("--write-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the API key to this new file (0600) instead of printing it.")
@common_options
def principals_bootstrap(output: Output, vault_dir: Path | None, name: str,
                         write_key: Path | None) -> None:
    """Create the first admin of a vault that has no principal at all (made by an older
    faceseal). Refused once any principal exists; `faceseal init` does this for new vaults."""
    if write_key is not None and write_key.exists():
        raise click.UsageError(f"{write_key} exists already; refusing to overwrite it")
    with Vault.bootstrap_admin(vault_dir, name=name,
                               passphrase=passphrase_from_env_or_prompt) as vault:
        key = vault.bootstrap_admin_key
        assert key is not None
    document: dict[str, object] = {"admin": name}
    if write_key is not None:
        write_key_file(write_key, key)
        document["admin_key_file"] = str(write_key)
    else:
        document["admin_key"] = key
    output.emit(document, lambda: show_new_key(name, key, write_key))


@click.group(cls=FullHelpGroup)
def tenants() -> None:
    """Tenants: how long they keep inactive subjects, and what match answers reveal."""


@tenants.command("list")
@common_options
def tenants_list(output: Output, vault_dir: Path | None) -> None:
    """List tenants and their retention periods. Needs admin or auditor."""
    with open_vault(vault_dir) as vault:
        found = vault.tenants()

    def human() -> None:
        for t in found:
            retention = ("no limit" if t.retention_seconds is None
                         else format_duration(t.retention_seconds))
            click.echo(f"{t.tenant}\tretention {retention}")
        click.echo(f"{len(found)} tenant(s)")

    output.emit({"tenants": [t.to_dict() for t in found]}, human)


@tenants.command("policy")
@click.argument("tenant")
@click.option("--disclosure", "level", type=click.Choice(["band", "decision"]), default=None,
              help="What verify/identify reveal to principals without the calibrator role.")
@click.option("--threshold", "thresholds", multiple=True, metavar="MODEL=VALUE",
              help="The tenant's threshold for a model (within the model's bounds); repeatable.")
@common_options
def tenants_policy(output: Output, vault_dir: Path | None, tenant: str, level: str | None,
                   thresholds: tuple[str, ...]) -> None:
    """Show TENANT's answer policy, or set it with --disclosure / --threshold (admin; reading
    also auditor). Exact distances are never a tenant setting: they need the calibrator role."""
    parsed: dict[str, float] = {}
    for item in thresholds:
        model, sep, value = item.partition("=")
        try:
            parsed[model.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not MODEL=NUMBER",
                                     param_hint="--threshold") from None
        if not sep or not model.strip():
            raise click.BadParameter(f"{item!r} is not MODEL=NUMBER", param_hint="--threshold")
    with open_vault(vault_dir) as vault:
        if level is None and not parsed:
            policy = vault.tenant_policy(tenant)
        else:
            policy = vault.set_tenant_policy(tenant, disclosure_level=level,
                                             thresholds=parsed or None)

    def human() -> None:
        configured = ", ".join(f"{k} {v:g}" for k, v in sorted(policy.thresholds.items()))
        click.echo(f"Tenant {tenant}: disclosure {policy.disclosure}; thresholds "
                   + (configured or "the models' defaults"))

    output.emit(policy.to_dict(), human)


@tenants.command("retention")
@click.argument("tenant")
@click.argument("duration")
@common_options
def tenants_retention(output: Output, vault_dir: Path | None, tenant: str,
                      duration: str) -> None:
    """Keep TENANT's subjects at most DURATION after their last enrolment or match (90d, 3y,
    ...; 'none' for no limit). `faceseal purge` enforces it. Needs admin."""
    seconds = None if duration.strip().lower() in ("none", "off") else parse_duration(duration)
    with open_vault(vault_dir) as vault:
        info = vault.set_retention(tenant, seconds)

    def human() -> None:
        shown = "no limit" if seconds is None else format_duration(seconds)
        click.echo(f"Tenant {tenant}: retention {shown}")
        if info.warning:
            click.echo(f"Warning: {info.warning}", err=True)

    output.emit(info.to_dict(), human)


@click.command()
@click.option("--inactive-for", "inactive_for", default=None,
              help="Erase subjects with no enrolment or match for this long (90d, 3y, ...); "
                   "default: each tenant's retention period.")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant you may "
              "purge).")
@click.option("--dry-run", is_flag=True, help="List what would be erased; erase nothing.")
@common_options
def purge(output: Output, vault_dir: Path | None, inactive_for: str | None,
          tenant: str | None, dry_run: bool) -> None:
    """Erase (crypto-shred) inactive subjects, each audited. Needs admin or enroller."""
    seconds = None if inactive_for is None else parse_duration(inactive_for)
    with open_vault(vault_dir) as vault, progress_bar("erasing", output,
                                                      unit="subject") as progress:
        result = vault.purge(seconds, tenant=tenant, dry_run=dry_run, progress=progress)

    def human() -> None:
        verb = "would erase" if dry_run else "erased"
        for t in result.tenants:
            if t.inactive_for is None:
                click.echo(f"{t.tenant}: skipped (no retention period set)")
                continue
            click.echo(f"{t.tenant}: {verb} {len(t.subject_ids)} subject(s) inactive for "
                       f"{format_duration(t.inactive_for)}")
            for subject_id in t.subject_ids:
                click.echo(f"  {subject_id}")
        click.echo(f"{'Dry run: ' if dry_run else ''}{result.subjects} subject(s) "
                   f"{verb} in total")

    output.emit(result.to_dict(), human)
