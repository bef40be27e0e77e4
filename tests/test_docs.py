"""The docs stay true: the CLI reference is the CLI's own help, and README links resolve.

Regenerate the reference after changing a command:  FACESEAL_UPDATE_DOCS=1 pytest tests/test_docs.py
"""

from __future__ import annotations

import os
import re

import click
from click.testing import CliRunner

from faceseal.cli import cli

from .conftest import PROJECT_ROOT

CLI_DOC = PROJECT_ROOT / "docs" / "cli.md"
MARKER = "<!-- generated from `faceseal --help`; do not edit below -->"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name in sorted(group.list_commands(click.Context(group))):
        command = group.get_command(click.Context(group), name)
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


def render_reference() -> str:
    runner = CliRunner()
    parts = [MARKER, ""]
    for path in [(), *_commands(cli)]:
        result = runner.invoke(cli, [*path, "--help"], prog_name="faceseal",
                               terminal_width=100)
        assert result.exit_code == 0, result.output
        title = " ".join(("faceseal", *path))
        parts += [f"### `{title}`", "", "```text", result.output.rstrip(), "```", ""]
    return "\n".join(parts)


def test_cli_reference_is_current() -> None:
    text = CLI_DOC.read_text()
    head, _, _ = text.partition(MARKER)
    expected = head + render_reference()
    if os.environ.get("FACESEAL_UPDATE_DOCS"):
        CLI_DOC.write_text(expected)
    assert text == expected, "stale docs/cli.md: FACESEAL_UPDATE_DOCS=1 pytest tests/test_docs.py"


def test_readme_links_resolve() -> None:
    for doc in [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_starts_with_the_two_commands() -> None:
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1: lines.index("```")]
    assert block == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[faces]' && .venv/bin/faceseal demo",
        "./scripts/test",
    ]
    assert "./scripts/test" in (PROJECT_ROOT / ".ci" / "run").read_text()
