"""Exact 1:1 comparison in float64 on freshly decrypted templates (verify's path).

1:1 verification opens the few records of one subject and compares in float64, so its distance is
bit-for-bit what a brute-force comparison of the stored encodings gives (0.0 for the enrolled
encoding itself); it never depends on the in-memory gallery's reduced-precision copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from faceseal.matching.models import Metric


def closest_exact(
    vectors: Sequence[npt.NDArray[np.floating]], template_ids: Sequence[str],
    probe: npt.NDArray[np.floating], metric: Metric,
) -> tuple[str, float] | None:
    """(template id, distance) of the template closest to ``probe``; the first one on a tie."""
    if not vectors:
        return None
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    query = np.asarray(probe, dtype=np.float64).reshape(-1)
    try:
        if metric == "cosine":
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix /= np.where(norms == 0.0, 1.0, norms)
            q_norm = float(np.linalg.norm(query))
            unit = query / (q_norm if q_norm else 1.0)
            distances = 1.0 - matrix @ unit
        else:
            distances = np.linalg.norm(matrix - query, axis=1)
        best = int(np.argmin(distances))
        return template_ids[best], float(distances[best])
    finally:
        matrix.fill(0.0)
