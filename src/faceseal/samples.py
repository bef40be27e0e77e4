"""Sample face photos for the demo (and the benchmarks).

Looked for, in order: ``$FACESEAL_SAMPLE_FACES``; a ``shared/faces`` folder next to the project
checkout (``../shared/faces`` from the project root, or from the current directory); a cache
filled once from the ``face_recognition==1.3.0`` source archive on PyPI (its
``tests/test_images/``), fetched with pip, with a visible message. Nothing is ever downloaded
while the vault runs; only the demo asks for samples.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from faceseal.errors import InternalError
from faceseal.keys.files import make_private_dirs

log = logging.getLogger(__name__)

SAMPLES_ENV = "FACESEAL_SAMPLE_FACES"
ARCHIVE_REQUIREMENT = "face_recognition==1.3.0"
_ARCHIVE_IMAGES = "face_recognition-1.3.0/tests/test_images/"


@dataclass(frozen=True)
class SamplePhotos:
    """Photos of two people: A (enrolled, genuine probes) and B (enrolled, impostor probe)."""

    folder: Path
    person_a_enroll: Path
    person_a_probe: Path
    person_a_other: Path
    person_b_enroll: Path


# (enroll A, probe A, other A, enroll B) under the names each source uses.
_LAYOUTS = (
    ("obama-1.jpg", "obama-2.jpg", "obama-3.jpg", "biden-1.jpg"),  # ../shared/faces
    ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"),  # face_recognition's test_images
)


def _from_folder(folder: Path) -> SamplePhotos | None:
    for names in _LAYOUTS:
        paths = [folder / name for name in names]
        if all(p.is_file() for p in paths):
            return SamplePhotos(folder, *paths)
    return None


def _candidate_folders() -> list[Path]:
    folders: list[Path] = []
    configured = os.environ.get(SAMPLES_ENV)
    if configured:
        folders.append(Path(configured))
    project_root = Path(__file__).resolve().parents[2]  # src/faceseal/ -> project root
    for base in (project_root, Path.cwd()):
        folders.append(base.parent / "shared" / "faces")
    folders.append(cache_folder())
    return folders


def cache_folder() -> Path:
    return Path(platformdirs.user_cache_dir("faceseal")) / "sample-faces"


def find_samples(announce: Callable[[str], None] = print) -> SamplePhotos:
    """Sample photos from a local folder, or fetched once into the cache."""
    for folder in _candidate_folders():
        found = _from_folder(folder)
        if found is not None:
            return found
    fetch_samples(cache_folder(), announce)
    found = _from_folder(cache_folder())
    if found is None:
        raise InternalError("the fetched sample archive did not contain the expected photos")
    return found


def fetch_samples(target: Path, announce: Callable[[str], None] = print) -> None:
    """Fetch the face_recognition 1.3.0 source archive with pip and keep its test photos."""
    announce(f"Sample photos not found locally; fetching the {ARCHIVE_REQUIREMENT} source "
             f"archive from PyPI into {target} (once) ...")
    make_private_dirs(target)
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--no-binary", ":all:", ARCHIVE_REQUIREMENT, "-d", download]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        if completed.returncode != 0:
            raise InternalError("could not fetch the sample photos with pip; set "
                                f"{SAMPLES_ENV} to a folder of photos instead")
        archives = list(Path(download).glob("*.tar.gz"))
        if not archives:
            raise InternalError("pip fetched no source archive for the sample photos")
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith(_ARCHIVE_IMAGES):
                    name = Path(member.name).name
                    source = archive.extractfile(member)
                    if source is not None:
                        (target / name).write_bytes(source.read())
    log.info("sample photos cached")
