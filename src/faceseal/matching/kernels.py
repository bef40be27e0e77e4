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
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.matching import bounds

log = logging.getLogger(__name__)

NUMBA_ENV = "FACESEAL_NUMBA"
#: From this many rows the single-probe scan is spread over numba's worker threads; below it, it
#: runs on the calling thread. Waking the pool costs tens of microseconds (more when the other
#: core is busy), which is the whole scan of a 10,000-row gallery; from a few hundred thousand
#: rows the scan is long enough for a second thread to pay (see docs/performance.md).
PARALLEL_FROM = 262_144
#: Rows per chunk of the parallel scan (each chunk keeps its own smallest values).
CHUNK_ROWS = 65_536
#: Rows per block of the batch (many probes) scan and of the numpy scan: small enough for cache.
BATCH_BLOCK_ROWS = 16384

#: Probe codes for the int16 scans, and for the VNNI batch scan (int8 products).
INT16_LEVELS = 32767
INT8_LEVELS = 127

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# numba's default threading layer must not be entered by two Python threads at once.
_kernel_lock = threading.Lock()
_compiled: dict[str, Callable[..., Any]] | None = None
_compile_failed = False
VNNI_ENV = "FACESEAL_VNNI"
_vnni_compiled: dict[str, Callable[..., Any]] | None = None
_vnni_checked = False


def numba_enabled() -> bool:
    """Whether the compiled kernels are in use (numba installed and not disabled)."""
    return _numba() is not None


def backend_name() -> str:
    return "numba" if numba_enabled() else "numpy"


def batch_backend_name() -> str:
    """How batches of probes are scanned: "vnni" (AVX-512 VNNI, 128-d and other multiples of
    64), "int16" (compiled) or "numpy" (float32 blocks through BLAS)."""
    if not numba_enabled():
        return "numpy"
    return "vnni" if vnni_enabled() else "int16"


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


def vnni_enabled() -> bool:
    """Whether batch scans use the AVX-512 VNNI kernel (:mod:`faceseal.matching._compiled_vnni`):
    numba in use, a CPU with VNNI under a host-specific build, the kernel compiled and its
    self-check passed, and ``FACESEAL_VNNI`` not ``0``."""
    return _vnni() is not None


