"""Sample face photos for the demo.

Looked for, in order, and the first folder holding the four photos the demo needs wins:

1. ``$FACESEAL_SAMPLE_FACES``, when set (a folder of your own photos: ``obama-1.jpg``,
   ``obama-2.jpg``, ``obama-3.jpg`` and ``biden-1.jpg``, or face_recognition's names
   ``obama.jpg``, ``obama2.jpg``, ``obama3.jpg``, ``biden.jpg``); a folder without them is an
   error, not silently replaced;
2. the checkout's ``tests/data/faces`` (when faceseal runs from a source checkout);
3. the reduced copies shipped inside the package (``faceseal/sample_faces``).

Nothing is ever downloaded: the package always carries its photos, so the demo works offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from faceseal.errors import InvalidInput

SAMPLES_ENV = "FACESEAL_SAMPLE_FACES"


@dataclass(frozen=True)
class SamplePhotos:
    """Photos of two people: A (enrolled, genuine probes) and B (enrolled, impostor probe)."""

    folder: Path
    person_a_enroll: Path
    person_a_probe: Path
    person_a_other: Path
    person_b_enroll: Path
    #: Where the photos came from, in words (said by the demo).
    origin: str = ""


# (enroll A, probe A, other A, enroll B) under the names each source uses.
_LAYOUTS = (
    ("obama-1.jpg", "obama-2.jpg", "obama-3.jpg", "biden-1.jpg"),  # tests/data/faces, package
    ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"),  # face_recognition's test_images
)

PACKAGE_FOLDER = Path(__file__).resolve().parent / "sample_faces"
_CHECKOUT_FOLDER = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces"


def _from_folder(folder: Path, origin: str) -> SamplePhotos | None:
    for names in _LAYOUTS:
        a_enroll, a_probe, a_other, b_enroll = (folder / name for name in names)
        if all(p.is_file() for p in (a_enroll, a_probe, a_other, b_enroll)):
            return SamplePhotos(folder, a_enroll, a_probe, a_other, b_enroll, origin=origin)
    return None


def find_samples() -> SamplePhotos:
    """The demo's photos: ``$FACESEAL_SAMPLE_FACES``, the checkout's, or the package's."""
    configured = os.environ.get(SAMPLES_ENV)
    if configured:
        found = _from_folder(Path(configured), f"${SAMPLES_ENV}")
        if found is None:
            names = ", ".join(_LAYOUTS[0])
            raise InvalidInput(f"${SAMPLES_ENV} names a folder without the demo's photos "
                               f"({names}); unset it to use the photos faceseal ships")
        return found
    for folder, origin in ((_CHECKOUT_FOLDER, "the source checkout's test photos"),
                           (PACKAGE_FOLDER, "the photos shipped in the faceseal package")):
        found = _from_folder(folder, origin)
        if found is not None:
            return found
    raise InvalidInput(f"the sample photos are missing from the package ({PACKAGE_FOLDER}); "
                       f"reinstall faceseal or set ${SAMPLES_ENV} to a folder of photos")
