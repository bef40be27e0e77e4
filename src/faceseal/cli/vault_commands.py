"""init, enroll, verify, identify, erase, subjects, check, migrate: thin layers over the Vault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from faceseal.cli.common import (
    api_key_from_cli,
    common_options,
    no_password_in_argv,
    open_vault,
    passphrase_from_env_or_prompt,
    show_new_key,
    write_key_file,
)
from faceseal.cli.output import EXIT_NO_MATCH, EXIT_OK, Output
from faceseal.cli.progress import progress_bar
from faceseal.encoders.dlib_resnet import FaceChoice
from faceseal.errors import AuthenticationFailed
from faceseal.keys.uri import with_insecure_http
from faceseal.storage.urls import migrate_as_admin
from faceseal.vault import DEFAULT_TENANT, Vault
from faceseal.vault.config import VaultConfig
from faceseal.vault.face_choice import parse_face_choice, parse_face_options
from faceseal.vault.integrity import NOT_UPGRADED
from faceseal.vault.paths import KEYRING_DIR_ENV, default_home
from faceseal.vault.vault import MAX_TOP_K, open_store

tenant_option = click.option("--tenant", default=DEFAULT_TENANT, show_default=True,
                             help="Tenant the subject belongs to.")
model_option = click.option("--model", default=None,
                            help="Encoder model of .npy/.json encodings (default dlib-resnet-v1).")
face_option = click.option("--face", "face_index", default=None, metavar="N|largest",
                           help="In a photo with several faces, use face N (0-based, left to "
                                "right) or the largest one.")
enroll_face_option = click.option(
    "--face", "face_choices", multiple=True, metavar="[FILE=]N|largest",
    help="In photos with several faces, use face N (0-based, left to right) or the largest one; "
         "FILE=N or FILE=largest for one photo (its file name). Repeatable.")
store_option = click.option(
    "--store", "store_url", default=None, metavar="URL",
    help="Template store: sqlite:PATH (default sqlite:templates.db), files:DIR, or "
         "postgresql://LOGIN@HOST/DB[?schema=..&roles=..] (no password in the URL: use ~/.pgpass).")
admin_url_option = click.option(
    "--admin-url", envvar="FACESEAL_DB_ADMIN_URL", default=None, metavar="URL",
    callback=no_password_in_argv,
    help="PostgreSQL administrator URL (used once, never saved) to create roles and schema and "
         "grant the store's login; default $FACESEAL_DB_ADMIN_URL.")
sources_argument = click.argument(
    "sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)


@click.command()
@click.option("--keyring-dir", "--key-dir", "keyring_dir",
              type=click.Path(file_okay=False, path_type=Path), envvar=KEYRING_DIR_ENV,
              help=f"The key directory: the local keyring and the per-subject key store (default:"
                   f" ${KEYRING_DIR_ENV} or the platform config dir). Must be outside the vault "
                   "directory.")
@click.option("--key-uri", default=None, envvar="FACESEAL_KEY_URI",
              help="Where the KEK lives: local:DIR, pkcs11:..., vault-transit:..., aws-kms:... "
                   "(see docs/keys.md; default: a new local keyring in the key directory).")
@click.option("--insecure-key-server", is_flag=True,
              help="Accept a transit server or KMS endpoint reached over plain http:// off this "
                   "machine (data keys cross the network in clear; adds insecure-http=yes to the "
                   "key URI).")
@click.option("--passphrase", "use_passphrase", is_flag=True,
              help="Seal the keyring with a passphrase (from $FACESEAL_PASSPHRASE or a prompt).")
@click.option("--force-keyring-location", is_flag=True,
              help="Allow the keyring inside the vault directory (not recommended).")
@click.option("--admin-name", default="admin", show_default=True,
              help="Name of the first admin principal.")
@click.option("--write-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the first admin's API key to this new file (0600) instead of printing "
                   "it.")
@click.option("--upsample", type=click.IntRange(0, 3), default=1, show_default=True,
              help="Photo encoder: upsample photos this many times before searching for faces "
                   "(finds smaller faces; each step costs about 4x the time).")
@click.option("--jitters", "num_jitters", type=click.IntRange(1, 100), default=1,
              show_default=True,
              help="Photo encoder: average each encoding over this many jittered crops (slower, "
                   "slightly more stable). Fixed for the life of the vault.")
@click.option("--landmarks", type=click.Choice(["5", "68"]), default="5", show_default=True,
              help="Photo encoder: the 5- or 68-point landmark model that aligns faces. Fixed "
                   "for the life of the vault.")
@store_option
@admin_url_option
@common_options
def init(output: Output, vault_dir: Path | None, keyring_dir: Path | None, key_uri: str | None,
         insecure_key_server: bool, use_passphrase: bool, force_keyring_location: bool,
         admin_name: str, write_key: Path | None, upsample: int, num_jitters: int,
         landmarks: str, store_url: str | None, admin_url: str | None) -> None:
    """Create a new vault, its keyring, and its first admin (whose API key is shown once)."""
    if write_key is not None and write_key.exists():
        raise click.UsageError(f"{write_key} exists already; refusing to overwrite it")
    if insecure_key_server:
        if key_uri is None:
            raise click.UsageError("--insecure-key-server needs a --key-uri")
        key_uri = with_insecure_http(key_uri)

    def passphrase() -> Any:
        if not use_passphrase:
            return None
        secret = passphrase_from_env_or_prompt(confirm=True)
        if secret is None:
            raise click.UsageError("--passphrase needs $FACESEAL_PASSPHRASE or a terminal")
        return secret

    with Vault.create(vault_dir, keyring_dir=keyring_dir, passphrase=passphrase,
                      allow_keyring_in_vault_dir=force_keyring_location,
                      key_uri=key_uri, admin_name=admin_name, store_url=store_url,
                      store_admin_url=admin_url,
                      encoder_settings={"upsample": upsample, "num_jitters": num_jitters,
                                        "landmarks": landmarks}) as vault:
        admin_key = vault.bootstrap_admin_key
        assert admin_key is not None
        document: dict[str, Any] = {
            "vault": str(vault.home), "vault_id": vault.vault_id,
            "keyring": vault.config.key_store_dir, "passphrase_sealed": use_passphrase,
            "admin": admin_name, "key_uri": vault.config.key_uri,
            "store": vault.store_description, "encoder": vault.config.encoder_settings()}
    if write_key is not None:
        write_key_file(write_key, admin_key)
        document["admin_key_file"] = str(write_key)
    else:
        document["admin_key"] = admin_key

    def human() -> None:
        click.echo(
            f"Created vault {document['vault_id']}\n  vault:     {document['vault']}\n"
            f"  templates: {document['store']}\n"
            f"  keyring:   {document['keyring']}\nBack up the keyring directory separately from "
            "the vault: without it the templates cannot be read.\n")
        click.echo(f"First admin: {admin_name} (role admin, every tenant).")
        show_new_key(admin_name, admin_key, write_key)

    output.emit(document, human)


@click.command()
@click.option("--subject", "subject_id", required=True, help="Subject id to enroll.")
@tenant_option
@model_option
@enroll_face_option
@click.option("--skip-bad", is_flag=True,
              help="Enroll the usable sources and list the others (default: all or nothing).")
@sources_argument
@common_options
def enroll(output: Output, vault_dir: Path | None, subject_id: str, tenant: str,
           model: str | None, face_choices: tuple[str, ...], skip_bad: bool,
           sources: tuple[Path, ...]) -> None:
    """Enroll photos, folders of photos, or .npy/.json encodings for a subject.

    All or nothing by default: if any photo cannot be used (no face, several faces, unreadable),
    nothing is enrolled and every such file is named. --skip-bad enrolls the others instead.
    """
    faces = parse_face_options(face_choices)
    with open_vault(vault_dir) as vault, progress_bar("encoding", output) as progress:
        result = vault.enroll(subject_id, list(sources), tenant=tenant, model=model,
                              face_index=faces, progress=progress, skip_bad=skip_bad)
    document = {**result.to_dict(), "mode": "skip-bad" if skip_bad else "all-or-nothing"}

    def human() -> None:
        click.echo(f"Enrolled {len(result.template_ids)} template(s) for {result.subject_id} "
                   f"(tenant {result.tenant})"
                   + (f"; skipped {len(result.skipped)} bad source(s) (--skip-bad):"
                      if result.skipped else ""))
        for item in result.skipped:
            click.echo(f"  skipped {item['reason']}")

    output.emit(document, human)
    for warning in result.warnings:  # on stderr, so that they show with --json too
        click.echo(f"faceseal: warning: {warning['message']}", err=True)


def _shown(distance: float | None, score: str | None) -> str:
    """What the answer disclosed: the exact distance (calibrators), else the band, if any."""
    if distance is not None:
        return f"distance {distance:.4f}"
    return f"score {score}" if score is not None else ""


@click.command()
@click.option("--subject", "subject_id", required=True, help="Claimed subject id.")
@tenant_option
@model_option
@face_option
@click.option("--threshold", type=float, default=None,
              help="A stricter threshold than the configured one (a looser one is refused).")
@click.argument("probe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common_options
def verify(output: Output, vault_dir: Path | None, subject_id: str, tenant: str,
           model: str | None, face_index: str | None, threshold: float | None,
           probe: Path) -> None:
    """1:1 -- is the person in PROBE the subject? Exit 0 on a match, 1 on no match."""
    with open_vault(vault_dir) as vault:
        result = vault.verify(subject_id, probe, tenant=tenant, threshold=threshold, model=model,
                              face_index=_face(face_index))
    verdict = "MATCH" if result.match else "NO MATCH"
    output.emit(result.to_dict(), lambda: click.echo(
        f"{verdict}: {result.subject_id} {_shown(result.distance, result.score)} "
        f"(threshold {result.threshold})"
        + (f"; {len(result.damaged_template_ids)} damaged template(s) skipped"
           if result.damaged_template_ids else "")))
    raise SystemExit(EXIT_OK if result.match else EXIT_NO_MATCH)


@click.command()
@tenant_option
@model_option
@face_option
@click.option("--top-k", type=click.IntRange(1, MAX_TOP_K), default=5, show_default=True,
              help="How many candidates.")
@click.option("--threshold", type=float, default=None,
              help="A stricter threshold than the configured one (a looser one is refused).")
@click.argument("probe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common_options
def identify(output: Output, vault_dir: Path | None, tenant: str, model: str | None,
             face_index: str | None, top_k: int, threshold: float | None, probe: Path) -> None:
    """1:N -- who among the tenant's subjects is the person in PROBE?"""
    with open_vault(vault_dir) as vault:
        result = vault.identify(probe, tenant=tenant, top_k=top_k, threshold=threshold,
                                model=model, face_index=_face(face_index))

    def human() -> None:
        if not result.candidates:
            click.echo("No subjects to compare with." if result.disclosure == "exact"
                       else "No match.")
        for rank, candidate in enumerate(result.candidates, start=1):
            mark = "match" if candidate.match else "-"
            click.echo(f"{rank}. {candidate.subject_id}  "
                       f"{_shown(candidate.distance, candidate.score)}  {mark}")
        click.echo(f"(threshold {result.threshold}, {result.gallery_size} templates searched)")

    output.emit({**result.to_dict(), "best": result.best.to_dict() if result.best else None},
                human)


