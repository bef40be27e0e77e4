"""The first pass's proof, row by row: each row's distance interval and the k-th subject bound.

Plain loops over the few rows a scan selected (tens to hundreds), written so that numba compiles
them unchanged (:mod:`faceseal.matching._compiled`): through numpy, the dozen small-array calls
this takes cost more than scanning a 10,000-row gallery. Without numba they run as Python.

For a row with approximate value ``v`` (squared Euclidean distance between the quantised probe
and the row's int8 reconstruction, or minus their dot product for cosine), quantisation error
``e`` and norm ``|x^|^2``, with the probe's quantisation error ``e_q`` and ``|q^|^2``:

* Euclidean: ``|q - x|`` lies within ``sqrt(v -+ slack) -+ (e_q + e)`` (triangle inequality);
* cosine (unit vectors): ``1 - <q, x>`` lies within ``1 + v -+ (slack + e_q (|x^| + e) +
  |q^| e)`` (Cauchy-Schwarz, ``|x| <= |x^| + e``);

``slack`` covers float32 rounding of ``v``; ``tiny`` float64 rounding of the exact distances.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ruff: noqa: PLR0917 - compiled kernels take their arguments positionally


def row_bounds(values: Any, errors: Any, norms: Any, q_err: float, qnorm: float, slack: float,
               tiny: float, cosine: bool, lower: Any, upper: Any) -> None:
    """Fill ``lower``/``upper`` with each row's proven distance interval."""
    q_len = math.sqrt(qnorm) * (1 + 1e-6)
    for i in range(values.shape[0]):
        v = float(values[i])
        e = float(errors[i])
        if cosine:
            reach = q_err * (math.sqrt(float(norms[i])) * (1 + 1e-6) + e) + q_len * e \
                + slack + tiny
            lower[i] = 1.0 + v - reach
            upper[i] = 1.0 + v + reach
        else:
            reach = q_err + e + tiny
            lower[i] = math.sqrt(max(v - slack, 0.0)) - reach
            upper[i] = math.sqrt(v + slack) + reach


def kth_subject_upper(subjects: Any, upper: Any, top_k: int) -> tuple[int, float]:
    """(distinct subjects among the rows, the ``top_k``-th smallest of their best ``upper``;
    inf when there are fewer subjects)."""
    rows = subjects.shape[0]
    if rows == 0:
        return 0, math.inf
    order = np.argsort(subjects, kind="mergesort")
    best = np.empty(rows, dtype=np.float64)
    count = 0
    for t in range(rows):
        i = order[t]
        if t == 0 or subjects[i] != subjects[order[t - 1]]:
            best[count] = upper[i]
            count += 1
        elif upper[i] < best[count - 1]:
            best[count - 1] = upper[i]
    if count < top_k:
        return count, math.inf
    ranked = np.sort(best[:count])
    return count, float(ranked[top_k - 1])


def quantize_probe(query: Any, q16: Any, levels: Any) -> tuple[float, float, float]:
    """Write ``query`` as integer codes in ``[-levels, levels]`` into the int16 array ``q16``
    (32767: int16 precision; 127: int8, for the VNNI batch scan); returns ``(scale,
    |query - q^|, |q^|^2)`` with ``q^ = q16 * scale`` (the error computed in float64, as the
    bound uses it)."""
    peak = 0.0
    for j in range(query.shape[0]):
        peak = max(peak, abs(float(query[j])))
    top = float(levels)
    scale = peak / top if peak > 0 else 1.0
    err = 0.0
    norm = 0.0
    for j in range(query.shape[0]):
        code = min(top, max(-top, float(np.rint(query[j] / scale))))
        q16[j] = np.int16(code)
        approx = code * scale
        err += (float(query[j]) - approx) ** 2
        norm += approx * approx
    return scale, math.sqrt(err), norm


def quantize_rows(x: Any, codes: Any, scale: Any, norms: Any, errors: Any) -> None:
    """Quantise gallery rows to int8 in one pass per row (compiled; the numpy form in
    :func:`faceseal.matching.kernels.quantize_rows_numpy` makes the same arithmetic in a dozen
    passes over the whole batch): per row a float32 scale rounded up so that no code is
    clipped, the codes, ``|x - s c|`` rounded up (the quantisation error) and ``|s c|^2``."""
    up = np.float32(np.inf)
    for i in range(x.shape[0]):
        peak = 0.0
        for j in range(x.shape[1]):
            peak = max(peak, abs(x[i, j]))
        s32 = np.float32(peak / 127.0)
        if np.float64(s32) * 127.0 < peak:
            s32 = np.nextafter(s32, up)
        if s32 == 0:
            s32 = np.float32(1.0)
        s = np.float64(s32)
        err2 = 0.0
        norm = 0.0
        for j in range(x.shape[1]):
            c = min(max(np.rint(x[i, j] / s), -127.0), 127.0)
            codes[i, j] = np.int8(c)
            off = s * c - x[i, j]
            err2 += off * off
            back = off + x[i, j]  # as the numpy form computes it
            norm += back * back
        scale[i] = s32
        # Rounded up, twice over: float64 rounding of the norm, then float32's.
        errors[i] = np.nextafter(np.float32(math.sqrt(err2) * (1 + 1e-6)), up)
        norms[i] = np.float32(norm)
