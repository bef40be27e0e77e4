"""Scan kernels of the in-memory gallery: approximate distances over int8 codes, fast.

Two implementations with the same results:

* compiled with numba (the ``fast`` extra) when it is installed: multi-threaded over rows, the int8
  codes times an int16-quantised probe accumulated exactly in int32 (``vpmaddwd`` on x86), fused
  with a per-chunk selection of the smallest values so no full sort is needed;
* plain numpy otherwise: the same arithmetic in float32 blocks, several times slower.

Either way these only *select candidates*; the distances returned to callers are recomputed exactly
by :mod:`faceseal.matching.gallery` and the selection is provably complete (see there).
Set ``FACESEAL_NUMBA=0`` to force the numpy path (the tests run both).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

NUMBA_ENV = "FACESEAL_NUMBA"
#: Below this many rows the compiled kernel's thread start-up costs more than numpy's scan.
SMALL_GALLERY = 32768
#: Rows per selection chunk (each chunk keeps its own smallest values).
CHUNK_ROWS = 16384
#: Rows per block of the batch (many probes) scan: small enough for the cache.
BATCH_BLOCK_ROWS = 16384

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# numba's default threading layer must not be entered by two Python threads at once.
_kernel_lock = threading.Lock()
_compiled: dict[str, Callable[..., Any]] | None = None
_compile_failed = False


def numba_enabled() -> bool:
    """Whether the compiled kernels are in use (numba installed and not disabled)."""
    return _numba() is not None


def backend_name() -> str:
    return "numba" if numba_enabled() else "numpy"


def _numba() -> dict[str, Callable[..., Any]] | None:
    global _compiled, _compile_failed  # noqa: PLW0603 - compiled once per process
    if os.environ.get(NUMBA_ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        return None
    if _compiled is not None or _compile_failed:
        return _compiled
    try:
        _compiled = _build_numba()
    except ImportError:
        _compile_failed = True
        log.info("numba is not installed: the gallery scans with numpy (slower)")
    return _compiled


def _build_numba() -> dict[str, Callable[..., Any]]:
    from faceseal.matching._compiled import build  # noqa: PLC0415 - imports numba

    return build()


class Scratch:
    """Work arrays a gallery keeps between queries (approximate values and integer dots)."""

    def __init__(self) -> None:
        self._values = np.zeros(0, dtype=np.float32)
        self._dots = np.zeros(0, dtype=np.int32)

    def arrays(self, n: int) -> tuple[F32, npt.NDArray[np.int32]]:
        if self._values.shape[0] < n:
            size = int(n * 1.25) + 1024
            self._values = np.empty(size, dtype=np.float32)
            self._dots = np.empty(size, dtype=np.int32)
        return self._values[:n], self._dots[:n]

    def release(self) -> None:
        self._values = np.zeros(0, dtype=np.float32)
        self._dots = np.zeros(0, dtype=np.int32)


def _chunks(n: int) -> int:
    return max(1, min(64, (n + CHUNK_ROWS - 1) // CHUNK_ROWS))


def quantize_probe(query: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int16], float]:
    """The probe as int16 codes and their scale (error bounded by the caller)."""
    peak = float(np.max(np.abs(query))) if query.size else 0.0
    qscale = peak / 32767.0 if peak > 0 else 1.0
    q16 = np.rint(query / qscale).clip(-32767, 32767).astype(np.int16)
    return q16, qscale


def _chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    bounds = []
    for c in range(chunks):
        lo = c * (n // chunks) + min(c, n % chunks)
        bounds.append((lo, lo + n // chunks + (1 if c < n % chunks else 0)))
    return bounds


def scan_one(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int, query: npt.NDArray[np.float64],
    metric_cos: bool, m: int, scratch: Scratch | None = None,
) -> tuple[F32, I64, float, float, float]:
    """Approximate values of every row for one probe, and (at least) the ``m`` smallest rows.

    Returns ``(values[:n], selected_rows, probe_error, approx_probe_sq_norm, floor)``:
    ``probe_error`` bounds ``|probe - quantised probe|``; every row *not* selected has an
    approximate value of at least ``floor`` (``inf`` when every row is selected). ``scratch``
    (reused between calls) saves faulting in two fresh arrays of ``n`` values per query.
    """
    q16, qscale = quantize_probe(query)
    q_hat = q16.astype(np.float64) * qscale
    q_err = float(np.linalg.norm(query - q_hat))
    qnorm = float(q_hat @ q_hat)
    m = max(1, min(m, n))
    if scratch is None:
        scratch = Scratch()
    out, dots = scratch.arrays(n)
    kernels = _numba()
    if kernels is not None and n >= SMALL_GALLERY:
        chunks = _chunks(n)
        heap_val = np.empty((chunks, m), dtype=np.float32)
        heap_idx = np.empty((chunks, m), dtype=np.int64)
        with _kernel_lock:
            kernels["scan_select"](codes, scale, norms, q16, np.float32(qscale),
                                   np.float32(qnorm), metric_cos, n, m, dots, out, heap_val,
                                   heap_idx)
        floor = np.inf
        for c, (lo, hi) in enumerate(_chunk_bounds(n, chunks)):
            if hi - lo > m:  # some rows of this chunk stayed out of its heap
                floor = min(floor, float(heap_val[c].max()))
        flat_val, flat_idx = heap_val.ravel(), heap_idx.ravel()
        keep = flat_idx >= 0
        flat_val, flat_idx = flat_val[keep], flat_idx[keep]
        if flat_val.size > m:
            part = np.argpartition(flat_val, m - 1)
            floor = min(floor, float(flat_val[part[m - 1]]))
            flat_idx = flat_idx[part[:m]]
        return out, flat_idx.astype(np.int64), q_err, qnorm, floor
    q32 = q_hat.astype(np.float32)
    for lo in range(0, n, BATCH_BLOCK_ROWS):
        hi = min(n, lo + BATCH_BLOCK_ROWS)
        dots = scale[lo:hi] * (codes[lo:hi].astype(np.float32) @ q32)
        out[lo:hi] = -dots if metric_cos else np.float32(qnorm) - 2.0 * dots + norms[lo:hi]
    if m < n:
        part = np.argpartition(out, m - 1)
        return out, part[:m].astype(np.int64), q_err, qnorm, float(out[part[m - 1]])
    return out, np.arange(n, dtype=np.int64), q_err, qnorm, float("inf")


def rows_at_most(values: F32, limit: float) -> I64:
    """Rows whose approximate value is at most ``limit``."""
    kernels = _numba()
    n = values.shape[0]
    if kernels is None or n < CHUNK_ROWS:
        return np.flatnonzero(values <= limit).astype(np.int64)
    spans = _chunk_bounds(n, _chunks(n))
    bounds = np.array([lo for lo, _ in spans] + [n], dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    counts = np.zeros(len(spans), dtype=np.int64)
    with _kernel_lock:
        kernels["rows_below"](values, bounds, np.float32(limit), out, counts)
    parts = [out[lo:lo + int(counts[c])] for c, (lo, _) in enumerate(spans)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def scan_many(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int,
    queries: npt.NDArray[np.float64], metric_cos: bool, m: int,
) -> tuple[F32, I64, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The ``m`` smallest approximate values per probe for a batch of probes (BLAS blocks).

    Returns ``(heap_values [p, m], heap_rows [p, m], probe_errors [p], approx_sq_norms [p],
    floors [p])``; every row not in a probe's heap has a value of at least its floor.
    """
    probes = queries.shape[0]
    q32 = queries.astype(np.float32)
    q64 = q32.astype(np.float64)
    q_err = np.linalg.norm(queries - q64, axis=1)
    qnorms64 = np.einsum("ij,ij->i", q64, q64)
    qnorms = qnorms64.astype(np.float32)
    m = max(1, min(m, n))
    heap_val = np.full((probes, m), np.inf, dtype=np.float32)
    heap_idx = np.full((probes, m), -1, dtype=np.int64)
    kernels = _numba()
    block = np.empty((min(n, BATCH_BLOCK_ROWS), codes.shape[1]), dtype=np.float32)
    qt = np.ascontiguousarray(q32.T)
    for lo in range(0, n, BATCH_BLOCK_ROWS):
        hi = min(n, lo + BATCH_BLOCK_ROWS)
        view = block[: hi - lo]
        np.copyto(view, codes[lo:hi], casting="unsafe")
        # [rows, probes] is BLAS's fast orientation here; the selection wants [probes, rows].
        dots = np.ascontiguousarray((view @ qt).T)
        if kernels is not None:
            with _kernel_lock:
                kernels["select_block"](dots, scale, norms, qnorms, metric_cos, lo,
                                        heap_val, heap_idx)
        else:
            sdots = dots * scale[None, lo:hi]
            values = -sdots if metric_cos else qnorms[:, None] - 2.0 * sdots + norms[None, lo:hi]
            _merge_numpy(values, lo, heap_val, heap_idx)
    block.fill(0.0)
    floors = heap_val.max(axis=1).astype(np.float64) if n > m else np.full(probes, np.inf)
    return heap_val, heap_idx, q_err, qnorms64, floors


