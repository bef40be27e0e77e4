"""The in-memory gallery: decrypted templates of one tenant and one model, ready to match.

Templates are decrypted once into a contiguous matrix and then kept in step with enrolments and
erasures, so no query ever decrypts the gallery. A 1:N query is one matrix-vector product (BLAS),
a partial sort, and an exact re-computation of the few best candidates' distances, so the
distances and decisions returned are exact float64 values whatever shortcut found them.

Erased rows are overwritten with zeros (best effort: numpy may have made temporary copies).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from faceseal.matching.models import Metric

FloatMatrix = npt.NDArray[np.float64]
_INITIAL_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate: the subject, its closest template and the distance to it."""

    subject_id: str
    template_id: str
    distance: float


class Gallery:
    """Decrypted templates of one (tenant, model), indexed for verify and identify."""

    def __init__(self, dimension: int, metric: Metric) -> None:
        self._dimension = dimension
        self._metric = metric
        self._vectors: FloatMatrix = np.zeros((_INITIAL_CAPACITY, dimension), dtype=np.float64)
        self._sq_norms = np.zeros(_INITIAL_CAPACITY, dtype=np.float64)
        self._template_ids: list[str] = []
        self._subject_of_row: list[str] = []
        self._rows_of_subject: dict[str, list[int]] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._template_ids)

    @property
    def dimension(self) -> int:
        return self._dimension

    def subject_count(self) -> int:
        return len(self._rows_of_subject)

    # --- keeping in step -------------------------------------------------------------------------

    def add(self, subject_id: str, template_id: str, vector: npt.NDArray[np.floating]) -> None:
        """Add one decrypted template."""
        self.add_many([subject_id], [template_id], np.asarray(vector).reshape(1, -1))

    def add_many(
        self,
        subject_ids: list[str],
        template_ids: list[str],
        vectors: npt.NDArray[np.floating],
    ) -> None:
        """Add decrypted templates in one go (rows of ``vectors`` match the two id lists)."""
        if vectors.shape != (len(template_ids), self._dimension) or len(subject_ids) != len(
            template_ids
        ):
            raise ValueError("ids and vectors do not line up with the gallery dimension")
        vectors = self._prepare(vectors)
        with self._lock:
            start = len(self._template_ids)
            self._reserve(start + len(template_ids))
            self._vectors[start:start + len(template_ids)] = vectors
            self._sq_norms[start:start + len(template_ids)] = np.einsum("ij,ij->i", vectors,
                                                                        vectors)
            for offset, (subject, template) in enumerate(zip(subject_ids, template_ids,
                                                             strict=True)):
                self._template_ids.append(template)
                self._subject_of_row.append(subject)
                self._rows_of_subject.setdefault(subject, []).append(start + offset)

    def remove_subject(self, subject_id: str) -> int:
        """Drop every template of a subject; returns how many were removed."""
        with self._lock:
            rows = self._rows_of_subject.pop(subject_id, [])
            for row in sorted(rows, reverse=True):
                self._swap_remove(row)
            return len(rows)

    def _swap_remove(self, row: int) -> None:
        last = len(self._template_ids) - 1
        if row != last:
            moved_subject = self._subject_of_row[last]
            self._vectors[row] = self._vectors[last]
            self._sq_norms[row] = self._sq_norms[last]
            self._template_ids[row] = self._template_ids[last]
            self._subject_of_row[row] = moved_subject
            rows = self._rows_of_subject[moved_subject]
            rows[rows.index(last)] = row
        self._vectors[last] = 0.0
        self._sq_norms[last] = 0.0
        self._template_ids.pop()
        self._subject_of_row.pop()

    def _reserve(self, size: int) -> None:
        capacity = self._vectors.shape[0]
        if size <= capacity:
            return
        new_capacity = max(size, capacity * 2)
        vectors = np.zeros((new_capacity, self._dimension), dtype=np.float64)
        vectors[:capacity] = self._vectors
        norms = np.zeros(new_capacity, dtype=np.float64)
        norms[:capacity] = self._sq_norms
        self._vectors.fill(0.0)
        self._vectors, self._sq_norms = vectors, norms

    def _prepare(self, vectors: npt.NDArray[np.floating]) -> FloatMatrix:
        prepared = np.asarray(vectors, dtype=np.float64)
        if self._metric == "cosine":
            norms = np.linalg.norm(prepared, axis=1, keepdims=True)
            prepared = prepared / np.where(norms == 0.0, 1.0, norms)
        return prepared

    def clear(self) -> None:
        """Forget everything, overwriting the decrypted vectors."""
        with self._lock:
            self._vectors.fill(0.0)
            self._sq_norms.fill(0.0)
            self._template_ids.clear()
            self._subject_of_row.clear()
            self._rows_of_subject.clear()

    # --- matching --------------------------------------------------------------------------------

    def has_subject(self, subject_id: str) -> bool:
        return subject_id in self._rows_of_subject

    def closest_of_subject(
        self, subject_id: str, probe: npt.NDArray[np.floating]
    ) -> Match | None:
        """The subject's template closest to ``probe`` (None if the subject has none)."""
        with self._lock:
            rows = list(self._rows_of_subject.get(subject_id, ()))
            if not rows:
                return None
            distances = self._exact(np.asarray(rows), self._prepare(probe.reshape(1, -1))[0])
        best = int(np.argmin(distances))
        return Match(subject_id, self._template_ids[rows[best]], float(distances[best]))

    def search(self, probe: npt.NDArray[np.floating], top_k: int) -> list[Match]:
        """The ``top_k`` closest distinct subjects, each with its closest template."""
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        with self._lock:
            size = len(self._template_ids)
            if size == 0:
                return []
            query = self._prepare(probe.reshape(1, -1))[0]
            approx = self._approximate(query, size)
            want = min(size, max(4 * top_k, 32))
            while True:
                rows = np.argpartition(approx, want - 1)[:want] if want < size else np.arange(size)
                matches = self._best_per_subject(rows, query)
                if len(matches) >= top_k or want >= size:
                    return matches[:top_k]
                want = min(size, want * 4)

    def _approximate(self, query: FloatMatrix, size: int) -> FloatMatrix:
        # |g - p|^2 = |g|^2 - 2 g.p + |p|^2; rounding here only affects which rows are re-checked
        # exactly, never the distances returned.
        dots = self._vectors[:size] @ query
        if self._metric == "cosine":
            return -dots
        return self._sq_norms[:size] - 2.0 * dots

    def _exact(self, rows: npt.NDArray[np.intp], query: FloatMatrix) -> FloatMatrix:
        candidates = self._vectors[rows]
        if self._metric == "cosine":
            return np.asarray(1.0 - candidates @ query, dtype=np.float64)
        return np.asarray(np.linalg.norm(candidates - query, axis=1), dtype=np.float64)

    def _best_per_subject(self, rows: npt.NDArray[np.intp], query: FloatMatrix) -> list[Match]:
        distances = self._exact(rows, query)
        best: dict[str, Match] = {}
        for index in np.argsort(distances, kind="stable"):
            row = int(rows[index])
            subject = self._subject_of_row[row]
            if subject not in best:
                best[subject] = Match(subject, self._template_ids[row], float(distances[index]))
        return sorted(best.values(), key=lambda m: (m.distance, m.subject_id))