@click.command()
@click.option("--subject", "subject_id", required=True, help="Subject id to erase.")
@tenant_option
@common_options
def erase(output: Output, vault_dir: Path | None, subject_id: str, tenant: str) -> None:
    """Erase a subject: its templates and its key material (crypto-shredding)."""
    with open_vault(vault_dir) as vault:
        result = vault.erase(subject_id, tenant=tenant)
    output.emit(result.to_dict(), lambda: click.echo(
        f"Erased {result.subject_id}: {result.templates_erased} template(s), key material "
        f"{'destroyed' if result.key_material_destroyed else 'already gone'}"))


@click.command()
@tenant_option
@common_options
def subjects(output: Output, vault_dir: Path | None, tenant: str) -> None:
    """List the subjects of a tenant."""
    with open_vault(vault_dir) as vault:
        found = vault.subjects(tenant=tenant)

    def human() -> None:
        for subject in found:
            click.echo(f"{subject.subject_id}\t{subject.templates} template(s)")
        click.echo(f"{len(found)} subject(s) in tenant {tenant}")

    output.emit({"tenant": tenant, "subjects": [s.to_dict() for s in found]}, human)


@click.command()
@common_options
def check(output: Output, vault_dir: Path | None) -> None:
    """Open every record once; check inventories and principal rows (exit 5 on any problem)."""
    with open_vault(vault_dir) as vault, progress_bar("checking", output,
                                                      unit="record") as progress:
        result = vault.check(progress=progress)

    def human() -> None:
        click.echo(f"{result.records} record(s) checked, {len(result.damaged)} damaged")
        for item in result.damaged:
            click.echo(f"  damaged: {item['template_id']} ({item['tenant']}/{item['subject_id']})")
        for mismatch in result.inventory_mismatches:
            click.echo(f"  inventory mismatch: {mismatch['tenant']}/{mismatch['subject_id']} "
                       f"(signed {mismatch['inventory_templates']} template(s), stored "
                       f"{mismatch['stored_templates']})")
        if result.orphan_subject_keys:
            click.echo(f"  {result.orphan_subject_keys} subject key(s) without a subject (deleted "
                       "outside the vault, or an interrupted erase: erase again to finish it)")
        for name in result.unverified_principals:
            click.echo(f"  principal row fails its MAC (refused): {name}")

    output.emit({**result.to_dict(), "ok": result.ok}, human)
    if not result.ok:
        raise SystemExit(5)


