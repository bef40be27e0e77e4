"""Large photos are searched for faces at a bounded size and encoded from the original.

The attack: a small, highly compressible 4000x4000 PNG cost ~21 s of detection under the
process-wide dlib lock. The detector now searches at most ``max_detect_pixels``; the faces it finds
are mapped back, and landmarks and encodings come from the full-resolution photo. (Speed is shown
by ``bench/photo_bench.py``; these tests check what is searched and that results stay right.)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceseal.encoders import DlibResNetEncoder, load_image
from faceseal.encoders.detect_scale import DEFAULT_MAX_DETECT_PIXELS, detection_view
from faceseal.errors import InvalidInput

SAME_FACE = 0.15  # far below the 0.6 threshold: the same photo, rescaled


def _scaled(path: Path, factor: float) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    size = (round(image.width * factor), round(image.height * factor))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


@pytest.mark.parametrize(("shape", "limit"), [((4000, 4000), 2_000_000), ((1137, 910), 300_000),
                                              ((7, 50_000), 100_000)])
def test_the_detector_never_searches_more_than_the_limit(shape: tuple[int, int],
                                                         limit: int) -> None:
    pixels = np.zeros((*shape, 3), dtype=np.uint8)
    searched, factor = detection_view(pixels, limit)
    assert searched.shape[0] * searched.shape[1] <= limit
    assert factor == pytest.approx(shape[1] / searched.shape[1])
    assert searched.flags.c_contiguous


def test_small_photos_are_searched_as_they_are(faces_dir: Path) -> None:
    pixels = load_image(faces_dir / "obama-1.jpg")
    searched, factor = detection_view(pixels, DEFAULT_MAX_DETECT_PIXELS)
    assert searched is pixels
    assert factor == 1.0


def test_a_bounded_search_finds_the_same_faces_and_encodings(faces_dir: Path) -> None:
    pixels = load_image(faces_dir / "two-people.jpg")  # 1126x661, two faces
    full = DlibResNetEncoder(max_detect_pixels=None)
    bounded = DlibResNetEncoder(max_detect_pixels=400_000)  # searched at about 0.73x
    assert bounded.detect(pixels) != []
    full_boxes, bounded_boxes = full.detect(pixels), bounded.detect(pixels)
    assert len(bounded_boxes) == len(full_boxes) == 2
    for a, b in zip(full_boxes, bounded_boxes, strict=True):
        centre_a = ((a.left + a.right) / 2, (a.top + a.bottom) / 2)
        centre_b = ((b.left + b.right) / 2, (b.top + b.bottom) / 2)
        assert np.hypot(centre_a[0] - centre_b[0], centre_a[1] - centre_b[1]) < 0.25 * (
            a.right - a.left)
    for index in (0, 1):
        distance = np.linalg.norm(full.encode(pixels, face_index=index)
                                  - bounded.encode(pixels, face_index=index))
        assert distance < SAME_FACE


@pytest.mark.slow
def test_a_huge_photo_is_encoded_from_a_bounded_search(faces_dir: Path) -> None:
    """obama-1 blown up to ~12.7 MP (within the service's 16 MP limit) is found and encoded as
    the same face as the original photo, with a box in the big photo's pixels."""
    original = load_image(faces_dir / "obama-1.jpg")
    big = _scaled(faces_dir / "obama-1.jpg", 3.5)
    assert big.shape[0] * big.shape[1] > 12_000_000
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    encoder = DlibResNetEncoder(max_pixels=16_000_000)
    (small_box,) = encoder.detect(original)
    (big_box,) = encoder.detect(big)
    # HOG boxes shift a little with the scale searched; the face must be the same one.
    width = 3.5 * (small_box.right - small_box.left)
    assert abs((big_box.left + big_box.right) / 2 - 3.5 * (small_box.left + small_box.right) / 2
               ) < 0.25 * width
    assert abs((big_box.top + big_box.bottom) / 2 - 3.5 * (small_box.top + small_box.bottom) / 2
               ) < 0.25 * width
    assert 0.7 * width < big_box.right - big_box.left < 1.3 * width
    distance = np.linalg.norm(encoder.encode_photo(buffer.getvalue())
                              - encoder.encode(original))
    assert distance < SAME_FACE


@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_the_detection_limit_is_checked(value: object) -> None:
    with pytest.raises(InvalidInput, match="max_detect_pixels"):
        DlibResNetEncoder(max_detect_pixels=value)  # type: ignore[arg-type]
