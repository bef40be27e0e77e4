"""The in-memory gallery: decrypted templates of one tenant and one model, ready to match.

Templates are decrypted once and kept in step with enrolments and erasures, so no query ever
decrypts the gallery. Each template is held as an **int8 code** ``c`` with a per-row scale ``s``
(``x ~ s*c``), scanned for every query by a compiled kernel (:mod:`faceseal.matching.kernels`),
plus three float32 numbers: ``|s*c|^2``, and ``e = |x - s*c|`` rounded up, the row's quantisation
error. With a 16-byte template id and a subject number that is 160 bytes per 128-d template
(float32 would be 512): the gallery holds *no* exact copy of the templates.

Exactness comes by construction, not by keeping more precision:

* **First pass, bounded.** The probe ``q`` is quantised too (int16, error ``e_q``); the scan
  computes each row's approximate value from exact integer dot products. By the triangle
  inequality (Euclidean) or Cauchy-Schwarz (cosine) each row's *true* distance lies within
  ``e_q + e`` (plus a generous float32 rounding slack) of its approximate one, so each subject
  gets a proven interval ``[lower, upper]``.
* **Candidates.** With ``U`` the k-th smallest ``upper`` among subjects, the true k-th distance
  is at most ``U``; every subject whose ``lower`` exceeds ``U`` is excluded, every other one is a
  candidate (:meth:`Gallery.candidates`). Rows the scan did not keep are fetched by a second pass
  when its bound cannot exclude them, so the candidate list is complete.
* **Exact re-rank.** :meth:`Gallery.search` with an ``exact`` function (the vault's: it opens the
  candidate subject's records and compares in float64, as verify does) visits candidates by
  ``lower`` and stops once the next ``lower`` exceeds the k-th exact distance found. The top-k
  returned is the one a float64 brute force over the decrypted records returns, ties (broken by
  subject id) included, and every distance is that float64 distance.

Without ``exact``, :meth:`Gallery.search` ranks by the approximate distances and says how far
each may be off (:attr:`Match.error`); the vault never answers that way.

The arrays live in locked, non-dumpable memory (:mod:`faceseal.matching.memory`); erased rows and
everything at :meth:`Gallery.clear` are overwritten (best effort: numpy temporaries of a few
candidate rows per query are not).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from faceseal.matching import kernels
from faceseal.matching.memory import LockedArray
from faceseal.matching.models import Metric

FloatMatrix = npt.NDArray[np.float64]
_INITIAL_CAPACITY = 64
_GROWTH = 1.25
#: Rows kept from the scan per requested subject (several templates a subject, and the rows the
#: bound cannot exclude), and at least this many.
_HEAP_PER_K = 16
_MIN_HEAP = 64
#: Relative slack for float32 rounding in the approximate values: about 100 times the worst
#: rounding of the float32 epilogue (and of BLAS's float32 sums in the batch scan). Generous on
#: purpose: it only adds candidates, never removes one.
_ROUNDING_SLACK = 1e-4
#: Absolute slack for float64 rounding of the exact distances and of the bounds themselves.
_ABS_SLACK = 1e-9
#: Template ids the vault makes (128 random bits in hex) are held as their 16 bytes.
def _pack_hex_ids(template_ids: Sequence[str]) -> bytes | None:
    """16 bytes per id if every id is 32 lowercase hex digits (what the vault makes), else
    None: the answer of matching each against ``[0-9a-f]{32}``, without a regex call per id."""
    if not template_ids or any(len(t) != 32 for t in template_ids):
        return None
    joined = "".join(template_ids)
    if not joined.isascii() or joined != joined.lower():
        return None
    try:
        packed = bytes.fromhex(joined)
    except ValueError:
        return None
    # fromhex skips whitespace: a shorter result means an id was not 32 hex digits.
    return packed if len(packed) == 16 * len(template_ids) else None
HEX_IDS = "hex16"
TEXT_IDS = "text"

#: ``exact(subject_id, probe)``: the subject's closest template and its exact float64 distance
#: to ``probe`` (the caller's probe, as given), or None when the subject has none any more.
ExactFn = Callable[[str, npt.NDArray[np.floating]], tuple[str, float] | None]
#: ``prefetch(subject_ids)``: the exact function will be asked about these subjects (every one
#: of them), so it may open them in one go.
PrefetchFn = Callable[[list[str]], None]


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate: the subject, its closest template and the distance to it.

    ``error`` bounds ``|distance - exact distance|``: 0.0 when the distance is exact (every
    answer the vault gives), positive for an approximate search without an exact function.
    """

    subject_id: str
    template_id: str
    distance: float
    error: float = 0.0


