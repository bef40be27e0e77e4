"""The docs stay true: the CLI reference is the CLI's own help, and README links resolve.

Regenerate the reference after changing a command:  FACESEAL_UPDATE_DOCS=1 pytest tests/test_docs.py
"""

from __future__ import annotations

import os
import re

import click
import pytest
from click.testing import CliRunner

from faceseal.cli import cli
from faceseal.http.settings import Settings, env_var, specs

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


SETTINGS_BEGIN = "<!-- settings table: generated from faceseal.http.settings -->"
SETTINGS_END = "<!-- end of settings table -->"


def render_settings_table() -> str:
    """docs/http.md's table of the service's settings, from the one definition of each."""
    lines = ["| option | environment | default | bounds | meaning |",
             "| --- | --- | --- | --- | --- |"]
    for item, spec in specs():
        default = spec.shown_default or (f"{item.default:,}" if isinstance(item.default, int)
                                         and not isinstance(item.default, bool)
                                         else f"`{item.default}`")
        low = "" if spec.minimum is None else f"{spec.minimum:,g}"
        high = "" if spec.maximum is None else f"{spec.maximum:,g}"
        bounds = f"{low}..{high}" if high else (f">= {low}" if low else "")
        flag = spec.flag.replace("/", "`, `")
        lines.append(f"| `{flag}` | `{env_var(item.name)}` | {default} | {bounds} | "
                     f"{spec.help.replace('|', '/')} |")
    return "\n".join(lines)


def test_settings_table_is_current() -> None:
    doc = PROJECT_ROOT / "docs" / "http.md"
    text = doc.read_text()
    head, _, rest = text.partition(SETTINGS_BEGIN + "\n")
    _, _, tail = rest.partition(SETTINGS_END)
    expected = f"{head}{SETTINGS_BEGIN}\n{render_settings_table()}\n{SETTINGS_END}{tail}"
    if os.environ.get("FACESEAL_UPDATE_DOCS"):
        doc.write_text(expected)
    assert text == expected, "stale docs/http.md: FACESEAL_UPDATE_DOCS=1 pytest tests/test_docs.py"


def test_every_setting_is_an_option_and_an_environment_variable() -> None:
    """serve's options are the settings' fields: set through the environment, read back."""
    from faceseal.cli.serve_command import serve

    options = {param.name: param for param in serve.params}
    for item, _ in specs():
        assert options[item.name].envvar == env_var(item.name)
        assert options[item.name].default == item.default
    context = serve.make_context("serve", [], default_map=None)
    assert Settings(**{item.name: context.params[item.name] for item, _ in specs()}) == Settings()
    given = serve.make_context("serve", ["--timeout", "12"])
    assert given.params["request_timeout"] == 12.0


def test_a_setting_comes_from_its_environment_variable_and_the_flag_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from faceseal.cli.serve_command import serve

    monkeypatch.setenv("FACESEAL_REQUEST_TIMEOUT", "7.5")
    monkeypatch.setenv("FACESEAL_OPENAPI", "false")
    from_env = serve.make_context("serve", [])
    assert (from_env.params["request_timeout"], from_env.params["openapi"]) == (7.5, False)
    assert serve.make_context("serve", ["--timeout", "3"]).params["request_timeout"] == 3.0
    monkeypatch.setenv("FACESEAL_MAX_PHOTOS", "101")  # outside the setting's bounds
    with pytest.raises(click.BadParameter, match="101"):
        serve.make_context("serve", [])
