"""``faceseal demo``."""

from __future__ import annotations

from pathlib import Path

import click

from faceseal.cli.common import common_options
from faceseal.cli.output import Output
from faceseal.demo import run_demo
from faceseal.errors import InternalError


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary vault and keyring afterwards.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to make the temporary folder (default: the system temp dir).")
@common_options
def demo(output: Output, vault_dir: Path | None, keep: bool, workdir: Path | None) -> None:
    """Enroll, verify, identify and erase sample faces in a temporary vault.

    The photos come from $FACESEAL_SAMPLE_FACES when set, else the source checkout's
    tests/data/faces, else the copies shipped in the package; nothing is downloaded.
    """
    del vault_dir  # the demo always makes its own temporary vault
    say = (lambda _line: None) if output.json else click.echo
    report = run_demo(workdir, keep=keep, say=say)
    output.emit({"ok": report.ok, "steps": report.steps, "access": report.access,
                 "kept": report.kept,
                 "vault": report.vault_dir if keep else None}, lambda: None)
    if not report.ok:
        raise InternalError("the demo did not give the expected results")
