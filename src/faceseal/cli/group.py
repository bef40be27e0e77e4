"""The command groups: full one-line descriptions, and the options every command takes that may
also come before the subcommand (``faceseal --json subjects`` as well as ``faceseal subjects
--json``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

#: Where the group stores the global options, in the click context's meta shared by subcommands.
GLOBAL_META = "faceseal.global_options"
#: The status of a process killed by SIGPIPE (128 + 13), what ``cat file | head`` gives ``cat``.
EXIT_BROKEN_PIPE = 141


@dataclass(frozen=True)
class GlobalOptions:
    """--json, --debug, -v, --vault, --key-file given before the subcommand."""

    as_json: bool = False
    debug: bool = False
    verbose: int = 0
    vault_dir: Path | None = None
    key_file: Path | None = None


def global_options() -> GlobalOptions:
    context = click.get_current_context(silent=True)
    found = context.meta.get(GLOBAL_META) if context is not None else None
    return found if isinstance(found, GlobalOptions) else GlobalOptions()


def given_on_command_line(name: str) -> bool:
    """Whether this subcommand's parameter ``name`` was typed (not a default or $VARIABLE)."""
    context = click.get_current_context()
    return context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


class FullHelpGroup(click.Group):
    """A group whose command list shows each command's whole first sentence, wrapped, instead of
    cutting it with "..." at the terminal width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def exit_on_broken_pipe() -> NoReturn:
    """The reader went away (``faceseal audit export | head``): stop quietly, as ``cat`` does.

    stdout is pointed at /dev/null first, so that the interpreter's final flush of whatever is
    still buffered does not fail with a second, noisy, BrokenPipeError.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (a test runner's buffer)
        pass
    raise SystemExit(EXIT_BROKEN_PIPE)
