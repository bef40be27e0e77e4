"""Bounded face detection: search a downscaled copy of a large photo, encode from the original.

The HOG detector's cost grows with the pixels it searches (about half a second per megapixel
here, times four with the default upsampling step), so a 16 MP photo took about 20 s under the
process-wide dlib lock while every other photo request waited. A photo above ``max_pixels`` is
therefore searched at a reduced size -- faces in photos are large enough that a 2 MP view still
finds them -- and the boxes found are mapped back to the original, from which the landmarks and
the encoding are computed at full resolution.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

#: Pixels searched for faces at most (before upsampling); larger photos are downscaled for it.
DEFAULT_MAX_DETECT_PIXELS = 2_000_000


def detection_view(pixels: NDArray[np.uint8], max_pixels: int | None
                   ) -> tuple[NDArray[np.uint8], float]:
    """The image to search and the factor from its coordinates to the original's (>= 1)."""
    height, width = pixels.shape[:2]
    if max_pixels is None or height * width <= max_pixels:
        return pixels, 1.0
    from PIL import Image  # noqa: PLC0415 - Pillow is part of the optional faces extra

    shrink = math.sqrt(max_pixels / (height * width))
    size = (max(1, int(width * shrink)), max(1, int(height * shrink)))
    # reducing_gap: a fast integer pre-reduction, then an antialiased resize (Pillow's advice).
    small = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    searched = np.ascontiguousarray(np.asarray(small, dtype=np.uint8))
    return searched, width / size[0]


def to_original(left: int, top: int, right: int, bottom: int, factor: float
                ) -> tuple[int, int, int, int]:
    """A box found in the searched view, in the original's pixels."""
    if factor == 1.0:
        return left, top, right, bottom
    return (round(left * factor), round(top * factor), round(right * factor),
            round(bottom * factor))