class Bounds(NamedTuple):
    """A subject the bounded first pass cannot exclude from the top-k: its true distance to the
    probe lies in ``[lower, upper]``; ``template_id`` is its row with the smallest approximate
    distance (a hint, not necessarily the closest). A named tuple: made by the dozen per
    query, where a frozen dataclass's constructor shows in the profile."""

    subject_id: str
    template_id: str
    lower: float
    upper: float


#: The arrays a gallery is made of, in snapshot order.
SECTION_NAMES = ("center", "codes", "scales", "norms", "errors", "subjects", "template_ids",
                 "subject_names")


class Gallery:
    """Decrypted templates of one (tenant, model), indexed for identify."""

    def __init__(self, dimension: int, metric: Metric, *, capacity: int = _INITIAL_CAPACITY,
                 id_width: int = 32, id_kind: str = HEX_IDS) -> None:
        self._dimension = dimension
        self._metric = metric
        self._size = 0
        self._capacity = 0
        self._codes: LockedArray | None = None
        self._scale: LockedArray | None = None
        self._norms: LockedArray | None = None
        self._err: LockedArray | None = None
        self._subj = np.zeros(0, dtype=np.int32)
        if id_kind not in (HEX_IDS, TEXT_IDS):
            raise ValueError("unknown template id kind")
        self._id_kind = id_kind
        self._tids = np.zeros(0, dtype="V16" if id_kind == HEX_IDS else f"S{id_width}")
        self._names: list[str] = []
        self._code_of: dict[str, int] = {}
        self._max_err = 0.0
        self._max_norm = 0.0
        # Euclidean distances do not change when both sides move by the same vector; face
        # encodings share a large common part (dlib's: norm ~1.2 of ~1.4), so codes of x - centre
        # have a third of the quantisation error of codes of x, and the bound excludes more.
        self._center = LockedArray((dimension,), np.float64)
        self._lock = threading.RLock()
        self._allocate(max(capacity, 1))

    # --- size and identity -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def metric(self) -> Metric:
        return self._metric

    def subject_count(self) -> int:
        return len(self._code_of)

    def has_subject(self, subject_id: str) -> bool:
        return subject_id in self._code_of

    @property
    def memory_locked(self) -> bool:
        """Whether every array holding decrypted data is locked against swapping."""
        parts = (self._codes, self._scale, self._norms, self._err, self._center)
        return all(p is not None and p.locked for p in parts)

    def nbytes(self) -> int:
        """Bytes held for this gallery's arrays (capacity included); subject names excluded."""
        parts = (self._codes, self._scale, self._norms, self._err)
        return sum(p.nbytes for p in parts if p is not None) + self._subj.nbytes + self._tids.nbytes

    def bytes_per_template(self) -> int:
        """Bytes each template takes in the arrays (codes, scale, norm, error, subject, id)."""
        return self._dimension + 4 * 4 + self._tids.dtype.itemsize

    def __repr__(self) -> str:
        return f"<Gallery {self._metric} d={self._dimension} rows={self._size}>"

    def __reduce__(self) -> Any:
        raise TypeError("a Gallery cannot be pickled")

    # --- storage ---------------------------------------------------------------------------------

    def _arr(self, part: LockedArray | None) -> npt.NDArray[Any]:
        assert part is not None
        return part.array

    def _allocate(self, capacity: int) -> None:
        d = self._dimension
        old = (self._codes, self._scale, self._norms, self._err)
        new = (LockedArray((capacity, d), np.int8), LockedArray((capacity,), np.float32),
               LockedArray((capacity,), np.float32), LockedArray((capacity,), np.float32))
        n = self._size
        for before, after in zip(old, new, strict=True):
            if before is not None:
                after.array[:n] = before.array[:n]
                before.release()
        self._codes, self._scale, self._norms, self._err = new
        subj = np.zeros(capacity, dtype=np.int32)
        subj[:n] = self._subj[:n]
        tids = np.zeros(capacity, dtype=self._tids.dtype)
        tids[:n] = self._tids[:n]
        self._subj, self._tids = subj, tids
        self._capacity = capacity

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` templates in one allocation (a load that knows its size
        avoids growing, copying and locking the arrays again and again)."""
        with self._lock:
            self._reserve(capacity)

    def _reserve(self, size: int) -> None:
        if size > self._capacity:
            self._allocate(max(size, int(self._capacity * _GROWTH) + 16))

    def _encode_ids(self, template_ids: Sequence[str]) -> npt.NDArray[Any]:
        """The ids as this gallery holds them; switches to text ids (for good) when one is not
        a vault-made hex id."""
        if self._id_kind == HEX_IDS:
            packed = _pack_hex_ids(template_ids)
            if packed is not None:
                return np.frombuffer(packed, dtype="V16")
            text = [bytes(v).hex().encode() for v in self._tids[: self._size]]
            self._id_kind = TEXT_IDS
            self._tids = np.array(text + [b""] * (self._capacity - self._size), dtype="S32")
        encoded = np.array([t.encode() for t in template_ids])
        if encoded.dtype.itemsize > self._tids.dtype.itemsize:
            self._tids = self._tids.astype(encoded.dtype)
        return encoded

    def _decode_id(self, row: int) -> str:
        value = self._tids[row]
        return bytes(value).hex() if self._id_kind == HEX_IDS else bytes(value).decode()

    def _decode_ids(self, rows: list[int]) -> list[str]:
        blob = self._tids[rows].tobytes()
        width = self._tids.dtype.itemsize
        if self._id_kind == HEX_IDS:
            return [blob[i:i + width].hex() for i in range(0, len(blob), width)]
        return [blob[i:i + width].rstrip(b"\x00").decode() for i in range(0, len(blob), width)]

    @property
    def id_kind(self) -> str:
        """How template ids are held: ``hex16`` (16 raw bytes) or ``text``."""
        return self._id_kind

    # --- keeping in step -------------------------------------------------------------------------

    def add(self, subject_id: str, template_id: str, vector: npt.NDArray[np.floating]) -> None:
        """Add one decrypted template."""
        self.add_many([subject_id], [template_id], np.asarray(vector).reshape(1, -1))

    def add_many(
        self,
        subject_ids: Sequence[str],
        template_ids: Sequence[str],
        vectors: npt.NDArray[np.floating],
    ) -> None:
        """Add decrypted templates in one go (rows of ``vectors`` match the two id lists)."""
        count = len(template_ids)
        if vectors.shape != (count, self._dimension) or len(subject_ids) != count:
            raise ValueError("ids and vectors do not line up with the gallery dimension")
        if count == 0:
            return
        prepared = self._prepare(vectors, centred=False)
        if not np.isfinite(prepared).all():
            raise ValueError("vectors must be finite")
        with self._lock:
            if self._size == 0 and self._metric == "euclidean":
                self._center.array[:] = prepared.mean(axis=0)
            prepared -= self._center.array
            encoded_ids = self._encode_ids(template_ids)
            start = self._size
            self._reserve(start + count)
            codes = self._codes_for(subject_ids)
            self._quantize_into(prepared, start)
            self._subj[start:start + count] = codes
            self._tids[start:start + count] = encoded_ids
            self._size = start + count
        prepared.fill(0.0)

    def _codes_for(self, subject_ids: Sequence[str]) -> list[int]:
        code_of = self._code_of
        # New names first, in order of first appearance; then one C-level lookup per row.
        for subject_id in dict.fromkeys(subject_ids):
            if subject_id not in code_of:
                code_of[subject_id] = len(self._names)
                self._names.append(subject_id)
        return list(map(code_of.__getitem__, subject_ids))

    def _quantize_into(self, x: FloatMatrix, start: int) -> None:
        end = start + x.shape[0]
        errors = self._arr(self._err)[start:end]
        norms = self._arr(self._norms)[start:end]
        kernels.quantize_rows(x, self._arr(self._codes)[start:end],
                              self._arr(self._scale)[start:end], norms, errors)
        self._max_err = max(self._max_err, float(errors.max()))
        # From the float32 values held, as a loaded snapshot computes it: same bounds either way.
        self._max_norm = max(self._max_norm, float(norms.max()))

    def remove_subject(self, subject_id: str) -> int:
        """Drop (and overwrite) every template of a subject; returns how many were removed."""
        with self._lock:
            code = self._code_of.pop(subject_id, None)
            if code is None:
                return 0
            rows = self._rows_of(code)
            for row in np.sort(rows)[::-1]:
                self._swap_remove(int(row))
            if not self._code_of:
                self._names.clear()
            return len(rows)

    def _rows_of(self, code: int) -> npt.NDArray[np.int64]:
        """The rows of one subject: one vectorised pass (erasure is rare next to 1:N)."""
        return np.flatnonzero(self._subj[: self._size] == code).astype(np.int64)

    def _swap_remove(self, row: int) -> None:
        last = self._size - 1
        arrays = (self._arr(self._codes), self._arr(self._scale), self._arr(self._norms),
                  self._arr(self._err), self._subj, self._tids)
        for array in arrays:
            if row != last:
                array[row] = array[last]
            array[last] = np.zeros((), dtype=array.dtype) if array.dtype.kind == "V" else 0
        self._size = last

    def _prepare(self, vectors: npt.NDArray[np.floating], *, centred: bool = True) -> FloatMatrix:
        """float64 copies in the space the codes live in: unit length (cosine) or minus the
        centre (Euclidean; the centre is zero for cosine)."""
        prepared = np.array(vectors, dtype=np.float64, copy=True)
        if self._metric == "cosine":
            norms = np.linalg.norm(prepared, axis=1, keepdims=True)
            prepared /= np.where(norms == 0.0, 1.0, norms)
        elif centred:
            prepared -= self._center.array
        return prepared

    def clear(self) -> None:
        """Forget everything, overwriting the decrypted data (and unlocking its memory)."""
        with self._lock:
            for part in (self._codes, self._scale, self._norms, self._err):
                if part is not None:
                    part.release()
            self._codes = self._scale = self._norms = self._err = None
            self._subj = np.zeros(0, dtype=np.int32)
            self._tids = np.zeros(0, dtype=self._tids.dtype)
            self._size = self._capacity = 0
            self._names.clear()
            self._code_of.clear()
            self._max_err = self._max_norm = 0.0
            self._center.array.fill(0.0)
            self._allocate(1)

    # --- what is held ----------------------------------------------------------------------------

    def vectors(self) -> FloatMatrix:
        """Every template as held (``s*c``, the int8 approximation), in row order. For tests."""
        with self._lock:
            n = self._size
            scale = self._arr(self._scale)[:n].astype(np.float64)[:, None]
            held: FloatMatrix = scale * self._arr(self._codes)[:n].astype(np.float64)
            held += self._center.array
            return held

    def errors(self) -> FloatMatrix:
        """Each row's bound on ``|x - s*c|``, in row order. For tests."""
        with self._lock:
            return self._arr(self._err)[: self._size].astype(np.float64)

    def template_ids(self) -> list[str]:
        with self._lock:
            return [self._decode_id(r) for r in range(self._size)]

    def subject_ids(self) -> list[str]:
        """The subject of each row, in row order."""
        with self._lock:
            return [self._names[c] for c in self._subj[: self._size]]

    # --- matching --------------------------------------------------------------------------------

    def closest_of_subject(
        self, subject_id: str, probe: npt.NDArray[np.floating]
    ) -> Match | None:
        """The subject's template closest to ``probe`` by the approximate distance (None if the
        subject has none), with its error bound. The vault verifies from the records instead."""
        with self._lock:
            code = self._code_of.get(subject_id)
            if code is None:
                return None
            rows = self._rows_of(code)
            if rows.size == 0:
                return None
            query = self._prepare(probe.reshape(1, -1))[0]
            scan = kernels.quantize_probe(query)
            try:
                values = kernels.values_of(self._arr(self._codes), self._arr(self._scale),
                                           self._arr(self._norms), rows, scan,
                                           self._metric == "cosine")
                lower, upper = self._row_bounds(rows, values, scan.q_err, scan.qnorm)
            finally:
                scan.wipe()
                query.fill(0.0)
            # The subject's distance (its closest row's) is within [min lower, min upper].
            best = int(np.lexsort((rows, upper))[0])
            low, high = float(lower.min()), float(upper[best])
            return Match(subject_id, self._decode_id(int(rows[best])), (low + high) / 2,
                         (high - low) / 2)

    def search(self, probe: npt.NDArray[np.floating], top_k: int,
               exact: ExactFn | None = None, prefetch: PrefetchFn | None = None) -> list[Match]:
        """The ``top_k`` closest distinct subjects, each with its closest template.

        With ``exact`` the answer is exact (see the module docstring); without it, ranked by the
        approximate distances, each within its :attr:`Match.error`. ``prefetch`` is told the
        subjects ``exact`` will certainly be asked about (the first ``top_k`` candidates).
        """
        return self.search_many(np.asarray(probe).reshape(1, -1), top_k, exact, prefetch)[0]

    def search_many(self, probes: npt.NDArray[np.floating], top_k: int,
                    exact: ExactFn | None = None,
                    prefetch: PrefetchFn | None = None) -> list[list[Match]]:
        """:meth:`search` for each row of ``probes`` (one scan of the gallery for all of them)."""
        probes = self._check_probes(probes, top_k)
        missing: set[str] = set()
        while True:
            bounds = self.candidates_many(probes, top_k, exclude=missing)
            if exact is None:
                return [self._approximate(b, top_k) for b in bounds]
            if prefetch is not None:  # the re-rank opens at least the first top_k of each
                prefetch(list(dict.fromkeys(b.subject_id for found in bounds
                                            for b in found[:top_k])))
            found = [_rerank(b, probe, top_k, exact, missing)
                     for b, probe in zip(bounds, probes, strict=True)]
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
            # A candidate's records were gone (damaged, or erased since): its bound no longer
            # stands for it, so search again without it.

    def candidates(self, probe: npt.NDArray[np.floating], top_k: int,
                   exclude: set[str] | None = None) -> list[Bounds]:
        """Every subject that may be among the ``top_k`` closest to ``probe`` (the others are
        excluded by a proven bound), by ``lower`` then subject id. ``exclude``: subjects to treat
        as absent."""
        return self.candidates_many(np.asarray(probe).reshape(1, -1), top_k, exclude)[0]

    def candidates_many(self, probes: npt.NDArray[np.floating], top_k: int,
                        exclude: set[str] | None = None) -> list[list[Bounds]]:
        """:meth:`candidates` for each row of ``probes``."""
        probes = self._check_probes(probes, top_k)
        with self._lock:
            if self._size == 0:
                return [[] for _ in range(probes.shape[0])]
            excluded = np.array(sorted(self._code_of[s] for s in (exclude or ())
                                       if s in self._code_of), dtype=np.int64)
            queries = self._prepare(probes)
            try:
                if kernels.batch_pays(self._size, queries.shape[0]):
                    return self._bounds_batch(queries, top_k, excluded)
                return [self._bounds_one(query, top_k, excluded) for query in queries]
            finally:
                queries.fill(0.0)

    def _check_probes(self, probes: npt.NDArray[np.floating], top_k: int) -> FloatMatrix:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        matrix = np.asarray(probes, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self._dimension:
            raise ValueError("probes must be a (count, dimension) matrix")
        return matrix

    def _heap_size(self, top_k: int) -> int:
        return min(self._size, max(_MIN_HEAP, _HEAP_PER_K * top_k))

    def _bounds_one(self, query: FloatMatrix, top_k: int,
                    excluded: npt.NDArray[np.int64]) -> list[Bounds]:
        n = self._size
        cos = self._metric == "cosine"
        m = self._heap_size(top_k) + excluded.size
        codes, scale, norms = (self._arr(self._codes), self._arr(self._scale),
                               self._arr(self._norms))
        scan = kernels.quantize_probe(query)
        try:
            while True:
                rows, values, floor = kernels.scan_one(codes, scale, norms, n, scan, cos, m)
                found = self._complete(
                    rows, values, floor, scan.q_err, scan.qnorm, top_k, excluded,
                    lambda limit: kernels.rows_at_most(codes, scale, norms, n, scan, cos, limit))
                if found is not None:
                    return found
                m = min(n, m * 4)
        finally:
            scan.wipe()

    def _bounds_batch(self, queries: FloatMatrix, top_k: int,
                      excluded: npt.NDArray[np.int64]) -> list[list[Bounds]]:
        n = self._size
        cos = self._metric == "cosine"
        m = self._heap_size(top_k) + excluded.size
        codes, scale, norms = (self._arr(self._codes), self._arr(self._scale),
                               self._arr(self._norms))
        selections = kernels.scan_many(codes, scale, norms, n, queries, cos, m)
        results: list[list[Bounds]] = []
        try:
            for query, chosen in zip(queries, selections, strict=True):
                found = self._complete(chosen.rows, chosen.values, chosen.floor, chosen.q_err,
                                       chosen.qnorm, top_k, excluded, chosen.more,
                                       chosen.tighten)
                if found is None:  # too few distinct subjects among the best rows: search alone
                    found = self._bounds_one(query, top_k, excluded)
                results.append(found)
        finally:
            for chosen in selections:
                chosen.wipe()
        return results

    def _row_bounds(self, rows: npt.NDArray[np.int64], values: npt.NDArray[Any], q_err: float,
                    qnorm: float) -> tuple[FloatMatrix, FloatMatrix]:
        """Proven lower and upper bounds of each row's true distance from its approximate value
        (the proof: :mod:`faceseal.matching.bounds`)."""
        slack = _ROUNDING_SLACK * (qnorm + self._max_norm) + 1e-30
        return kernels.row_bounds(values, self._arr(self._err)[rows],
                                  self._arr(self._norms)[rows], q_err, qnorm, slack, _ABS_SLACK,
                                  self._metric == "cosine")

    def _limit(self, upper_k: float, q_err: float, qnorm: float) -> float:
        """The largest approximate value a row may have and still have a lower bound of at most
        ``upper_k`` (with the largest row error: a row beyond it is excluded)."""
        slack = _ROUNDING_SLACK * (qnorm + self._max_norm) + 1e-30
        err = self._max_err
        if self._metric == "cosine":
            norm = math.sqrt(self._max_norm) * (1 + 1e-6)
            reach = q_err * (norm + err) + math.sqrt(qnorm) * (1 + 1e-6) * err + slack \
                + _ABS_SLACK
            return upper_k - 1.0 + reach
        reach = upper_k + q_err + err + _ABS_SLACK
        return reach * reach + slack

    def _complete(  # noqa: PLR0917 - internal step of one search
        self,
        rows: npt.NDArray[np.int64],
        values: npt.NDArray[Any],
        floor: float,
        q_err: float,
        qnorm: float,
        top_k: int,
        excluded: npt.NDArray[np.int64],
        rescan: Callable[[float], tuple[npt.NDArray[np.int64], npt.NDArray[Any]]],
        tighten: kernels.Tighten | None = None,
    ) -> list[Bounds] | None:
        """The candidate subjects from the scan's best rows; None when they hold too few subjects
        to bound the k-th distance. ``floor``: every row outside ``rows`` has an approximate value
        of at least this. ``tighten``: the kept rows' values for a finer-quantised probe (the
        VNNI batch scan's int8 probe again at int16), with that probe's error and norm: their
        bounds are then computed from those, which are narrower; ``floor``, the rescan and the
        exclusion of every row not kept stay in the scan's own terms."""

        def bounds_of(rows: npt.NDArray[np.int64], values: npt.NDArray[Any]
                      ) -> tuple[FloatMatrix, FloatMatrix]:
            if tighten is None:
                return self._row_bounds(rows, values, q_err, qnorm)
            finer, finer_err, finer_norm = tighten(rows)
            return self._row_bounds(rows, finer, finer_err, finer_norm)

        subj = self._subj[rows]
        if excluded.size:
            keep = ~np.isin(subj, excluded)
            rows, values, subj = rows[keep], values[keep], subj[keep]
        lower, upper = bounds_of(rows, values)
        count, upper_k = kernels.kth_subject_upper(subj, upper, top_k)
        if count < top_k and math.isfinite(floor):
            return None
        if count == 0:
            return []
        if math.isfinite(floor) and self._limit(upper_k, q_err, qnorm) >= floor:
            # Rows outside the selection may not be excluded by the bound: fetch them.
            extra, extra_values = rescan(self._limit(upper_k, q_err, qnorm))
            fresh = ~np.isin(extra, rows)
            if excluded.size:
                fresh &= ~np.isin(self._subj[extra], excluded)
            if fresh.any():
                rows = np.concatenate([rows, extra[fresh]])
                values = np.concatenate([values.astype(np.float64),
                                         extra_values[fresh].astype(np.float64)])
                subj = self._subj[rows]
                lower, upper = bounds_of(rows, values)
                count, upper_k = kernels.kth_subject_upper(subj, upper, top_k)
        inside = np.flatnonzero(lower <= upper_k)
        inside = inside[np.lexsort((rows[inside], lower[inside]))]
        first: dict[int, int] = {}  # subject code -> index into the lists below
        picked_rows: list[int] = []
        lows: list[float] = []
        highs: list[float] = []
        for code, row, low, high in zip(subj[inside].tolist(), rows[inside].tolist(),
                                        lower[inside].tolist(), upper[inside].tolist(),
                                        strict=True):
            at = first.get(code)
            if at is None:
                first[code] = len(picked_rows)
                picked_rows.append(row)
                lows.append(low)
                highs.append(high)
            elif high < highs[at]:
                highs[at] = high
        ids = self._decode_ids(picked_rows)
        out = [Bounds(self._names[code], ids[at], lows[at], highs[at])
               for code, at in first.items()]
        # Already by lower bound; equal lower bounds by subject id, as the re-rank expects.
        out.sort(key=lambda b: (b.lower, b.subject_id))
        return out

    def _approximate(self, bounds: list[Bounds], top_k: int) -> list[Match]:
        """Without exact values: ranked by the middle of each subject's interval."""
        ranked = sorted(bounds, key=lambda b: ((b.lower + b.upper) / 2, b.subject_id))[:top_k]
        return [Match(b.subject_id, b.template_id, (b.lower + b.upper) / 2,
                      (b.upper - b.lower) / 2) for b in ranked]

    # --- snapshots -------------------------------------------------------------------------------

    def export_sections(self) -> list[tuple[str, npt.NDArray[Any]]]:
        """The arrays that make up this gallery, compacted, for an encrypted snapshot.

        The caller must hold :meth:`frozen` while it reads them.
        """
        n = self._size
        live, inverse = np.unique(self._subj[:n], return_inverse=True)
        names = "\x00".join(self._names[int(c)] for c in live).encode()
        return [
            ("center", self._center.array),
            ("codes", self._arr(self._codes)[:n]),
            ("scales", self._arr(self._scale)[:n]),
            ("norms", self._arr(self._norms)[:n]),
            ("errors", self._arr(self._err)[:n]),
            ("subjects", inverse.astype(np.int32).reshape(n)),
            ("template_ids", self._tids[:n]),
            ("subject_names", np.frombuffer(names, dtype=np.uint8)),
        ]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Hold the gallery still (no adds or removes) while it is exported."""
        with self._lock:
            yield

    @classmethod
    def for_load(cls, dimension: int, metric: Metric, rows: int, id_width: int, *,
                 headroom: float = 1 / 32, id_kind: str = HEX_IDS) -> Gallery:
        """An empty gallery sized for ``rows`` templates, to be filled by :meth:`load_targets`."""
        capacity = rows + int(rows * headroom) + 64
        return cls(dimension, metric, capacity=capacity, id_width=id_width, id_kind=id_kind)

    def load_targets(self, rows: int) -> dict[str, npt.NDArray[Any]]:
        """Writable arrays for the first ``rows`` rows (a snapshot is decrypted straight in)."""
        return {
            "center": self._center.array,
            "codes": self._arr(self._codes)[:rows],
            "scales": self._arr(self._scale)[:rows],
            "norms": self._arr(self._norms)[:rows],
            "errors": self._arr(self._err)[:rows],
            "subjects": self._subj[:rows],
            "template_ids": self._tids[:rows],
        }

    def finish_load(self, rows: int, names_blob: bytes) -> None:
        """Adopt ``rows`` rows written through :meth:`load_targets` and their subject names."""
        names = names_blob.decode().split("\x00") if names_blob else []
        subj = self._subj[:rows]
        if rows and (subj.min() < 0 or subj.max() >= len(names)):
            raise ValueError("subject codes out of range")
        self._size = rows
        self._names = names
        self._code_of = {name: code for code, name in enumerate(names)}
        if len(self._code_of) != len(names):
            raise ValueError("duplicate subject names")
        if rows and int(np.bincount(subj, minlength=len(names)).min()) == 0:
            raise ValueError("a subject without templates")
        errors = self._arr(self._err)[:rows]
        if rows and not (np.isfinite(errors).all() and errors.min() >= 0):
            raise ValueError("row errors out of range")
        if not np.isfinite(self._center.array).all() or (
                self._metric == "cosine" and np.any(self._center.array)):
            raise ValueError("centre out of range")
        self._max_err = float(errors.max()) if rows else 0.0
        self._max_norm = float(self._arr(self._norms)[:rows].max()) if rows else 0.0


def _rerank(bounds: list[Bounds], probe: npt.NDArray[np.floating], top_k: int, exact: ExactFn,
            missing: set[str]) -> list[Match] | None:
    """The exact top-k from the candidates: visit them by lower bound, stop when the next lower
    bound exceeds the k-th exact distance found. None when a candidate turned out to have no
    records (added to ``missing``): then the bounds must be recomputed without it."""
    found: list[Match] = []
    kth = float("inf")
    for b in bounds:
        if len(found) >= top_k and b.lower > kth:
            break
        result = exact(b.subject_id, probe)
        if result is None:
            missing.add(b.subject_id)
            return None
        found.append(Match(b.subject_id, result[0], result[1]))
        if len(found) >= top_k:
            found.sort(key=lambda m: (m.distance, m.subject_id))
            kth = found[top_k - 1].distance
    found.sort(key=lambda m: (m.distance, m.subject_id))
    return found[:top_k]
