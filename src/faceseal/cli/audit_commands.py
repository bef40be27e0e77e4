"""audit tail, audit verify, audit export: reading and checking the audit trail."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from faceseal.cli.common import common_options, open_vault
from faceseal.cli.group import FullHelpGroup
from faceseal.cli.output import Output, exit_code_for
from faceseal.errors import IntegrityFailure, InvalidInput
from faceseal.vault.access_ops import MAX_TAIL
from faceseal.vault.durations import parse_since

tenant_filter = click.option("--tenant", default=None,
                             help="Only this tenant's events (default: all you may read).")


@click.group(cls=FullHelpGroup)
def audit() -> None:
    """The audit trail: every access, chained and MACed."""


def _line(event: dict[str, Any]) -> str:
    where = event["tenant"] or "*"
    subject = f" subject {event['subject_id']}" if event["subject_id"] else ""
    # An event whose own MAC fails was written without the audit key: say so on its line.
    forged = "" if event.get("verified", True) else "  !! FAILS ITS MAC (forged or edited)"
    return (f"{event['seq']:>6} {event['time']} {event['principal']} ({event['role'] or '-'}) "
            f"{event['action']} [{where}]{subject} -> {event['outcome']}{forged}")


@audit.command("tail")
@click.option("-n", "--lines", "count", type=click.IntRange(1, MAX_TAIL), default=20,
              show_default=True,
              help="How many of the newest events.")
@tenant_filter
@common_options
def audit_tail(output: Output, vault_dir: Path | None, count: int, tenant: str | None) -> None:
    """Show the newest events. Needs auditor."""
    with open_vault(vault_dir) as vault:
        events = vault.audit_tail(count, tenant=tenant)

    def human() -> None:
        for event in events:
            click.echo(_line(event))

    output.emit({"events": events}, human)


@audit.command("verify")
@common_options
def audit_verify(output: Output, vault_dir: Path | None) -> None:
    """Verify every event's MAC, the chain and the checkpoints; exit 5 listing every break.
    Needs an auditor scoped to every tenant."""
    with open_vault(vault_dir) as vault:
        report = vault.audit_verify()

    def human() -> None:
        if report.ok:
            click.echo(f"Audit log intact: {report.events} event(s) chained and MACed; last "
                       f"checkpoint at event {report.checkpoint_seq}.")
            for note in report.notes:
                click.echo(f"  note: {note}")
        else:
            where = (f"event {report.first_broken_seq}" if report.first_broken_seq is not None
                     else "the checkpoints")
            click.echo(f"Audit log BROKEN at {where}: {report.problem}")
            for item in report.breaks[1:]:
                click.echo(f"  also broken at event {item.seq}: {item.problem}")
            if report.break_count > len(report.breaks):
                click.echo(f"  ... {report.break_count - len(report.breaks)} more break(s)")
            click.echo(f"  {report.verified_events} of {report.events} event(s) verify on their "
                       f"own; last checkpoint at event {report.checkpoint_seq}.")

    output.emit(report.to_dict(), human)
    if not report.ok:
        raise SystemExit(exit_code_for(IntegrityFailure))


@audit.command("export")
@click.option("--since", default=None,
              help="Only events from this time on: 2025-01-31, 2025-01-31T12:00:00Z, a Unix "
                   "timestamp, or a duration ago such as 24h.")
@tenant_filter
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write to this new file (0600) instead of stdout.")
@common_options
def audit_export(output: Output, vault_dir: Path | None, since: str | None, tenant: str | None,
                 output_file: Path | None) -> None:
    """Export events as JSON lines (one event per line, for a SIEM). Needs auditor."""
    start = None if since is None else parse_since(since)
    handle = None
    if output_file is not None:
        try:
            fd = os.open(output_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidInput(f"{output_file} exists already; refusing to overwrite it") from None
        handle = os.fdopen(fd, "w", encoding="utf-8")
    count = 0
    try:
        with open_vault(vault_dir) as vault:
            for event in vault.audit_export(since=start, tenant=tenant):
                line = json.dumps(event, sort_keys=True, separators=(",", ":"))
                if handle is not None:
                    handle.write(line + "\n")
                else:
                    click.echo(line)
                count += 1
    finally:
        if handle is not None:
            handle.close()
    if output_file is not None:
        output.emit({"events": count, "file": str(output_file)},
                    lambda: click.echo(f"Exported {count} event(s) to {output_file}", err=True))
