"""The demo uses the photos faceseal has and never the network (issue #15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from faceseal import samples
from faceseal.errors import InvalidInput

from .conftest import PROJECT_ROOT

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused


def _installed_copy(target: Path) -> Path:
    """The package alone, as a wheel installs it: no checkout around it, no ../shared."""
    shutil.copytree(PROJECT_ROOT / "src" / "faceseal", target / "faceseal",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_demo_offline_with_an_empty_cache_from_an_installed_package(tmp_path: Path) -> None:
    site = _installed_copy(tmp_path / "site")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FACESEAL_", "PIP_", "XDG_"))}
    env.update({
        "PYTHONPATH": str(site), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
        "http_proxy": CLOSED, "https_proxy": CLOSED, "HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED,
        "PIP_INDEX_URL": CLOSED, "PIP_NO_INDEX": "1", "no_proxy": "", "NO_PROXY": "",
    })
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "faceseal", "demo", "--workdir", str(work)], cwd=work, env=env,
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert f"Photos from {site / 'faceseal' / 'sample_faces'}" in result.stdout
    assert "shipped in the faceseal package" in result.stdout
    assert "fetching" not in result.stdout + result.stderr
    assert not (home / "cache").exists()  # nothing cached, nothing fetched


def test_checkout_photos_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(samples.SAMPLES_ENV, raising=False)
    found = samples.find_samples()
    assert found.folder == PROJECT_ROOT / "tests" / "data" / "faces"
    assert "checkout" in found.origin


def test_package_photos_without_a_checkout(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.delenv(samples.SAMPLES_ENV, raising=False)
    monkeypatch.setattr(samples, "_CHECKOUT_FOLDER", tmp_path / "nothing")
    found = samples.find_samples()
    assert found.folder == samples.PACKAGE_FOLDER
    assert all(p.is_file() for p in (found.person_a_enroll, found.person_a_probe,
                                     found.person_a_other, found.person_b_enroll))


def test_sample_faces_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               faces_dir: Path) -> None:
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        shutil.copy(faces_dir / "obama-small.jpg", tmp_path / name)
    monkeypatch.setenv(samples.SAMPLES_ENV, str(tmp_path))
    found = samples.find_samples()
    assert found.folder == tmp_path
    assert found.origin == f"${samples.SAMPLES_ENV}"
    monkeypatch.setenv(samples.SAMPLES_ENV, str(tmp_path / "empty"))
    with pytest.raises(InvalidInput, match="FACESEAL_SAMPLE_FACES"):
        samples.find_samples()


def test_bad_sample_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faceseal", "demo", "--json"], capture_output=True, text=True,
        env={**os.environ, samples.SAMPLES_ENV: str(tmp_path)}, timeout=120, check=False)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "invalid_input"
