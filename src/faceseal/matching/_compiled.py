"""The numba-compiled kernels behind :mod:`faceseal.matching.kernels` (imported only with numba).

Compiled on first use and cached on disk by numba (``cache=True``; the kernels are module-level
functions so that the cache works), so later processes load them in a fraction of a second.
Arguments are numpy arrays and scalars; see the callers for their meaning.
"""
# ruff: noqa: PLR0917 - kernels take their arrays positionally, as numba needs

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # The OpenMP layer's idle threads spin; on a small machine they steal the cores that BLAS
    # (batch search) and the other kernel threads need. workqueue threads sleep. Calls are
    # serialised by faceseal.matching.kernels, as workqueue requires.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@njit(nogil=True, cache=True, boundscheck=False)
def sift(vals: Any, idxs: Any, h: Any, m: Any, pos: Any, value: Any, row: Any) -> None:
    # Put (value, row) at position pos of max-heap h (rows vals[h, :m]) and sift it down.
    while True:
        child = 2 * pos + 1
        if child >= m:
            break
        if child + 1 < m and vals[h, child + 1] > vals[h, child]:
            child += 1
        if vals[h, child] <= value:
            break
        vals[h, pos] = vals[h, child]
        idxs[h, pos] = idxs[h, child]
        pos = child
    vals[h, pos] = value
    idxs[h, pos] = row


@njit(nogil=True, cache=True, boundscheck=False)
def sift_down(vals: Any, idxs: Any, h: Any, m: Any, value: Any, row: Any) -> None:
    # Replace the root of max-heap h by (value, row) and restore order.
    sift(vals, idxs, h, m, 0, value, row)


@njit(nogil=True, cache=True, boundscheck=False)
def heapify(vals: Any, idxs: Any, h: Any, m: Any) -> None:
    for start in range(m // 2 - 1, -1, -1):
        sift(vals, idxs, h, m, start, vals[h, start], idxs[h, start])


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def scan_select(codes: Any, scale: Any, norms: Any, q16: Any, qscale: Any, qnorm: Any,
                metric_cos: Any, n: Any, m: Any, dots: Any, out: Any, heap_val: Any,
                heap_idx: Any) -> None:
    # out[i] = approximate value of row i (squared distance, or -dot for cosine);
    # heap_* [chunk, m] = a max-heap of the m smallest values of each chunk and their rows.
    # Two passes per chunk: a pure integer loop (vectorised, vpmaddwd) into dots, then the
    # float epilogue and the heap (mixing them in one loop stops the vectoriser).
    d = codes.shape[1]
    chunks = heap_val.shape[0]
    for c in prange(chunks):
        lo = c * (n // chunks) + min(c, n % chunks)
        hi = lo + n // chunks + (1 if c < n % chunks else 0)
        for i in range(lo, hi):
            acc: Any = 0
            for j in range(d):
                acc += np.int32(q16[j]) * np.int32(codes[i, j])
            dots[i] = acc
        if metric_cos:
            for i in range(lo, hi):
                out[i] = -(np.float32(scale[i]) * np.float32(qscale) * np.float32(dots[i]))
        else:
            for i in range(lo, hi):
                dot = np.float32(scale[i]) * np.float32(qscale) * np.float32(dots[i])
                out[i] = np.float32(qnorm) - np.float32(2.0) * dot + norms[i]
        filled = 0
        for i in range(lo, hi):
            value = out[i]
            if filled < m:
                heap_val[c, filled] = value
                heap_idx[c, filled] = i
                filled += 1
                if filled == m:
                    heapify(heap_val, heap_idx, c, m)
            elif value < heap_val[c, 0]:
                sift_down(heap_val, heap_idx, c, m, value, i)
        for t in range(filled, m):
            heap_val[c, t] = np.inf
            heap_idx[c, t] = -1

@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def select_block(dots: Any, scale: Any, norms: Any, qnorms: Any, metric_cos: Any,
                 base: Any, heap_val: Any, heap_idx: Any) -> None:
    # dots [probes, rows] from BLAS; heap_* [probe, m]: max-heaps, initially full of +inf.
    # The values are computed in place (a vectorised loop), then compared with the heap.
    probes, rows = dots.shape
    m = heap_val.shape[1]
    for p in prange(probes):
        qn = qnorms[p]
        values = dots[p]
        if metric_cos:
            for r in range(rows):
                values[r] = -(scale[base + r] * values[r])
        else:
            for r in range(rows):
                values[r] = qn - np.float32(2.0) * scale[base + r] * values[r] + norms[base + r]
        root = heap_val[p, 0]
        for r in range(rows):
            if values[r] < root:
                sift_down(heap_val, heap_idx, p, m, values[r], base + r)
                root = heap_val[p, 0]

@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def rows_below(values: Any, bounds: Any, limit: Any, out: Any, counts: Any) -> None:
    # Rows lo..hi of chunk c are bounds[c]..bounds[c + 1]; matches go to out[lo:lo + count].
    for c in prange(counts.shape[0]):
        k = bounds[c]
        for i in range(bounds[c], bounds[c + 1]):
            if values[i] <= limit:
                out[k] = i
                k += 1
        counts[c] = k - bounds[c]


def build() -> dict[str, Callable[..., Any]]:
    """The kernels by name (compiled, or loaded from numba's cache, on first call)."""
    return {"scan_select": scan_select, "select_block": select_block, "rows_below": rows_below}
