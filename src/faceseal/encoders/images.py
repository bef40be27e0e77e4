"""Photo loading: bytes or a file in, an upright RGB ``uint8`` array ``(H, W, 3)`` out.

Photos are untrusted input, so the loader is defensive:

* the byte size is checked first (``max_bytes``), reading at most one byte past the limit;
* only a fixed allow-list of formats is tried (:data:`ALLOWED_FORMATS`), so an upload cannot reach
  the decoders of exotic formats Pillow also ships; the format is told by the bytes, never by the
  file name (a JPEG named ``.jfif``, ``.jpe`` or without extension is a JPEG); of an animated GIF
  the first frame is used, as ``face_recognition.load_image_file`` does;
* the pixel count from the header is checked against ``max_pixels`` *before* any pixel data is
  decoded, independently of Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` (which is neither
  relied on nor changed; when it fires first, its error is reported as the same
  :class:`~faceseal.errors.ImageTooLarge`);
* every decoding failure becomes :class:`~faceseal.errors.ImageUnreadable`.

Colour handling: the EXIF orientation is applied (``ImageOps.exif_transpose``), then every mode
is converted to RGB. Alpha is dropped, not composited (``convert("RGB")``), which is what
``face_recognition.load_image_file`` does, so encodings match the ones that library produces.
16-bit greyscale (``I;16*``, and ``I`` when a value exceeds 255) keeps its top 8 bits instead of
Pillow's clipping to white. Other modes (L, LA, P, PA, CMYK, YCbCr, 1, F, ...) use Pillow's
``convert("RGB")``.

Pillow is imported inside the functions: it belongs to the optional ``faces`` extra.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from faceseal.errors import EncoderUnavailable, ImageTooLarge, ImageUnreadable

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageSource",
    "is_image_file",
    "load_image",
    "looks_like_image",
]

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 32 * 2**20

#: Pillow format ids the loader tries, in this order; those this Pillow build lacks are skipped.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Names taken for photos without looking inside; any other file is a photo if its first bytes
#: are those of an allowed format (see :func:`is_image_file`).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".png", ".webp",
                                   ".bmp", ".tif", ".tiff", ".gif")
#: Leading bytes of the allowed formats (WebP: "RIFF", 4 size bytes, then "WEBP").
_SIGNATURES: tuple[bytes, ...] = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a",
                                  b"BM", b"II*\x00", b"MM\x00*")

ImageSource = str | os.PathLike[str] | bytes

INSTALL_HINT = "pip install 'faceseal[faces]'"

_log = logging.getLogger(__name__)

# What Pillow and its plugins raise on malformed data. Broad on purpose: this is the boundary
# where untrusted bytes become a user error, and every one of these means "not a usable image".
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)


def is_image_file(path: str | os.PathLike[str], *, sniff: bool = False) -> bool:
    """Whether ``path`` names a photo faceseal reads: by its suffix (case-insensitive), or, with
    ``sniff``, by its first bytes (a file that cannot be read is not a photo here; reading it
    later says why)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return True
    return sniff and looks_like_image(path)


def looks_like_image(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like an image of an allowed format."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return True
    return head.startswith(_SIGNATURES)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> NDArray[np.uint8]:
    """Decode a photo (a path, or its bytes) into an upright RGB ``uint8`` array ``(H, W, 3)``.

    Raises :class:`~faceseal.errors.ImageTooLarge` when the data exceeds ``max_bytes`` or the
    header announces more than ``max_pixels`` pixels (before decoding them),
    :class:`~faceseal.errors.ImageUnreadable` when the file is missing, unreadable, not in an
    allowed format, truncated or corrupt, and :class:`~faceseal.errors.EncoderUnavailable` when
    Pillow is not installed.
    """
    label = _label(source)
    data = _read_source(source, max_bytes, label)
    bomb_errors = _require_pillow()
    started = time.perf_counter()
    try:
        array = _decode(data, max_pixels, label)
    except bomb_errors:
        raise ImageTooLarge(
            f"{label}: the image has more pixels than Pillow's safety limit allows"
        ) from None
    except _DECODE_ERRORS:
        raise ImageUnreadable(
            f"{label}: cannot decode the image (corrupt, truncated or not an allowed format)"
        ) from None
    _log.debug(
        "decoded %d bytes into %dx%d RGB in %.3f s",
        len(data),
        array.shape[1],
        array.shape[0],
        time.perf_counter() - started,
    )
    return array


def _label(source: ImageSource) -> str:
    return "image" if isinstance(source, bytes) else Path(source).name


def _read_source(source: ImageSource, max_bytes: int, label: str) -> bytes:
    data = source if isinstance(source, bytes) else _read_bounded(Path(source), max_bytes, label)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{label}: larger than the limit of {max_bytes} bytes")
    return data


def _read_bounded(path: Path, max_bytes: int, label: str) -> bytes:
    # One byte past the limit is enough to know it is too big, whatever stat() says (the file
    # may be growing, or be a FIFO or device).
    try:
        with path.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageUnreadable(f"{label}: no such file") from None
    except OSError:
        raise ImageUnreadable(f"{label}: cannot read the file") from None


def _require_pillow() -> tuple[type[Exception], ...]:
    """Import Pillow (or say how to install it) and return its "too many pixels" exceptions."""
    try:
        from PIL import Image  # noqa: PLC0415  # lazy: Pillow is an optional extra
    except ImportError:
        raise EncoderUnavailable(
            f"reading photos needs Pillow, which is not installed; run: {INSTALL_HINT}"
        ) from None
    # The warning only matters when a caller's filter turns it into an exception.
    return (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _allowed_formats() -> list[str]:
    # Importing a plugin registers it; unlike Image.init() this loads only the decoders we allow.
    from PIL import (  # noqa: PLC0415
        BmpImagePlugin,  # noqa: F401
        GifImagePlugin,  # noqa: F401
        Image,
        JpegImagePlugin,  # noqa: F401
        PngImagePlugin,  # noqa: F401
        TiffImagePlugin,  # noqa: F401
        WebPImagePlugin,  # noqa: F401
    )

    return [name for name in ALLOWED_FORMATS if name in Image.OPEN]


def _decode(data: bytes, max_pixels: int, label: str) -> NDArray[np.uint8]:
    from PIL import Image, ImageOps  # noqa: PLC0415

    with Image.open(io.BytesIO(data), formats=_allowed_formats()) as opened:
        # Image.open parsed the header only; nothing has been decoded or allocated yet.
        _check_pixels(opened.size, max_pixels, label)
        opened.load()
        upright = ImageOps.exif_transpose(opened)
        return _to_rgb_array(upright if upright is not None else opened, label)


def _check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageUnreadable(f"{label}: the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{label}: {width}x{height} pixels is more than the limit of {max_pixels} pixels"
        )


def _to_rgb_array(image: Image, label: str) -> NDArray[np.uint8]:
    if image.mode.startswith("I;16") or image.mode == "I":
        return _grey_to_rgb(_sixteen_bit_to_eight(np.asarray(image)))
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:
            raise ImageUnreadable(f"{label}: image mode {image.mode} is not supported") from None
    return np.array(image, dtype=np.uint8, order="C")


def _sixteen_bit_to_eight(values: NDArray[np.generic]) -> NDArray[np.uint8]:
    wide = values.astype(np.int64)
    # An "I" image whose values all fit in 8 bits holds 8-bit data; anything else is 16-bit.
    if wide.size and int(wide.max()) > 255:
        wide = np.clip(wide, 0, 65535) >> 8
    return np.clip(wide, 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))
