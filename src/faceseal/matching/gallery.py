"""The in-memory gallery: decrypted templates of one tenant and one model, ready to match.

Templates are decrypted once and kept in step with enrolments and erasures, so no query ever
decrypts the gallery. Each template is held in two parts (per-row scale ``s``):

* an **int8 code** ``c`` (``x ~ s*c``), scanned for every query by a compiled kernel
  (:mod:`faceseal.matching.kernels`): one byte per dimension, four times less memory traffic than
  float32;
* an **int16 residual** ``r`` so that ``x~ = s*(c + r/65534)`` is within ``s/131068`` of the
  decrypted value in every dimension (about 2e-8 for dlib encodings: as fine as float32's own
  rounding, at 3 bytes per dimension instead of 4).

A query scans the codes, keeps the best few rows, recomputes their distances exactly (float64
arithmetic on ``x~``) and then makes the search *provably complete*: with ``e_i = |x~_i - s_i c_i|``
and the probe's own quantisation error ``e_q``, the triangle inequality bounds every row's true
distance from below by its approximate one minus ``e_q + e_i``; every row whose bound does not
exceed the k-th best exact distance found is re-checked exactly, so the top-k returned is the one a
brute-force search over the same values returns, and every distance and decision is exact.

The arrays live in locked, non-dumpable memory (:mod:`faceseal.matching.memory`); erased rows and
everything at :meth:`Gallery.clear` are overwritten (best effort: numpy temporaries of a few
candidate rows per query are not).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.matching import kernels
from faceseal.matching.memory import LockedArray
from faceseal.matching.models import Metric

FloatMatrix = npt.NDArray[np.float64]
#: Residual resolution: x~ = s * (c + r / RESIDUAL_SCALE), r in [-32767, 32767].
RESIDUAL_SCALE = 65534.0
_INITIAL_CAPACITY = 64
_GROWTH = 1.25
#: Rows kept from the scan before exact re-ranking, per requested candidate.
_HEAP_PER_K = 16
_MIN_HEAP = 64
#: Relative slack for float32 rounding in the approximate values (generous on purpose: it only
#: adds rows to re-check exactly, never removes one).
_ROUNDING_SLACK = 1e-4


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate: the subject, its closest template and the distance to it."""

    subject_id: str
    template_id: str
    distance: float


#: The arrays a gallery is made of, in snapshot order: (name, dtype, per-row shape or None).
SECTION_NAMES = ("codes", "residuals", "scales", "norms", "errors", "subjects", "template_ids",
                 "subject_names")


