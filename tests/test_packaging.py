"""Packaging conventions (issue #15): one version, a licence file, a changelog, extras a user
can pick without pulling what they do not need."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import faceseal

from .conftest import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "faceseal.__version__"}
    assert importlib.metadata.version("faceseal") == faceseal.__version__


def test_licence_and_changelog() -> None:
    licence = (PROJECT_ROOT / "LICENSE").read_text()
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    assert f"## {faceseal.__version__}" in changelog


def test_extras_are_split() -> None:
    assert _names(EXTRAS["aws"]) == {"boto3"}
    assert _names(EXTRAS["vault"]) == {"hvac"}
    assert _names(EXTRAS["client"]) == {"httpx"}
    assert "faiss-cpu" not in _names(EXTRAS["fast"])
    assert "faiss-cpu" in _names(EXTRAS["bench"])  # the benchmarks' baseline, not a user extra
    user_extras = {name: reqs for name, reqs in EXTRAS.items() if name not in ("dev", "bench")}
    for requirements in user_extras.values():
        assert "faceseal[dev]" not in requirements
        assert not {"hypothesis", "psutil", "pytest", "faiss-cpu"} & _names(requirements)


def test_sample_photos_are_package_data() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["faceseal"]
    assert "sample_faces/*" in patterns
    shipped = {p.name for p in (PROJECT_ROOT / "src" / "faceseal" / "sample_faces").iterdir()}
    assert {"obama-1.jpg", "obama-2.jpg", "obama-3.jpg", "biden-1.jpg",
            "LICENSE.face_recognition"} <= shipped


def test_console_templates_and_static_files_are_package_data() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["faceseal"]
    assert "http/console/templates/*.html" in patterns
    assert "http/console/static/*" in patterns
    console = PROJECT_ROOT / "src" / "faceseal" / "http" / "console"
    assert {"console.js", "console.css"} <= {p.name for p in (console / "static").iterdir()}
