"""Options every command shares, and opening the vault they point at."""

from __future__ import annotations

import functools
import getpass
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from faceseal.cli.group import exit_on_broken_pipe, given_on_command_line, global_options
from faceseal.cli.logs import configure_logging
from faceseal.cli.output import Output
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.storage.postgres_url import is_postgres_url, parse_pg_url
from faceseal.vault import Vault
from faceseal.vault.paths import HOME_ENV, PASSPHRASE_ENV

F = TypeVar("F", bound=Callable[..., Any])

API_KEY_ENV = "FACESEAL_API_KEY"
_KEY_FILE_META = "faceseal.key_file"


def common_options(command: F) -> F:
    """Add --vault, --key-file, --json, --debug and -v to a command, and turn errors into exit
    statuses."""

    @click.option("--vault", "vault_dir", type=click.Path(file_okay=False, path_type=Path),
                  envvar=HOME_ENV, help=f"Vault directory (default: ${HOME_ENV} or the platform "
                  "data dir).")
    @click.option("--key-file", "key_file", type=click.Path(dir_okay=False, path_type=Path),
                  default=None, help=f"File holding your API key (mode 0600); default: "
                  f"${API_KEY_ENV}.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option("--debug", is_flag=True, help="Log at DEBUG and show tracebacks on errors.")
    @click.option("-v", "--verbose", count=True, help="Log at INFO.")
    @functools.wraps(command)
    def wrapper(*args: Any, vault_dir: Path | None, key_file: Path | None, as_json: bool,
                debug: bool, verbose: int, **kwargs: Any) -> Any:
        before = global_options()
        as_json, debug = as_json or before.as_json, debug or before.debug
        verbose = verbose or before.verbose
        if before.vault_dir is not None and not given_on_command_line("vault_dir"):
            vault_dir = before.vault_dir
        key_file = key_file or before.key_file
        output = Output(json=as_json, debug=debug)
        configure_logging(debug, verbose)
        click.get_current_context().meta[_KEY_FILE_META] = key_file
        try:
            return command(*args, output=output, vault_dir=vault_dir, **kwargs)
        except BrokenPipeError:
            exit_on_broken_pipe()
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
        # A typing mistake at the prompt, not a keyring problem: bad input (exit 2).
        raise InvalidInput("the two passphrases differ")
    return SecretBytes(first.encode())


def read_key_file(path: Path) -> SecretBytes:
    """An API key from a file that only its owner can read (like ssh, others' access is refused)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise InvalidInput(f"the key file {path} is accessible to other users (mode "
                               f"{mode:o}); run: chmod 600 {path}")
        return SecretBytes(path.read_bytes().strip())
    except FileNotFoundError:
        raise InvalidInput(f"the key file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"the key file {path} is a directory") from None
    except PermissionError:
        raise InvalidInput(f"the key file {path} cannot be read (permission denied)") from None


def write_key_file(path: Path, api_key: str) -> None:
    """Save a new API key to ``path`` (created 0600; an existing file is never overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(f"{path} exists already; refusing to overwrite it") from None
    except OSError as exc:
        raise InvalidInput(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(api_key + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def show_new_key(who: str, api_key: str, write_key: Path | None) -> None:
    """Tell the holder of a new key where it is, or print it, once."""
    if write_key is not None:
        click.echo(f"The API key of {who} is in {write_key} (mode 0600); it is not shown again.")
        return
    click.echo(f"The API key of {who}, shown only this once:\n\n  {api_key}\n\n"
               f"Keep it in a file only you can read (chmod 600) and pass it with --key-file "
               f"FILE or ${API_KEY_ENV}. faceseal stores only a hash of it.")


def api_key_from_cli() -> SecretBytes | None:
    """The API key of this invocation: ``--key-file FILE``, else ``$FACESEAL_API_KEY``."""
    context = click.get_current_context(silent=True)
    key_file = context.meta.get(_KEY_FILE_META) if context is not None else None
    if key_file is not None:
        return read_key_file(key_file)
    value = os.environ.get(API_KEY_ENV, "").strip()
    return SecretBytes(value.encode()) if value else None


def open_vault(vault_dir: Path | None) -> Vault:
    """Open the vault bound to this invocation's API key. Without a key the vault opens unbound
    and the first operation is refused (and audited) with a message saying how to pass one."""
    vault = Vault.open(vault_dir, api_key=api_key_from_cli(),
                       passphrase=passphrase_from_env_or_prompt)
    # Each command is its own process: budgets counted in its memory would start afresh every
    # time, so the CLI counts them in the store, with every other process of the vault.
    try:
        vault.use_query_counters(vault.shared_counters())
    except BaseException:
        vault.close()
        raise
    return vault


def no_password_in_argv(ctx: click.Context, param: click.Parameter, value: str | None
                        ) -> str | None:
    """Click callback: refuse a database URL with a password typed on the command line.

    Arguments are visible to every user of the machine (``ps``, ``/proc/PID/cmdline``) and land
    in shell history; the same URL from the environment (the option's variable) is accepted."""
    if not value or param.name is None:
        return value
    source = ctx.get_parameter_source(param.name)
    if source is not click.core.ParameterSource.COMMANDLINE or not is_postgres_url(value):
        return value
    try:
        has_password = parse_pg_url(value).has_password
    except InvalidInput:
        return value  # reported, without the URL, where it is used
    if has_password:
        envvar = getattr(param, "envvar", None)
        via_env = f", or pass the whole URL in ${envvar}" if isinstance(envvar, str) else ""
        raise click.BadParameter(
            "the URL carries a password, and arguments are visible to every user (ps) and kept "
            "in shell history: put the password in ~/.pgpass (or $PGPASSFILE), $PGPASSWORD, or "
            f"a service file (postgresql:///?service=NAME){via_env}", ctx=ctx, param=param)
    return value
