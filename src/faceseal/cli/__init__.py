"""The ``faceseal`` command: a thin layer over the :class:`~faceseal.vault.Vault` API."""

from __future__ import annotations

import click

from faceseal import __version__
from faceseal.cli.access_commands import principals, purge, tenants
from faceseal.cli.audit_commands import audit
from faceseal.cli.bench_command import bench
from faceseal.cli.demo_command import demo
from faceseal.cli.keys_commands import keys
from faceseal.cli.serve_command import serve
from faceseal.cli.storage_commands import db, import_legacy
from faceseal.cli.vault_commands import (
    check,
    enroll,
    erase,
    identify,
    init,
    migrate,
    subjects,
    verify,
)
from faceseal.keys.process_guard import protect_process


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceseal")
def cli() -> None:
    """faceseal: a vault for face encodings.

    Every command takes --json (one JSON document on stdout), --vault DIR and --debug, and
    authenticates with the API key in --key-file FILE or $FACESEAL_API_KEY.
    Exit status: 0 success/match, 1 no match, 2 bad input, 3 denied, 4 not found, 5 internal.
    """
    # Before any command reads a key, API key or passphrase (docs/threat-model.md).
    protect_process()


for _command in (init, enroll, verify, identify, erase, subjects, check, migrate, demo, keys, db,
                 import_legacy, bench):
    cli.add_command(_command)
for _command in (principals, tenants, purge, audit):
    cli.add_command(_command)
cli.add_command(serve)


def main() -> None:
    cli(prog_name="faceseal")