def _merge_numpy(values: F32, base: int, heap_val: F32, heap_idx: I64) -> None:
    m = heap_val.shape[1]
    rows = np.arange(base, base + values.shape[1], dtype=np.int64)
    all_val = np.concatenate([heap_val, values], axis=1)
    all_idx = np.concatenate([heap_idx, np.broadcast_to(rows, values.shape)], axis=1)
    if all_val.shape[1] > m:
        part = np.argpartition(all_val, m - 1, axis=1)[:, :m]
    else:
        part = np.argsort(all_val, axis=1)
    heap_val[:] = np.take_along_axis(all_val, part, axis=1)
    heap_idx[:] = np.take_along_axis(all_idx, part, axis=1)


def approx_values(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int,
    query: npt.NDArray[np.float64], metric_cos: bool,
) -> tuple[F32, float, float]:
    """Approximate values of every row for one probe (float32 probe, as the batch scan uses)."""
    q32 = query.astype(np.float32)
    q_err = float(np.linalg.norm(query - q32.astype(np.float64)))
    qnorm = float(q32.astype(np.float64) @ q32.astype(np.float64))
    out = np.empty(n, dtype=np.float32)
    block = np.empty((min(n, BATCH_BLOCK_ROWS), codes.shape[1]), dtype=np.float32)
    for lo in range(0, n, BATCH_BLOCK_ROWS):
        hi = min(n, lo + BATCH_BLOCK_ROWS)
        view = block[: hi - lo]
        np.copyto(view, codes[lo:hi], casting="unsafe")
        dots = scale[lo:hi] * (view @ q32)
        out[lo:hi] = -dots if metric_cos else np.float32(qnorm) - 2.0 * dots + norms[lo:hi]
    block.fill(0.0)
    return out, q_err, qnorm
