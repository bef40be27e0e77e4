"""Checks every face encoding passes before faceseal seals or matches it.

Error messages describe the *shape* of a bad encoding (dimension, dtype, how many values are
non-finite) but never its values: an encoding is biometric data, and exception messages end up
in logs, HTTP responses and terminal scrollback.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceseal.errors import InvalidEncoding

__all__ = [
    "MAX_ABS_VALUE",
    "MAX_DIMENSION",
    "MIN_DIMENSION",
    "SUPPORTED_DTYPES",
    "check_values",
    "validate_encoding",
]

SUPPORTED_DTYPES: tuple[str, ...] = ("float32", "float64")
MIN_DIMENSION = 2
MAX_DIMENSION = 4096
#: Face encodings are small numbers (dlib's lie within about +-0.5; normalised 512-d ones within
#: +-1). Anything beyond this is not an encoding, and squaring such values overflows distances.
MAX_ABS_VALUE = 1000.0

_FloatArray = NDArray[np.floating[Any]]


def validate_encoding(array: object, *, expected_dim: int | None = None) -> _FloatArray:
    """Return a checked, C-contiguous, native-byte-order copy of a 1-D face encoding.

    ``array`` is a 1-D numpy array of dtype float32 or float64 (the dtype is kept) or a list or
    tuple of real numbers (converted to float64). Raises :class:`~faceseal.errors.InvalidEncoding`
    for anything else: another dtype (integers included), not 1-D, empty, a dimension outside
    ``MIN_DIMENSION..MAX_DIMENSION`` or different from ``expected_dim``, NaN or infinite values,
    values beyond +-``MAX_ABS_VALUE``.
    """
    arr = _as_float_array(array)
    _check_shape(arr, expected_dim)
    check_values(arr)
    # A copy, so later changes to the caller's buffer cannot alter what gets sealed; native byte
    # order, so the bytes sealed for "float64" mean the same thing on every machine that opens them.
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)


def _as_float_array(array: object) -> _FloatArray:
    if isinstance(array, np.ndarray):
        if array.dtype.name not in SUPPORTED_DTYPES:
            raise InvalidEncoding(
                f"unsupported encoding dtype {array.dtype.name!r}; "
                f"expected one of {', '.join(SUPPORTED_DTYPES)}"
            )
        return array
    if isinstance(array, Sequence) and not isinstance(array, str | bytes | bytearray):
        return _sequence_to_float64(array)
    raise InvalidEncoding(
        f"unsupported encoding type {type(array).__name__}; "
        "expected a numpy array or a list of numbers"
    )


def _sequence_to_float64(values: Sequence[object]) -> NDArray[np.float64]:
    if any(isinstance(v, Sequence | np.ndarray) and not isinstance(v, str) for v in values):
        raise InvalidEncoding("an encoding must be a flat (1-D) list of numbers")
    # bool is an int subclass and numpy would happily turn "1.5" into a float: refuse both,
    # a list that holds them is not an encoding.
    if not all(_is_real_number(v) for v in values):
        raise InvalidEncoding("an encoding must contain only numbers")
    try:
        return np.asarray(values, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        raise InvalidEncoding("an encoding must contain only numbers") from None


def _is_real_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_shape(arr: _FloatArray, expected_dim: int | None) -> None:
    if arr.ndim != 1:
        raise InvalidEncoding(f"an encoding must be 1-D, got {arr.ndim} dimensions")
    dim = arr.shape[0]
    if dim == 0:
        raise InvalidEncoding("the encoding is empty")
    if expected_dim is not None and dim != expected_dim:
        raise InvalidEncoding(f"wrong encoding dimension: expected {expected_dim}, got {dim}")
    if not MIN_DIMENSION <= dim <= MAX_DIMENSION:
        raise InvalidEncoding(
            f"encoding dimension {dim} is outside the supported range "
            f"{MIN_DIMENSION}..{MAX_DIMENSION}"
        )


def check_values(arr: _FloatArray) -> None:
    """Refuse NaN, infinite, and out-of-range values (beyond +-:data:`MAX_ABS_VALUE`)."""
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        # The count and nothing else: not the values, not even their positions.
        raise InvalidEncoding(f"the encoding contains {bad} NaN or infinite value(s)")
    huge = int(np.count_nonzero(np.abs(arr) > MAX_ABS_VALUE))
    if huge:
        raise InvalidEncoding(f"the encoding contains {huge} value(s) beyond +-{MAX_ABS_VALUE:g}, "
                              "which no face encoding has")
