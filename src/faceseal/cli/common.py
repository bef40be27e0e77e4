"""Options every command shares, and opening the vault they point at."""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from faceseal.cli.output import Output, configure_logging
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import KeyringError
from faceseal.vault import Vault
from faceseal.vault.paths import HOME_ENV, PASSPHRASE_ENV

F = TypeVar("F", bound=Callable[..., Any])


def common_options(command: F) -> F:
    """Add --vault, --json, --debug and -v to a command, and turn errors into exit statuses."""

    @click.option("--vault", "vault_dir", type=click.Path(file_okay=False, path_type=Path),
                  envvar=HOME_ENV, help=f"Vault directory (default: ${HOME_ENV} or the platform "
                  "data dir).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option("--debug", is_flag=True, help="Log at DEBUG and show tracebacks on errors.")
    @click.option("-v", "--verbose", count=True, help="Log at INFO.")
    @functools.wraps(command)
    def wrapper(*args: Any, vault_dir: Path | None, as_json: bool, debug: bool, verbose: int,
                **kwargs: Any) -> Any:
        output = Output(json=as_json, debug=debug)
        configure_logging(debug, verbose)
        try:
            return command(*args, output=output, vault_dir=vault_dir, **kwargs)
        except SystemExit:
            raise
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as error:  # turned into an exit status and one line
            output.fail(error)

    return wrapper  # type: ignore[return-value]


def passphrase_from_env_or_prompt(confirm: bool = False) -> SecretBytes | None:
    """``$FACESEAL_PASSPHRASE``, else a prompt when a terminal is attached, else None."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return SecretBytes(value.encode())
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("Keyring passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyringError("the two passphrases differ")
    return SecretBytes(first.encode())


def open_vault(vault_dir: Path | None) -> Vault:
    return Vault.open(vault_dir, passphrase=passphrase_from_env_or_prompt)
