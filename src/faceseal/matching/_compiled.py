"""The numba-compiled kernels behind :mod:`faceseal.matching.kernels` (imported only with numba).

Compiled on first use and cached on disk by numba (``cache=True``; the kernels are module-level
functions so that the cache works), so later processes load them in a fraction of a second.
Arguments are numpy arrays and scalars; see the callers for their meaning.

The single-probe scan comes in two builds of one body: :func:`scan_serial` runs on the calling
thread (no thread-pool wake-up: what a small gallery needs, where waking a worker costs more than
the whole scan) and :func:`scan_parallel` splits the rows over numba's worker threads (a large
gallery). Both compute every row's value with the same float32 operations in the same order
(:func:`scan_range`), so the selection and the rescan (:func:`rows_below`) agree exactly.
"""
# ruff: noqa: PLR0917 - kernels take their arrays positionally, as numba needs

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from faceseal.matching import bounds

if "NUMBA_THREADING_LAYER" not in os.environ:
    # The OpenMP layer's idle threads spin; on a small machine they steal the cores that BLAS
    # (batch search) and the other kernel threads need. workqueue threads sleep. Calls are
    # serialised by faceseal.matching.kernels, as workqueue requires.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

#: Rows whose integer dot products are computed in one tight loop before their values are
#: compared with the heap (a small buffer that stays in L1; mixing the heap into the dot loop
#: stops the vectoriser).
BLOCK = 256
#: Rows of one block of the batch scan: 16 KiB of 128-d codes, which stay in L1 while every probe
#: of the group is scanned over them (measured: 128 to 256 rows alike, 2x faster than converting
#: blocks to float32 for BLAS).
BATCH_BLOCK = 128


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


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def row_value(dot: Any, scale: Any, qscale: Any, qnorm: Any, norm: Any, metric_cos: Any) -> Any:
    # The approximate value of one row from its exact integer dot product (float32 throughout).
    prod = np.float32(scale) * np.float32(qscale) * np.float32(dot)
    if metric_cos:
        return -prod
    return np.float32(qnorm) - np.float32(2.0) * prod + np.float32(norm)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def share(part: Any, total: Any, parts: Any) -> Any:
    # The half-open range of items [lo, hi) that part `part` of `parts` takes of `total` (the
    # first total % parts parts take one more); kernels._chunk_bounds is the same in Python.
    lo = np.int64(part * (total // parts) + min(part, total % parts))
    return lo, lo + total // parts + (1 if part < total % parts else 0)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def empty_heaps(heap_val: Any, heap_idx: Any, h0: Any, h1: Any) -> None:
    # Heaps h0..h1 hold no row yet (+inf / -1).
    for h in range(h0, h1):
        for t in range(heap_val.shape[1]):
            heap_val[h, t] = np.inf
            heap_idx[h, t] = -1


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def keep_best(dots: Any, scale: Any, norms: Any, qscale: Any, qnorm: Any, metric_cos: Any,
              start: Any, stop: Any, values: Any, heap_val: Any, heap_idx: Any, h: Any) -> None:
    # Rows start..stop, their integer dots in dots[0:stop - start], into max-heap h: their values
    # computed in one vectorisable loop, and compared with the heap only when one of them beats
    # its root (once the heap is full, most blocks have none).
    for i in range(start, stop):
        values[i - start] = row_value(dots[i - start], scale[i], qscale, qnorm, norms[i],
                                      metric_cos)
    root = heap_val[h, 0]
    below = 0
    for r in range(stop - start):
        below += values[r] < root
    if below == 0:
        return
    m = heap_val.shape[1]
    for i in range(start, stop):
        if values[i - start] < root:
            sift_down(heap_val, heap_idx, h, m, values[i - start], i)
            root = heap_val[h, 0]


@njit(nogil=True, cache=True, boundscheck=False)
def scan_range(codes: Any, scale: Any, norms: Any, q16: Any, qscale: Any, qnorm: Any,
               metric_cos: Any, lo: Any, hi: Any, heap_val: Any, heap_idx: Any,
               h: Any) -> None:
    # heap_*[h, :m]: a max-heap of the m smallest values of rows lo..hi and their rows
    # (+inf / -1 where the range has fewer than m rows).
    # (Not keep_best: this scan streams the gallery from memory once, and comparing each value
    # as it is computed measured about 10% faster here than keep_best's extra pass.)
    d = codes.shape[1]
    m = heap_val.shape[1]
    empty_heaps(heap_val, heap_idx, h, h + 1)
    dots = np.empty(BLOCK, dtype=np.int32)
    root = heap_val[h, 0]
    for start in range(lo, hi, BLOCK):
        stop = min(hi, start + BLOCK)
        for i in range(start, stop):
            acc = np.int32(0)
            for j in range(d):
                acc += np.int32(q16[j]) * np.int32(codes[i, j])
            dots[i - start] = acc
        for i in range(start, stop):
            value = row_value(dots[i - start], scale[i], qscale, qnorm, norms[i], metric_cos)
            if value < root:
                sift_down(heap_val, heap_idx, h, m, value, i)
                root = heap_val[h, 0]


@njit(nogil=True, cache=True, boundscheck=False)
def scan_serial(codes: Any, scale: Any, norms: Any, q16: Any, qscale: Any, qnorm: Any,
                metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any) -> None:
    # One chunk (heap row 0), on the calling thread.
    scan_range(codes, scale, norms, q16, qscale, qnorm, metric_cos, 0, n, heap_val, heap_idx, 0)


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def scan_parallel(codes: Any, scale: Any, norms: Any, q16: Any, qscale: Any, qnorm: Any,
                  metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any) -> None:
    # One chunk per heap row, spread over the worker threads.
    chunks = heap_val.shape[0]
    for c in prange(chunks):
        lo, hi = share(c, n, chunks)
        scan_range(codes, scale, norms, q16, qscale, qnorm, metric_cos, lo, hi, heap_val,
                   heap_idx, c)


@njit(nogil=True, cache=True, boundscheck=False)
def rows_below(codes: Any, scale: Any, norms: Any, q16: Any, qscale: Any, qnorm: Any,
               metric_cos: Any, n: Any, limit: Any, out: Any, out_val: Any) -> Any:
    # Rows whose value (as scan_range computes it) is at most limit, into out (their values into
    # out_val); returns the count.
    d = codes.shape[1]
    count = 0
    for i in range(n):
        acc = np.int32(0)
        for j in range(d):
            acc += np.int32(q16[j]) * np.int32(codes[i, j])
        value = row_value(acc, scale[i], qscale, qnorm, norms[i], metric_cos)
        if value <= limit:
            out[count] = i
            out_val[count] = value
            count += 1
    return count


@njit(nogil=True, cache=True, boundscheck=False)
def scan_probes(codes: Any, scale: Any, norms: Any, q16s: Any, qscales: Any, qnorms: Any,
                metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any, p0: Any, p1: Any) -> None:
    # Probes p0..p1 over every row: heap_*[p, :m] as scan_range fills heap row h for one probe,
    # with the same values. Each block of rows is read once from memory and then used, from
    # cache, by every probe of the range.
    d = codes.shape[1]
    empty_heaps(heap_val, heap_idx, p0, p1)
    dots = np.empty(BATCH_BLOCK, dtype=np.int32)
    values = np.empty(BATCH_BLOCK, dtype=np.float32)
    for start in range(0, n, BATCH_BLOCK):
        stop = min(n, start + BATCH_BLOCK)
        for p in range(p0, p1):
            for i in range(start, stop):
                acc = np.int32(0)
                for j in range(d):
                    acc += np.int32(q16s[p, j]) * np.int32(codes[i, j])
                dots[i - start] = acc
            keep_best(dots, scale, norms, qscales[p], qnorms[p], metric_cos, start, stop, values,
                      heap_val, heap_idx, p)


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def scan_batch(codes: Any, scale: Any, norms: Any, q16s: Any, qscales: Any, qnorms: Any,
               metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any, groups: Any) -> None:
    # The probes split into groups, one per worker thread; each group scans every row.
    for g in prange(groups):
        p0, p1 = share(g, q16s.shape[0], groups)
        scan_probes(codes, scale, norms, q16s, qscales, qnorms, metric_cos, n, heap_val,
                    heap_idx, p0, p1)


row_bounds = njit(nogil=True, cache=True, boundscheck=False)(bounds.row_bounds)
kth_subject_upper = njit(nogil=True, cache=True, boundscheck=False)(bounds.kth_subject_upper)
quantize_probe = njit(nogil=True, cache=True, boundscheck=False)(bounds.quantize_probe)
quantize_rows = njit(nogil=True, cache=True, boundscheck=False)(bounds.quantize_rows)


def build() -> dict[str, Callable[..., Any]]:
    """The kernels by name (compiled, or loaded from numba's cache, on first call)."""
    return {"scan_serial": scan_serial, "scan_parallel": scan_parallel,
            "rows_below": rows_below, "scan_batch": scan_batch, "row_bounds": row_bounds,
            "kth_subject_upper": kth_subject_upper, "quantize_probe": quantize_probe,
            "quantize_rows": quantize_rows}
