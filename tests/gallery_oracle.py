"""The float64 brute force the gallery is held to, and the exact function the vault gives it.

The gallery keeps int8 codes only; exact values come from the records (the vault opens the
candidate subjects). Here the original float64 vectors play the records.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from faceseal.matching.exact import closest_exact
from faceseal.matching.gallery import ExactFn

Matrix = NDArray[np.float64]


def distances_to(vectors: Matrix, probe: Matrix, metric: str) -> Matrix:
    """Float64 distances as :func:`faceseal.matching.exact.closest_exact` computes them."""
    if metric == "cosine":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        result: Matrix = 1.0 - unit @ (probe / np.linalg.norm(probe))
        return result
    result = np.linalg.norm(vectors - probe, axis=1)
    return result


def brute_force(vectors: Matrix, subjects: Sequence[str], probe: Matrix, top_k: int,
                metric: str) -> list[tuple[str, float]]:
    """Per-subject nearest template, ranked by (distance, subject id), in float64."""
    exact = exact_function(vectors, subjects, [f"t{i}" for i in range(len(subjects))], metric)
    best = [(s, found[1]) for s in sorted(set(subjects))
            if (found := exact(s, probe)) is not None]
    return sorted(best, key=lambda item: (item[1], item[0]))[:top_k]


def exact_function(vectors: Matrix, subjects: Sequence[str], template_ids: Sequence[str],
                   metric: str, calls: list[str] | None = None) -> ExactFn:
    """What the vault's exact ranker does, over ``vectors`` instead of sealed records
    (``calls`` collects the subjects opened)."""
    rows: dict[str, list[int]] = {}
    for row, subject in enumerate(subjects):
        rows.setdefault(subject, []).append(row)

    def exact(subject_id: str, probe: NDArray[np.floating]) -> tuple[str, float] | None:
        if calls is not None:
            calls.append(subject_id)
        mine = rows.get(subject_id, [])
        return closest_exact([vectors[r] for r in mine], [template_ids[r] for r in mine],
                             probe, metric)  # type: ignore[arg-type]

    return exact