@click.command()
@admin_url_option
@common_options
def migrate(output: Output, vault_dir: Path | None, admin_url: str | None) -> None:
    """Apply pending schema migrations to the vault's template store, and sign a vault made
    before principals and configuration were signed.

    For PostgreSQL pass --admin-url (or $FACESEAL_DB_ADMIN_URL): migrations create roles and
    schema objects, which the vault's own login may not do. Signing an older vault needs an
    all-tenant admin's key (--key-file or $FACESEAL_API_KEY); it is done once, and refused
    without a key."""
    home = (vault_dir or default_home()).expanduser().resolve()
    config = VaultConfig.load(home)
    if admin_url:
        before, after = migrate_as_admin(config.store_url, admin_url)
    else:
        with open_store(config.store_url, home) as store:
            before, after = store.migrate()
    with Vault.open(home, passphrase=passphrase_from_env_or_prompt) as vault:
        if vault.integrity_current:
            signed = None
        else:
            key = api_key_from_cli()
            if key is None:
                raise AuthenticationFailed(NOT_UPGRADED)
            signed = vault.upgrade_integrity(key)

    def human() -> None:
        click.echo(f"Schema version {before} -> {after}")
        if signed is not None:
            click.echo(f"Signed {len(signed.principals_signed)} principal(s) and the "
                       f"configuration; minimum decryption version {signed.min_decrypt_version}")
            for name in signed.principals_refused:
                click.echo(f"  left unsigned (refused from now on): {name}")

    output.emit({"schema_version_before": before, "schema_version": after,
                 "integrity": signed.to_dict() if signed is not None else None}, human)


def _face(text: str | None) -> FaceChoice:
    return None if text is None else parse_face_choice(text)