def _vnni() -> dict[str, Callable[..., Any]] | None:
    global _vnni_compiled, _vnni_checked  # noqa: PLW0603 - checked once per process
    if os.environ.get(VNNI_ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        return None
    if _numba() is None:
        return None
    if not _vnni_checked:
        _vnni_checked = True
        _vnni_compiled = _build_vnni()
    return _vnni_compiled


def _build_vnni() -> dict[str, Callable[..., Any]] | None:
    import numba  # noqa: PLC0415 - only with the compiled kernels
    from llvmlite import binding  # noqa: PLC0415

    if numba.config.CPU_NAME not in (None, "host"):  # type: ignore[attr-defined]
        return None  # a portable build: the instruction may not exist where it runs
    features = binding.get_host_cpu_features()
    if not (features.get("avx512vnni") and features.get("avx512bw")):
        return None
    try:
        from faceseal.matching._compiled_vnni import build  # noqa: PLC0415

        built = build()
        if _vnni_agrees(built):
            return built
        log.warning("the VNNI batch scan disagreed with integer arithmetic: not used")
    except Exception as exc:  # any compile failure means: do without it
        log.warning("the VNNI batch scan could not be compiled (%s): not used",
                    type(exc).__name__)
    return None


def _vnni_agrees(built: dict[str, Callable[..., Any]]) -> bool:
    """The compiled instruction against exact integer arithmetic, extremes included (every code
    -127 against every probe byte 127), for 128-d rows (sixteen at a time, and the rest one by
    one) and for wider ones (the loop form)."""
    rng = np.random.default_rng(5)
    for dim in (128, 512):
        codes = rng.integers(-127, 128, size=(37, dim), dtype=np.int8)
        codes[0], codes[1] = 127, -127
        probes = rng.integers(-127, 128, size=(5, dim)).astype(np.int16)
        probes[0], probes[1] = 127, -127
        out = np.empty((5, 37), dtype=np.int32)
        built["dots_vnni"]((probes + 128).astype(np.uint8), codes, out)
        if not np.array_equal(out, probes.astype(np.int64) @ codes.T.astype(np.int64)):
            return False
    return True


def _threads() -> int:
    try:
        import numba  # noqa: PLC0415 - only with the compiled kernels

        return int(numba.get_num_threads())
    except ImportError:  # pragma: no cover - _numba() returned kernels, so numba is there
        return 1


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe quantised for the scan: ``q_hat = q16 * qscale`` (int16 codes), within ``q_err``
    of the probe; ``qnorm = |q_hat|^2``. Holds probe data: never logged or kept."""

    q16: npt.NDArray[np.int16]
    qscale: float
    q_err: float
    qnorm: float

    def __repr__(self) -> str:
        return "Probe(<redacted>)"

    def wipe(self) -> None:
        self.q16.fill(0)


def quantize_probe(query: npt.NDArray[np.float64], levels: int = INT16_LEVELS) -> Probe:
    """The probe as integer codes in ``[-levels, levels]`` (int16 precision unless the VNNI
    batch scan asks for int8) and their scale, with the error this makes (a bound, rounded up
    generously: it only ever widens the set of rows re-checked exactly)."""
    q16 = np.empty(query.shape[0], dtype=np.int16)
    kernels = _numba()
    quantize = bounds.quantize_probe if kernels is None else kernels["quantize_probe"]
    qscale, q_err, qnorm = quantize(np.ascontiguousarray(query, dtype=np.float64), q16,
                                    int(levels))
    return Probe(q16, float(qscale), float(q_err) * (1 + 1e-6) + 1e-300, float(qnorm))


def quantize_rows(x: npt.NDArray[np.float64], codes: npt.NDArray[np.int8], scale: F32,
                  norms: F32, errors: F32) -> None:
    """Quantise gallery rows (see :func:`faceseal.matching.bounds.quantize_rows`) into the
    given output arrays."""
    kernels = _numba()
    if kernels is None:
        quantize_rows_numpy(x, codes, scale, norms, errors)
    else:
        kernels["quantize_rows"](np.ascontiguousarray(x, dtype=np.float64), codes, scale,
                                 norms, errors)


def quantize_rows_numpy(x: npt.NDArray[np.float64], codes: npt.NDArray[np.int8], scale: F32,
                        norms: F32, errors: F32) -> None:
    """:func:`quantize_rows` without numba: the same arithmetic, batch-wide."""
    peak = np.abs(x).max(axis=1)
    s32 = (peak / 127.0).astype(np.float32)
    # Round the float32 scale up so that |x / s| <= 127: no code is clipped.
    low = s32.astype(np.float64) * 127.0 < peak
    s32[low] = np.nextafter(s32[low], np.float32(np.inf))
    s32[s32 == 0] = 1.0
    s = s32.astype(np.float64)[:, None]
    rounded = np.rint(x / s).clip(-127, 127)
    approx = s * rounded
    approx -= x
    err = np.linalg.norm(approx, axis=1)
    # Rounded up, twice over: float64 rounding of the norm, then float32's.
    errors[:] = np.nextafter((err * (1 + 1e-6)).astype(np.float32), np.float32(np.inf))
    approx += x
    norms[:] = np.einsum("ij,ij->i", approx, approx).astype(np.float32)
    codes[:] = rounded.astype(np.int8)
    scale[:] = s32
    for temp in (rounded, approx):
        temp.fill(0.0)


def _chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    bounds = []
    for c in range(chunks):
        lo = c * (n // chunks) + min(c, n % chunks)
        bounds.append((lo, lo + n // chunks + (1 if c < n % chunks else 0)))
    return bounds


def _numpy_values(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int, probe: Probe, metric_cos: bool,
) -> F32:
    """Every row's value with numpy (the fallback without numba), in float32 blocks."""
    q32 = (probe.q16.astype(np.float64) * probe.qscale).astype(np.float32)
    out = np.empty(n, dtype=np.float32)
    for lo in range(0, n, BATCH_BLOCK_ROWS):
        hi = min(n, lo + BATCH_BLOCK_ROWS)
        dots = scale[lo:hi] * (codes[lo:hi].astype(np.float32) @ q32)
        out[lo:hi] = -dots if metric_cos else np.float32(probe.qnorm) - 2.0 * dots + norms[lo:hi]
    q32.fill(0.0)
    return out


def scan_one(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int, probe: Probe,
    metric_cos: bool, m: int,
) -> tuple[I64, F32, float]:
    """(At least) the ``m`` rows with the smallest approximate values for one probe.

    Returns ``(selected_rows, their_values, floor)``: every row *not* selected has an
    approximate value of at least ``floor`` (``inf`` when every row is selected). A gallery below
    :data:`PARALLEL_FROM` rows is scanned on the calling thread.
    """
    m = max(1, min(m, n))
    kernels = _numba()
    if kernels is None:
        out = _numpy_values(codes, scale, norms, n, probe, metric_cos)
        if m < n:
            part = np.argpartition(out, m - 1)[:m]
            return part.astype(np.int64), out[part], float(out[part[m - 1]])
        return np.arange(n, dtype=np.int64), out, float("inf")
    parallel = n >= PARALLEL_FROM
    chunks = max(2 * _threads(), (n + CHUNK_ROWS - 1) // CHUNK_ROWS) if parallel else 1
    chunks = min(chunks, max(1, n // max(m, 1)))
    heap_val = np.empty((chunks, m), dtype=np.float32)
    heap_idx = np.empty((chunks, m), dtype=np.int64)
    args = (codes, scale, norms, probe.q16, np.float32(probe.qscale), np.float32(probe.qnorm),
            metric_cos, n, heap_val, heap_idx)
    if chunks == 1:
        kernels["scan_serial"](*args)  # no thread pool: safe from any thread
        if n > m:  # the heap is full: every other row's value is at least its largest
            return heap_idx[0], heap_val[0], float(heap_val[0].max())
        return heap_idx[0], heap_val[0], float("inf")  # m == n: every row is in it
    with _kernel_lock:
        kernels["scan_parallel"](*args)
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
        flat_idx, flat_val = flat_idx[part[:m]], flat_val[part[:m]]
    return flat_idx.astype(np.int64), flat_val, floor


def rows_at_most(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int, probe: Probe,
    metric_cos: bool, limit: float,
) -> tuple[I64, F32]:
    """Rows whose approximate value (computed exactly as :func:`scan_one` computes it) is at
    most ``limit``, and their values. A second pass, needed only when the scan's selection is
    not enough."""
    kernels = _numba()
    if kernels is None:
        values = _numpy_values(codes, scale, norms, n, probe, metric_cos)
        rows = np.flatnonzero(values <= f32_up(limit)).astype(np.int64)
        return rows, values[rows]
    out = np.empty(n, dtype=np.int64)
    out_val = np.empty(n, dtype=np.float32)
    count = int(kernels["rows_below"](codes, scale, norms, probe.q16, np.float32(probe.qscale),
                                      np.float32(probe.qnorm), metric_cos, n, f32_up(limit),
                                      out, out_val))
    return out[:count].copy(), out_val[:count].copy()


def values_of(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, rows: I64, probe: Probe,
    metric_cos: bool,
) -> F32:
    """The approximate values of a few rows (exact integer dots, the scan's float32 epilogue)."""
    dots = codes[rows].astype(np.int32) @ probe.q16.astype(np.int32)
    prod = scale[rows] * np.float32(probe.qscale) * dots.astype(np.float32)
    if metric_cos:
        return -prod
    values: F32 = np.float32(probe.qnorm) - np.float32(2.0) * prod + norms[rows]
    return values


def row_bounds(  # noqa: PLR0917 - internal kernels
    values: npt.NDArray[Any], errors: F32, norms: F32, q_err: float, qnorm: float, slack: float,
    tiny: float, cosine: bool,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each row's proven distance interval (see :mod:`faceseal.matching.bounds`)."""
    lower = np.empty(values.shape[0], dtype=np.float64)
    upper = np.empty(values.shape[0], dtype=np.float64)
    kernels = _numba()
    fill = bounds.row_bounds if kernels is None else kernels["row_bounds"]
    fill(values, errors, norms, float(q_err), float(qnorm), float(slack), float(tiny),
         bool(cosine), lower, upper)
    return lower, upper


def kth_subject_upper(subjects: npt.NDArray[np.int32], upper: npt.NDArray[np.float64],
                      top_k: int) -> tuple[int, float]:
    """(distinct subjects, the ``top_k``-th smallest per-subject ``upper``, inf if fewer)."""
    kernels = _numba()
    find = bounds.kth_subject_upper if kernels is None else kernels["kth_subject_upper"]
    count, kth = find(subjects, upper, int(top_k))
    return int(count), float(kth)


def f32_up(value: float) -> np.float32:
    """``value`` as float32, rounded up (a limit must never shrink)."""
    single = np.float32(value)
    if float(single) < value:
        single = np.nextafter(single, np.float32(np.inf))
    return single


#: Rows -> (their values for a finer-quantised probe, its error, its approximate squared norm).
Tighten = Callable[[I64], tuple[F32, float, float]]


@dataclass(frozen=True, slots=True)
class Selection:
    """One probe's first pass over the gallery: ``rows`` (at least the ``m`` asked for, or every
    row) and their approximate ``values``; every other row's value is at least ``floor``.
    ``q_err`` and ``qnorm`` are the probe's quantisation error and approximate squared norm, and
    ``more(limit)`` returns every row whose value is at most ``limit`` (a second pass, computed
    exactly as the first)."""

    rows: I64
    values: F32
    floor: float
    q_err: float
    qnorm: float
    more: Callable[[float], tuple[I64, F32]]
    wipe: Callable[[], None]
    #: With the VNNI scan: the values of given rows for the probe at int16 precision, with that
    #: probe's error and norm (narrower bounds for the rows kept; see Gallery._complete).
    tighten: Tighten | None = None

    def __repr__(self) -> str:
        return f"Selection(<{self.rows.shape[0]} rows>)"


def batch_pays(n: int, probes: int) -> bool:
    """Whether :func:`scan_many` beats one :func:`scan_one` per probe: with the compiled kernels,
    as soon as the work is worth waking a second thread; with numpy, only for galleries too large
    for cache (BLAS over float32 blocks)."""
    if probes < 2:
        return False
    if numba_enabled():
        return n * probes >= PARALLEL_FROM
    return n >= PARALLEL_FROM


def scan_many(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int,
    queries: npt.NDArray[np.float64], metric_cos: bool, m: int,
) -> list[Selection]:
    """The ``m`` smallest approximate values for each of a batch of probes (one pass over the
    gallery for all of them). The caller calls each selection's ``wipe`` when done with it.

    With VNNI (:func:`vnni_enabled`, dimensions a multiple of 64) the probes are quantised to
    int8 and scanned by ``vpdpbusd``; each selection is then what :func:`scan_one` selects for
    the same int8 probe, and its second pass is :func:`rows_at_most` with it."""
    m = max(1, min(m, n))
    kernels = _numba()
    if kernels is None:
        return _scan_many_numpy(codes, scale, norms, n, queries, metric_cos, m)
    vnni = _vnni() if codes.shape[1] % 64 == 0 and codes.flags.c_contiguous else None
    probes = [quantize_probe(query, INT8_LEVELS if vnni else INT16_LEVELS)
              for query in queries]
    count = len(probes)
    q16s = np.stack([probe.q16 for probe in probes])
    qscales = np.array([probe.qscale for probe in probes], dtype=np.float32)
    qnorms = np.array([probe.qnorm for probe in probes], dtype=np.float32)
    heap_val = np.empty((count, m), dtype=np.float32)
    heap_idx = np.empty((count, m), dtype=np.int64)
    groups = max(1, min(count, _threads()))
    shifted = (q16s + 128).astype(np.uint8) if vnni else q16s
    try:
        with _kernel_lock:
            if vnni is not None:
                vnni["scan_batch_vnni"](codes, scale, norms, shifted,
                                        np.ones((1, codes.shape[1]), dtype=np.uint8), qscales,
                                        qnorms, metric_cos, n, heap_val, heap_idx, groups)
            else:
                kernels["scan_batch"](codes, scale, norms, q16s, qscales, qnorms, metric_cos, n,
                                      heap_val, heap_idx, groups)
    finally:
        q16s.fill(0)
        shifted.fill(0)
    selections = []
    for p, probe in enumerate(probes):
        # Every probe's heap saw every row: full unless the gallery has at most m rows.
        floor = float(heap_val[p].max()) if n > m else float("inf")
        keep = heap_idx[p] >= 0

        def more(limit: float, probe: Probe = probe) -> tuple[I64, F32]:
            return rows_at_most(codes, scale, norms, n, probe, metric_cos, limit)

        tighten: Tighten | None = None
        wipe = probe.wipe
        if vnni is not None:
            finer = quantize_probe(queries[p])

            def tighten(rows: I64, finer: Probe = finer) -> tuple[F32, float, float]:
                return (values_of(codes, scale, norms, rows, finer, metric_cos), finer.q_err,
                        finer.qnorm)

            def wipe(probe: Probe = probe, finer: Probe = finer) -> None:
                probe.wipe()
                finer.wipe()

        selections.append(Selection(heap_idx[p][keep], heap_val[p][keep], floor, probe.q_err,
                                    probe.qnorm, more, wipe, tighten))
    return selections


def _scan_many_numpy(  # noqa: PLR0917 - internal kernels
    codes: npt.NDArray[np.int8], scale: F32, norms: F32, n: int,
    queries: npt.NDArray[np.float64], metric_cos: bool, m: int,
) -> list[Selection]:
    """:func:`scan_many` without numba: float32 blocks multiplied by BLAS, the probes in float32
    (their error is the float32 rounding)."""
    probes = queries.shape[0]
    q32 = queries.astype(np.float32)
    q64 = q32.astype(np.float64)
    q_err = np.linalg.norm(queries - q64, axis=1)
    qnorms64 = np.einsum("ij,ij->i", q64, q64)
    qnorms = qnorms64.astype(np.float32)
    heap_val = np.full((probes, m), np.inf, dtype=np.float32)
    heap_idx = np.full((probes, m), -1, dtype=np.int64)
    block = np.empty((min(n, BATCH_BLOCK_ROWS), codes.shape[1]), dtype=np.float32)
    qt = np.ascontiguousarray(q32.T)
    for lo in range(0, n, BATCH_BLOCK_ROWS):
        hi = min(n, lo + BATCH_BLOCK_ROWS)
        view = block[: hi - lo]
        np.copyto(view, codes[lo:hi], casting="unsafe")
        sdots = (view @ qt).T * scale[None, lo:hi]
        values = -sdots if metric_cos else qnorms[:, None] - 2.0 * sdots + norms[None, lo:hi]
        _merge_numpy(values, lo, heap_val, heap_idx)
    block.fill(0.0)
    qt.fill(0.0)
    selections = []
    for p in range(probes):
        floor = float(heap_val[p].max()) if n > m else float("inf")
        keep = heap_idx[p] >= 0

        def more(limit: float, query: npt.NDArray[np.float64] = queries[p]) -> tuple[I64, F32]:
            values, _, _ = approx_values(codes, scale, norms, n, query, metric_cos)
            rows = np.flatnonzero(values <= f32_up(limit)).astype(np.int64)
            return rows, values[rows]

        selections.append(Selection(heap_idx[p][keep], heap_val[p][keep], floor,
                                    float(q_err[p]), float(qnorms64[p]), more, _nothing))
    q32.fill(0.0)
    return selections


def _nothing() -> None:
    """Nothing to wipe: the numpy batch keeps no quantised probe."""


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
