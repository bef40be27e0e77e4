"""The container files (Dockerfile, compose.yaml, docker/*.sh) are checked without Docker: images
cannot be pulled or built here, so every name they use is checked against what the repository
defines (files, extras, CLI options, URL syntax, environment variables)."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from faceseal.cli import cli
from faceseal.keys.registry import check_uri
from faceseal.storage.urls import check_store_url
from faceseal.vault.paths import HOME_ENV, KEYRING_DIR_ENV

ROOT = Path(__file__).resolve().parents[1]
#: The only images compose may pull: official ones, pinned to a release.
PULLED_IMAGES = {"postgres", "openbao/openbao"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def _help(*command: str) -> str:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_compose_names_the_three_parts(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "openbao", "openbao-setup", "faceseal"}


def test_images_are_built_here_or_pinned_official_releases(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            context = ROOT / service["build"]
            assert (context / "Dockerfile").is_file(), name
            continue
        image, _, tag = service["image"].partition(":")
        assert image in PULLED_IMAGES, f"{name} pulls {image}, which the repository does not name"
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z]+)?", tag), f"{name}: unpinned tag {tag!r}"


def test_bind_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    mounted = 0
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                path = ROOT / source
                assert path.is_file(), source
                assert path.stat().st_mode & 0o111, f"{source} is not executable"
                mounted += 1
    assert mounted >= 2


def test_secrets_live_outside_git_and_are_documented(compose: dict[str, Any]) -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/secrets/" in ignored
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
        assert secret["file"].removeprefix("./") in guide, secret["file"]
    used = {s for service in compose["services"].values() for s in service.get("secrets", [])}
    assert used == set(compose["secrets"])


def test_faceseal_service_settings_parse(compose: dict[str, Any]) -> None:
    faceseal = compose["services"]["faceseal"]
    env = faceseal["environment"]
    assert check_uri(env["FACESEAL_KEY_URI"]) == "vault-transit"
    assert "token-source=file:/run/secrets/" in env["FACESEAL_KEY_URI"]
    check_store_url(env["FACESEAL_STORE_URL"])
    check_store_url(env["FACESEAL_DB_ADMIN_URL"])
    login = env["FACESEAL_STORE_URL"].split("//", 1)[1].split("@", 1)[0]
    assert ":" not in login, "no password in a store URL"
    # Hardened: nothing but the volumes is writable, no capabilities, no core dumps.
    assert faceseal["read_only"] is True
    assert faceseal["cap_drop"] == ["ALL"]
    assert faceseal["ulimits"]["core"] == 0
    assert all(port.startswith("127.0.0.1:") for port in faceseal["ports"])


def test_dockerfile_uses_what_the_repository_defines(
    dockerfile: list[tuple[str, str]],
) -> None:
    instructions = dict(dockerfile)
    assert re.fullmatch(r"python:3\.\d+-slim-\w+", instructions["FROM"])
    for kind, arguments in dockerfile:
        if kind == "COPY":
            sources = [a for a in shlex.split(arguments) if not a.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    installs = [a for k, a in dockerfile if k == "RUN" and "pip install" in a]
    named = re.search(r"\.\[([a-z,]+)\]", installs[0])
    assert named is not None
    assert set(named.group(1).split(",")) <= set(extras) - {"dev"}
    assert instructions["USER"] not in ("root", "0")
    env = " ".join(a for k, a in dockerfile if k == "ENV")
    assert f"{HOME_ENV}=" in env
    assert f"{KEYRING_DIR_ENV}=" in env


def test_the_commands_the_image_runs_exist(dockerfile: list[tuple[str, str]]) -> None:
    command = yaml.safe_load(dict(dockerfile)["CMD"])  # a JSON array is YAML too
    assert command[:2] == ["faceseal", "serve"]
    serve_help = _help("serve")
    for option in (a for a in command[2:] if a.startswith("--")):
        assert option in serve_help, option
    entrypoint = (ROOT / "docker" / "faceseal-entrypoint.sh").read_text()
    init_help = _help("init")
    options = re.findall(r"(--[a-z-]+)", entrypoint.split("faceseal init", 1)[1])
    assert options, "the entrypoint runs faceseal init"
    for option in options:
        assert option in init_help, option


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "docker").glob("*.sh")))
def test_shell_scripts_parse(script: str) -> None:
    checked = subprocess.run(["sh", "-n", str(ROOT / "docker" / script)], capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stderr