class Gallery:
    """Decrypted templates of one (tenant, model), indexed for verify and identify."""

    def __init__(self, dimension: int, metric: Metric, *, capacity: int = _INITIAL_CAPACITY,
                 id_width: int = 32) -> None:
        self._dimension = dimension
        self._metric = metric
        self._size = 0
        self._capacity = 0
        self._id_width = id_width
        self._codes: LockedArray | None = None
        self._resid: LockedArray | None = None
        self._scale: LockedArray | None = None
        self._norms: LockedArray | None = None
        self._err: LockedArray | None = None
        self._subj = np.zeros(0, dtype=np.int32)
        self._tids = np.zeros(0, dtype=f"S{id_width}")
        self._names: list[str] = []
        self._code_of: dict[str, int] = {}
        self._max_err = 0.0
        self._max_norm = 0.0
        # Rows by subject for 1:1 verify, built on first use: rows sorted by subject code, and
        # rows added since then. Dropped on removal (rows move) and rebuilt when next needed.
        self._scratch = kernels.Scratch()
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
        parts = (self._codes, self._resid, self._scale, self._norms, self._err)
        return all(p is not None and p.locked for p in parts)

    def nbytes(self) -> int:
        """Bytes held for this gallery (capacity included), ids and names excluded."""
        parts = (self._codes, self._resid, self._scale, self._norms, self._err)
        return sum(p.nbytes for p in parts if p is not None) + self._subj.nbytes + self._tids.nbytes

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
        old = (self._codes, self._resid, self._scale, self._norms, self._err)
        new = (LockedArray((capacity, d), np.int8), LockedArray((capacity, d), np.int16),
               LockedArray((capacity,), np.float32), LockedArray((capacity,), np.float32),
               LockedArray((capacity,), np.float32))
        n = self._size
        for before, after in zip(old, new, strict=True):
            if before is not None:
                after.array[:n] = before.array[:n]
                before.release()
        self._codes, self._resid, self._scale, self._norms, self._err = new
        subj = np.zeros(capacity, dtype=np.int32)
        subj[:n] = self._subj[:n]
        tids = np.zeros(capacity, dtype=self._tids.dtype)
        tids[:n] = self._tids[:n]
        self._subj, self._tids = subj, tids
        self._capacity = capacity

    def _reserve(self, size: int) -> None:
        if size > self._capacity:
            self._allocate(max(size, int(self._capacity * _GROWTH) + 16))

    def _widen_ids(self, width: int) -> None:
        if width > self._id_width:
            self._id_width = width
            self._tids = self._tids.astype(f"S{width}")

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
        prepared = self._prepare(vectors)
        if not np.isfinite(prepared).all():
            raise ValueError("vectors must be finite")
        encoded_ids = np.array([t.encode() for t in template_ids])
        with self._lock:
            self._widen_ids(encoded_ids.dtype.itemsize)
            start = self._size
            self._reserve(start + count)
            codes = [self._code_for(s) for s in subject_ids]
            self._quantize_into(prepared, start)
            self._subj[start:start + count] = codes
            self._tids[start:start + count] = encoded_ids
            self._size = start + count
        prepared.fill(0.0)

    def _code_for(self, subject_id: str) -> int:
        code = self._code_of.get(subject_id)
        if code is None:
            code = self._code_of[subject_id] = len(self._names)
            self._names.append(subject_id)
        return code

    def _quantize_into(self, x: FloatMatrix, start: int) -> None:
        end = start + x.shape[0]
        peak = np.abs(x).max(axis=1)
        scale = (peak / 127.0).astype(np.float32)
        # Round the float32 scale up so that |x / s| <= 127 and the residual stays within 0.5.
        low = scale.astype(np.float64) * 127.0 < peak
        scale[low] = np.nextafter(scale[low], np.float32(np.inf))
        scale[scale == 0] = 1.0
        s = scale.astype(np.float64)[:, None]
        ratio = x / s
        codes = np.rint(ratio).clip(-127, 127)
        resid = np.rint((ratio - codes) * RESIDUAL_SCALE).clip(-32767, 32767)
        approx = s * codes
        errors = np.linalg.norm(s * (resid / RESIDUAL_SCALE), axis=1)
        errors32 = np.nextafter((errors * (1 + 1e-6)).astype(np.float32), np.float32(np.inf))
        norms = np.einsum("ij,ij->i", approx, approx)
        self._arr(self._codes)[start:end] = codes.astype(np.int8)
        self._arr(self._resid)[start:end] = resid.astype(np.int16)
        self._arr(self._scale)[start:end] = scale
        self._arr(self._norms)[start:end] = norms.astype(np.float32)
        self._arr(self._err)[start:end] = errors32
        self._max_err = max(self._max_err, float(errors32.max()))
        self._max_norm = max(self._max_norm, float(norms.max()))
        for temp in (ratio, codes, resid, approx):
            temp.fill(0.0)

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
        """The rows of one subject: one vectorised pass (erasure and 1:1 are rare next to 1:N,
        and the vault verifies from the subject's records, not from here)."""
        return np.flatnonzero(self._subj[: self._size] == code).astype(np.int64)

    def _swap_remove(self, row: int) -> None:
        last = self._size - 1
        arrays = (self._arr(self._codes), self._arr(self._resid), self._arr(self._scale),
                  self._arr(self._norms), self._arr(self._err), self._subj, self._tids)
        for array in arrays:
            if row != last:
                array[row] = array[last]
            array[last] = 0
        self._size = last

    def _prepare(self, vectors: npt.NDArray[np.floating]) -> FloatMatrix:
        prepared = np.array(vectors, dtype=np.float64, copy=True)
        if self._metric == "cosine":
            norms = np.linalg.norm(prepared, axis=1, keepdims=True)
            prepared /= np.where(norms == 0.0, 1.0, norms)
        return prepared

    def clear(self) -> None:
        """Forget everything, overwriting the decrypted data (and unlocking its memory)."""
        with self._lock:
            for part in (self._codes, self._resid, self._scale, self._norms, self._err):
                if part is not None:
                    part.release()
            self._codes = self._resid = self._scale = self._norms = self._err = None
            self._subj = np.zeros(0, dtype=np.int32)
            self._tids = np.zeros(0, dtype=self._tids.dtype)
            self._size = self._capacity = 0
            self._names.clear()
            self._code_of.clear()
            self._max_err = self._max_norm = 0.0
            self._scratch.release()
            self._allocate(1)

    # --- exact values ----------------------------------------------------------------------------

    def _reconstruct(self, rows: npt.NDArray[np.intp]) -> FloatMatrix:
        codes = self._arr(self._codes)[rows].astype(np.float64)
        resid = self._arr(self._resid)[rows].astype(np.float64)
        scale = self._arr(self._scale)[rows].astype(np.float64)[:, None]
        exact: FloatMatrix = scale * (codes + resid / RESIDUAL_SCALE)
        codes.fill(0.0)
        resid.fill(0.0)
        return exact

    def _exact(self, rows: npt.NDArray[np.intp], query: npt.NDArray[np.float64]) -> FloatMatrix:
        candidates = self._reconstruct(rows)
        if self._metric == "cosine":
            result = np.asarray(1.0 - candidates @ query, dtype=np.float64)
        else:
            result = np.asarray(np.linalg.norm(candidates - query, axis=1), dtype=np.float64)
        candidates.fill(0.0)
        return result

    def vectors(self) -> FloatMatrix:
        """Every template as held (``x~``), in row order. For tests and integrity checks."""
        with self._lock:
            return self._reconstruct(np.arange(self._size))

    def template_ids(self) -> list[str]:
        with self._lock:
            return [t.decode() for t in self._tids[: self._size]]

    def subject_ids(self) -> list[str]:
        """The subject of each row, in row order."""
        with self._lock:
            return [self._names[c] for c in self._subj[: self._size]]

    # --- matching --------------------------------------------------------------------------------

    def closest_of_subject(
        self, subject_id: str, probe: npt.NDArray[np.floating]
    ) -> Match | None:
        """The subject's template closest to ``probe`` (None if the subject has none)."""
        with self._lock:
            code = self._code_of.get(subject_id)
            if code is None:
                return None
            rows = self._rows_of(code)
            if rows.size == 0:
                return None
            query = self._prepare(probe.reshape(1, -1))[0]
            distances = self._exact(rows, query)
            best = int(np.lexsort((rows, distances))[0])
            return Match(subject_id, self._tids[rows[best]].decode(), float(distances[best]))

    def search(self, probe: npt.NDArray[np.floating], top_k: int) -> list[Match]:
        """The ``top_k`` closest distinct subjects, each with its closest template."""
        return self.search_many(np.asarray(probe).reshape(1, -1), top_k)[0]

    def search_many(self, probes: npt.NDArray[np.floating], top_k: int) -> list[list[Match]]:
        """:meth:`search` for each row of ``probes`` (one scan of the gallery for all of them)."""
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        probes = np.asarray(probes)
        if probes.ndim != 2 or probes.shape[1] != self._dimension:
            raise ValueError("probes must be a (count, dimension) matrix")
        with self._lock:
            if self._size == 0:
                return [[] for _ in range(probes.shape[0])]
            queries = self._prepare(probes)
            try:
                if queries.shape[0] == 1:
                    return [self._search_one(queries[0], top_k)]
                return self._search_batch(queries, top_k)
            finally:
                queries.fill(0.0)

    def _heap_size(self, top_k: int) -> int:
        return min(self._size, max(_MIN_HEAP, _HEAP_PER_K * top_k))

    def _search_one(self, query: FloatMatrix, top_k: int) -> list[Match]:
        n = self._size
        cos = self._metric == "cosine"
        m = self._heap_size(top_k)
        codes, scale, norms = (self._arr(self._codes), self._arr(self._scale),
                               self._arr(self._norms))
        while True:
            values, rows, q_err, qnorm, floor = kernels.scan_one(codes, scale, norms, n, query,
                                                                 cos, m, self._scratch)
            found = self._complete(query, rows, q_err, qnorm, floor, top_k,
                                   lambda limit, v=values: kernels.rows_at_most(v, limit))
            if found is not None:
                return found
            m = min(n, m * 4)

    def _search_batch(self, queries: FloatMatrix, top_k: int) -> list[list[Match]]:
        n = self._size
        cos = self._metric == "cosine"
        m = self._heap_size(top_k)
        codes, scale, norms = (self._arr(self._codes), self._arr(self._scale),
                               self._arr(self._norms))
        _, heap_idx, q_errs, qnorms, floors = kernels.scan_many(codes, scale, norms, n, queries,
                                                                cos, m)
        results: list[list[Match]] = []
        for p in range(queries.shape[0]):
            query = queries[p]

            def rescan(limit: float, query: FloatMatrix = query) -> npt.NDArray[np.int64]:
                values, _, _ = kernels.approx_values(codes, scale, norms, n, query, cos)
                return kernels.rows_at_most(values, limit)

            rows = heap_idx[p][heap_idx[p] >= 0]
            found = self._complete(query, rows, float(q_errs[p]), float(qnorms[p]),
                                   float(floors[p]), top_k, rescan)
            if found is None:  # too few distinct subjects among the best rows: search alone
                found = self._search_one(query, top_k)
            results.append(found)
        return results

    def _limit(self, best: float, q_err: float, qnorm: float) -> float:
        """The largest approximate value a row may have and still be within ``best`` exactly."""
        slack = _ROUNDING_SLACK * (qnorm + self._max_norm) + 1e-30
        if self._metric == "cosine":
            bound = (q_err * (np.sqrt(self._max_norm) + self._max_err)
                     + np.sqrt(qnorm) * self._max_err)
            return float(best - 1.0 + bound + slack)
        reach = best + q_err + self._max_err
        return float(reach * reach + slack)

    def _complete(  # noqa: PLR0917 - internal step of one search
        self,
        query: FloatMatrix,
        rows: npt.NDArray[np.int64],
        q_err: float,
        qnorm: float,
        floor: float,
        top_k: int,
        rescan: Any,
    ) -> list[Match] | None:
        """Exact top-k from the scan's best rows; None when they hold too few subjects.

        ``floor``: every row outside ``rows`` has an approximate value of at least this.
        """
        distances = self._exact(rows, query)
        best_rows, best_dist = self._best_per_subject(rows, distances)
        if len(best_rows) < top_k and np.isfinite(floor):
            return None
        kth_index = min(top_k, len(best_dist)) - 1
        kth = float(np.partition(best_dist, kth_index)[kth_index])
        limit = self._limit(kth, q_err, qnorm)
        if limit >= floor:  # rows outside the selection may still be close enough: fetch them
            extra = np.setdiff1d(rescan(limit), rows)
            if extra.size:
                rows = np.concatenate([rows, extra])
                distances = np.concatenate([distances, self._exact(extra, query)])
                best_rows, best_dist = self._best_per_subject(rows, distances)
        return self._ranked(best_rows, best_dist, top_k)

    def _best_per_subject(
        self, rows: npt.NDArray[np.int64], distances: FloatMatrix
    ) -> tuple[npt.NDArray[np.int64], FloatMatrix]:
        order = np.lexsort((rows, distances))
        subjects = self._subj[rows[order]]
        _, first = np.unique(subjects, return_index=True)
        picked = order[first]
        return rows[picked], distances[picked]

    def _ranked(
        self, rows: npt.NDArray[np.int64], distances: FloatMatrix, top_k: int
    ) -> list[Match]:
        if rows.size > top_k:
            cut = float(np.partition(distances, top_k - 1)[top_k - 1])
            keep = distances <= cut
            rows, distances = rows[keep], distances[keep]
        matches = [Match(self._names[int(self._subj[r])], self._tids[r].decode(), float(d))
                   for r, d in zip(rows, distances, strict=True)]
        matches.sort(key=lambda m: (m.distance, m.subject_id))
        return matches[:top_k]

    # --- snapshots -------------------------------------------------------------------------------

    def export_sections(self) -> list[tuple[str, npt.NDArray[Any]]]:
        """The arrays that make up this gallery, compacted, for an encrypted snapshot.

        The caller must hold :meth:`frozen` while it reads them.
        """
        n = self._size
        live, inverse = np.unique(self._subj[:n], return_inverse=True)
        names = "\x00".join(self._names[int(c)] for c in live).encode()
        return [
            ("codes", self._arr(self._codes)[:n]),
            ("residuals", self._arr(self._resid)[:n]),
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
    def for_load(cls, dimension: int, metric: Metric, rows: int, id_width: int,
                 headroom: float = 1 / 32) -> Gallery:
        """An empty gallery sized for ``rows`` templates, to be filled by :meth:`load_targets`."""
        capacity = rows + int(rows * headroom) + 64
        return cls(dimension, metric, capacity=capacity, id_width=id_width)

    def load_targets(self, rows: int) -> dict[str, npt.NDArray[Any]]:
        """Writable arrays for the first ``rows`` rows (a snapshot is decrypted straight in)."""
        return {
            "codes": self._arr(self._codes)[:rows],
            "residuals": self._arr(self._resid)[:rows],
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
        self._max_err = float(self._arr(self._err)[:rows].max()) if rows else 0.0
        self._max_norm = float(self._arr(self._norms)[:rows].max()) if rows else 0.0
