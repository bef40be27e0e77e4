"""``faceseal keys status|rotate|rewrap|retire|migrate``: thin layers over the Vault's key custody.

Each subcommand takes --json. See docs/keys.md for what each does and how it survives a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from faceseal.cli.common import common_options, open_vault, passphrase_from_env_or_prompt
from faceseal.cli.group import FullHelpGroup
from faceseal.cli.output import Output
from faceseal.cli.progress import progress_bar
from faceseal.keys.uri import with_insecure_http
from faceseal.vault.rotation import DEFAULT_BATCH_SIZE, KeyStatus


@click.group(cls=FullHelpGroup)
def keys() -> None:
    """Key custody: status, rotation, retirement, migration between providers."""


@keys.command()
@common_options
def status(output: Output, vault_dir: Path | None) -> None:
    """KEK versions, data keys (records and encryptions each), retirement, rotation state."""
    with open_vault(vault_dir) as vault:
        result = vault.key_status()
    output.emit(result.to_dict(), lambda: _print_status(result))


def _print_status(result: KeyStatus) -> None:
    click.echo(f"provider:  {result.provider} ({result.provider_location})")
    click.echo(f"KEK:       versions {', '.join(map(str, result.kek_versions)) or '-'}; "
               f"active {result.active_kek_version}")
    click.echo(f"key store: {result.key_store_dir}")
    click.echo(f"data keys: active v{result.active_data_key}; minimum decryption version "
               f"{result.min_decrypt_version}; limit {result.max_encryptions_per_key:,} "
               "encryptions per key")
    for dek in result.data_keys:
        flags = ", ".join(f for f, on in (("active", dek.active), ("retired", dek.retired)) if on)
        kek = "?" if dek.kek_version is None else str(dek.kek_version)
        click.echo(f"  v{dek.version}: {dek.records:,} record(s), {dek.encryptions:,} "
                   f"encryption(s), wrapped by KEK v{kek}" + (f" [{flags}]" if flags else ""))
    if result.rotation_in_progress:
        click.echo(f"unfinished rotation to v{result.rotation_in_progress['target']}: "
                   f"{result.rotation_in_progress['records_remaining']:,} record(s) to go "
                   "(run `faceseal keys rotate --data` to resume)")


@keys.command()
@click.option("--kek", is_flag=True, help="New KEK version; rewrap every data key.")
@click.option("--data", is_flag=True,
              help="New data-key version; re-encrypt every record (resumable).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Records per transaction when re-encrypting.")
@common_options
def rotate(output: Output, vault_dir: Path | None, kek: bool, data: bool,
           batch_size: int) -> None:
    """Rotate the KEK (--kek), the data key (--data), or both (KEK first, then data key).

    With both, --json prints {"kek": ..., "data": ...}; with one, that rotation's result."""
    if not kek and not data:
        raise click.UsageError("say what to rotate: --kek, --data, or both")
    document: dict[str, Any] = {}
    lines: list[str] = []
    with open_vault(vault_dir) as vault:
        if kek:
            done = vault.rotate_kek()
            document["kek"] = done.to_dict()
            lines.append(f"KEK v{done.kek_version_before} -> v{done.kek_version}; "
                         f"{done.data_keys_rewrapped} data key(s) rewrapped, no record "
                         "re-encrypted")
        if data:
            with progress_bar("re-encrypting", output, unit="record") as progress:
                result = vault.rotate_data_keys(batch_size=batch_size, progress=progress)
            document["data"] = result.to_dict()
            lines.append(
                f"data key v{result.target_version}{' (resumed)' if result.resumed else ''}: "
                f"{result.records_reencrypted:,} record(s) re-encrypted, "
                f"{result.records_remaining:,} still under older versions"
                + (f" ({len(result.damaged_template_ids)} damaged: see `faceseal check`)"
                   if result.damaged_template_ids else ""))
    output.emit(document if kek and data else next(iter(document.values())),
                lambda: click.echo("\n".join(lines)))


@keys.command()
@common_options
def rewrap(output: Output, vault_dir: Path | None) -> None:
    """Rewrap data keys still wrapped by an older KEK version (no new KEK)."""
    with open_vault(vault_dir) as vault:
        result = vault.rewrap_data_keys()
    output.emit(result.to_dict(), lambda: click.echo(
        f"{result.data_keys_rewrapped} data key(s) rewrapped under KEK v{result.kek_version}"))


@keys.command()
@click.option("--below", type=int, required=True,
              help="Refuse data-key versions below this one from now on.")
@common_options
def retire(output: Output, vault_dir: Path | None, below: int) -> None:
    """Set the minimum data-key version; refused while any record still needs an older one."""
    with open_vault(vault_dir) as vault:
        result = vault.retire_data_keys(below)
    output.emit(result.to_dict(), lambda: click.echo(
        f"minimum decryption version {result.min_decrypt_version_before} -> "
        f"{result.min_decrypt_version}"))


@keys.command(name="migrate")
@click.option("--to", "to_uri", required=True, help="Key URI of the provider to move to.")
@click.option("--insecure-key-server", is_flag=True,
              help="Accept a transit server or KMS endpoint reached over plain http:// off this "
                   "machine (adds insecure-http=yes to the key URI).")
@common_options
def migrate_keys(output: Output, vault_dir: Path | None, to_uri: str,
                 insecure_key_server: bool) -> None:
    """Move the KEK to another provider (rewrap only) and switch the vault to it."""
    if insecure_key_server:
        to_uri = with_insecure_http(to_uri)
    with open_vault(vault_dir) as vault, progress_bar("rewrapping", output,
                                                      unit="data key") as progress:
        result = vault.migrate_keys(to_uri, passphrase=passphrase_from_env_or_prompt,
                                    progress=progress)
    output.emit(result.to_dict(), lambda: click.echo(
        f"{result.data_keys_rewrapped} data key(s) rewrapped; the vault now uses "
        f"{result.to_uri.partition(':')[0]} ({result.to_uri})"))
