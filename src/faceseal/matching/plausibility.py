"""Probe plausibility: a probe encoding must look like something its model outputs.

The cheapest reconstruction of a stored encoding asks for the distance from the origin and from
each unit vector (``x_i = (d0^2 - d_i^2 + 1) / 2``). No face gives those vectors, so they are
refused before they are compared with anything, and the refusal is audited as suspicious.

For the dlib ResNet model the bounds come from the real encodings of the sample photos
(docs/threat-model.md, "Probe plausibility", has the figures): norms 1.36..1.40, largest coordinate
magnitude 0.34..0.38 (0.24..0.28 of the norm), coordinate spread (standard deviation over root mean
square) 0.997..0.9999. The bounds are wide on purpose (the sample is small, and other cameras, ages
and jitter move encodings): they exist to refuse degenerate probes, not to recognise faces. They do
*not* stop an attacker who perturbs a plausible probe a little at a time; disclosure bands and
query budgets do (:mod:`faceseal.vault.disclosure`, :mod:`faceseal.vault.budgets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from faceseal.errors import ImplausibleProbe
from faceseal.matching.models import DLIB_RESNET_V1, ModelSpec


@dataclass(frozen=True)
class ProbeBounds:
    """What a model's outputs look like."""

    min_norm: float
    max_norm: float
    #: The largest magnitude one coordinate may have.
    max_abs: float
    #: The largest share of the norm one coordinate may carry (a unit vector carries all of it).
    max_peak_share: float
    #: The least coordinate spread: standard deviation over root mean square (0 for a constant
    #: vector, about 1 for a model's output).
    min_spread: float


#: Measured on the dlib encodings of tests/data/faces (see the module doc), with wide margins.
DLIB_BOUNDS = ProbeBounds(min_norm=0.8, max_norm=2.0, max_abs=0.8, max_peak_share=0.5,
                          min_spread=0.8)

#: Bounds per model id; a model without an entry gets only the degenerate-vector checks.
BOUNDS: dict[str, ProbeBounds] = {DLIB_RESNET_V1.model_id: DLIB_BOUNDS}


def check_probe(probe: np.ndarray[Any, Any], spec: ModelSpec) -> None:
    """Raise :class:`~faceseal.errors.ImplausibleProbe` unless ``probe`` could come from
    ``spec``'s model. The message names the test that failed, never a value of the probe."""
    vector = np.asarray(probe, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ImplausibleProbe(f"the probe is not a plausible {spec.model_id} encoding: it is "
                               "the zero vector")
    rms = norm / np.sqrt(vector.size)
    spread = float(np.std(vector)) / rms
    peak = float(np.abs(vector).max())
    bounds = BOUNDS.get(spec.model_id)
    if spread < (bounds.min_spread if bounds is not None else 1e-6):
        raise _implausible(spec, "its coordinates are (nearly) all equal")
    if bounds is None:
        return
    if not bounds.min_norm <= norm <= bounds.max_norm:
        raise _implausible(spec, f"its norm is outside {bounds.min_norm:g}..{bounds.max_norm:g}")
    if peak > bounds.max_abs or peak / norm > bounds.max_peak_share:
        raise _implausible(spec, "one coordinate carries most of it (a unit-like vector)")


def _implausible(spec: ModelSpec, why: str) -> ImplausibleProbe:
    return ImplausibleProbe(f"the probe is not a plausible {spec.model_id} encoding: {why}")
