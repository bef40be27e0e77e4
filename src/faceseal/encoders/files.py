"""Ready-made face encodings read from ``.npy`` or ``.json`` files.

Accepted layouts:

* ``.npy``: one array of dtype float32 or float64 (kept as is), shape ``(d,)`` for one encoding or
  ``(n, d)`` for ``n``. Read with a parser that only understands the ``.npy`` format: no pickles
  (object arrays are refused), no ``.npz`` archives.
* ``.json``: a list of numbers (one encoding), a list of lists of numbers (several), or an object
  ``{"encodings": [...]}`` holding either of those; other keys of the object are ignored. Values
  become float64.

All encodings of one file must share one dimension, and each one passes
:func:`~faceseal.encoders.validation.validate_encoding`. Errors name the file (its name only, not
its directory) and the position of the bad encoding, never a number read from the file.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceseal.encoders.validation import validate_encoding
from faceseal.errors import InvalidEncoding, InvalidInput

__all__ = [
    "DEFAULT_MAX_ENCODING_FILE_BYTES",
    "ENCODING_SUFFIXES",
    "is_encoding_file",
    "load_encodings_file",
]

ENCODING_SUFFIXES: tuple[str, ...] = (".npy", ".json")
DEFAULT_MAX_ENCODING_FILE_BYTES = 64 * 2**20

_FloatArray = NDArray[np.floating[Any]]
# Well above any real header (a few hundred bytes), well below what could hurt literal_eval.
_MAX_NPY_HEADER = 10_000


def is_encoding_file(path: str | os.PathLike[str]) -> bool:
    """Tell by its suffix (case-insensitive) whether ``path`` names an encodings file."""
    return Path(path).suffix.lower() in ENCODING_SUFFIXES


def load_encodings_file(
    path: Path,
    *,
    expected_dim: int | None = None,
    max_bytes: int = DEFAULT_MAX_ENCODING_FILE_BYTES,
) -> list[_FloatArray]:
    """Read and validate every encoding in a ``.npy`` or ``.json`` file.

    Raises :class:`~faceseal.errors.InvalidInput` when the file is missing, unreadable, too big,
    of another type, corrupt or empty, and :class:`~faceseal.errors.InvalidEncoding` when an
    encoding in it is not acceptable (dtype, shape, dimension, NaN or infinity).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ENCODING_SUFFIXES:
        raise InvalidInput(
            f"{path.name}: not an encodings file (expected {' or '.join(ENCODING_SUFFIXES)})"
        )
    data = _read_bounded(path, max_bytes)
    if not data:
        raise InvalidInput(f"{path.name}: the file is empty")
    rows = _parse_npy(data, path.name) if suffix == ".npy" else _parse_json(data, path.name)
    return _validate_all(rows, path.name, expected_dim)


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    # Read at most one byte past the limit instead of trusting stat(): the file may grow between
    # the two calls, or be a FIFO or device that has no meaningful size.
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise InvalidInput(f"{path.name}: no such file") from None
    except OSError:
        raise InvalidInput(f"{path.name}: cannot read the file") from None
    if len(data) > max_bytes:
        raise InvalidInput(f"{path.name}: the file is larger than the limit of {max_bytes} bytes")
    return data


def _parse_npy(data: bytes, name: str) -> list[object]:
    shape, fortran_order, dtype, offset = _read_npy_header(data, name)
    if dtype.hasobject:
        raise InvalidInput(f"{name}: object arrays (pickled data) are refused")
    if dtype.name not in ("float32", "float64"):
        raise InvalidEncoding(
            f"{name}: unsupported dtype {dtype.name!r}; expected float32 or float64"
        )
    if len(shape) not in (1, 2):
        raise InvalidEncoding(f"{name}: expected shape (d,) or (n, d), got {len(shape)} dimensions")
    count = math.prod(shape)
    if count == 0:
        raise InvalidInput(f"{name}: the file contains no encodings")
    # Compare with the bytes actually present before building anything, so a header that claims
    # a huge shape costs nothing.
    if len(data) - offset != count * dtype.itemsize:
        raise InvalidInput(f"{name}: corrupt .npy file (data size does not match its header)")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = flat.reshape(shape, order="F" if fortran_order else "C")
    return [array] if array.ndim == 1 else list(array)


def _read_npy_header(data: bytes, name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
        else:
            raise InvalidInput(f"{name}: unsupported .npy format version")
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError):
        raise InvalidInput(f"{name}: not a valid .npy file") from None
    shape, fortran_order, dtype = header
    return shape, fortran_order, dtype, fp.tell()


def _parse_json(data: bytes, name: str) -> list[object]:
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput(f"{name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):
        # Integers too long to convert, or nesting too deep to parse.
        raise InvalidInput(f"{name}: not valid JSON") from None
    if isinstance(document, dict):
        if "encodings" not in document:
            raise InvalidInput(f'{name}: a JSON object must have an "encodings" list')
        document = document["encodings"]
    if not isinstance(document, list):
        raise InvalidInput(f"{name}: expected a JSON list of encodings")
    if not document:
        raise InvalidInput(f"{name}: the file contains no encodings")
    if document and all(isinstance(item, list) for item in document):
        return list(document)
    # A flat list is one encoding; a mix of lists and numbers is caught by validate_encoding.
    return [document]


def _validate_all(rows: list[object], name: str, expected_dim: int | None) -> list[_FloatArray]:
    if not rows:
        raise InvalidInput(f"{name}: the file contains no encodings")
    encodings: list[_FloatArray] = []
    for index, row in enumerate(rows):
        dim = expected_dim if expected_dim is not None or not encodings else encodings[0].shape[0]
        try:
            encodings.append(validate_encoding(row, expected_dim=dim))
        except InvalidEncoding as exc:
            raise InvalidEncoding(f"{name}: encoding #{index}: {exc}") from None
    return encodings
