"""The ``faceseal`` command: a thin layer over the :class:`~faceseal.vault.Vault` API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from faceseal import __version__
from faceseal.cli.access_commands import principals, purge, tenants
from faceseal.cli.audit_commands import audit
from faceseal.cli.bench_command import bench
from faceseal.cli.demo_command import demo
from faceseal.cli.group import (
    GLOBAL_META,
    FullHelpGroup,
    GlobalOptions,
    exit_on_broken_pipe,
)
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


@click.group(cls=FullHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceseal")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Log at DEBUG and show tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="Log at INFO.")
@click.option("--vault", "vault_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Vault directory (default: $FACESEAL_HOME or the platform "
              "data dir).")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File holding your API key (mode 0600); default: $FACESEAL_API_KEY.")
@click.pass_context
def cli(context: click.Context, as_json: bool, debug: bool, verbose: int,
        vault_dir: Path | None, key_file: Path | None) -> None:
    """faceseal: a vault for face encodings.

    Every command takes --json (one JSON document on stdout), --vault DIR and --debug, before or
    after the command name, and authenticates with the API key in --key-file FILE or
    $FACESEAL_API_KEY. Exit status: 0 success/match, 1 no match, 2 bad input, 3 denied, 4 not
    found, 5 internal. `faceseal help COMMAND` shows a command's help.
    """
    # Before any command reads a key, API key or passphrase (docs/threat-model.md).
    protect_process()
    context.meta[GLOBAL_META] = GlobalOptions(as_json, debug, verbose, vault_dir, key_file)


@cli.command("help")
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(context: click.Context, command: tuple[str, ...]) -> None:
    """Show the help of faceseal, or of a command (faceseal help keys rotate)."""
    parent = context.find_root()
    target: click.Command = parent.command
    current = parent
    for name in command:
        sub = target.get_command(current, name) if isinstance(target, click.Group) else None
        if sub is None:
            raise click.UsageError(f"no such command: {' '.join(command)}; see faceseal --help")
        current = click.Context(sub, info_name=name, parent=current)
        target = sub
    click.echo(current.get_help())


for _command in (init, enroll, verify, identify, erase, subjects, check, migrate, demo, keys, db,
                 import_legacy, bench):
    cli.add_command(_command)
for _command in (principals, tenants, purge, audit):
    cli.add_command(_command)
cli.add_command(serve)


def main() -> None:
    try:
        cli.main(prog_name="faceseal")
    except SystemExit:
        # Output still buffered is written now, while a closed pipe can still end quietly.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            exit_on_broken_pipe()
        raise
