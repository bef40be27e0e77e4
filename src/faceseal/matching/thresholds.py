"""Thresholds owned by the vault: configured within a model's bounds, only ever made stricter.

A threshold decides what counts as a match and, through that, what counts as activity for
retention. A caller that could loosen it would turn every probe into a "match" (and keep a subject
from ever being purged), so a per-call threshold may only be *stricter* than the configured one;
a looser one is refused, never clamped, so the caller learns its request was not honoured.
"""

from __future__ import annotations

import math

from faceseal.errors import InvalidInput, ThresholdTooLoose
from faceseal.matching.models import ModelSpec

#: Below this no two photos of one person match; a configured threshold under it is a mistake.
MIN_THRESHOLD_FRACTION = 0.1


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number")
    return float(value)


def check_configured(value: object, spec: ModelSpec) -> float:
    """A threshold an administrator configures for ``spec``: within its bounds."""
    threshold = _number(value, "a threshold")
    low = spec.ceiling * MIN_THRESHOLD_FRACTION
    if not low <= threshold <= spec.ceiling:
        raise InvalidInput(f"the threshold of model {spec.model_id} must be within "
                           f"{low:g}..{spec.ceiling:g}")
    return threshold


def effective(requested: object | None, configured: float) -> float:
    """The threshold a query uses: ``configured``, or a stricter one the caller asked for."""
    if requested is None:
        return configured
    threshold = _number(requested, "threshold")
    if not threshold > 0:
        raise InvalidInput("threshold must be a positive finite number")
    if threshold > configured:
        raise ThresholdTooLoose(f"threshold {threshold:g} is looser than the configured "
                                f"{configured:g}; a caller may only make it stricter")
    return threshold
