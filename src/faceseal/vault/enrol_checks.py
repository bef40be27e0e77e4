"""Warnings about what an enrolment is about to add to a subject.

Two mistakes are common with real photo folders and are not errors (the caller may mean them):

* a template far from the subject's others -- most likely a photo of another person in the
  folder. "Far" is a median distance above the model's match threshold: to the subject's stored
  templates when it has some, else to the other templates of the same enrolment. The median,
  not the nearest, so that a folder mixing two people is flagged even though each photo has
  near neighbours;
* a template identical to one the subject has, or to another of the same enrolment (the same
  photo twice, a byte-identical copy): it adds nothing but weight.

The check opens the subject's templates once, in memory, and wipes them afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateStore
from faceseal.vault.records import RecordSealer

__all__ = ["EnrolWarning", "enrolment_warnings", "subject_warnings"]

#: Distances at or below this are "the same encoding" (dlib is deterministic for one photo).
IDENTICAL = 1e-6

_Vector = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class EnrolWarning:
    source: str
    code: str  # "far_from_subject" or "duplicate"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "code": self.code, "message": self.message}


def _distances(matrix: npt.NDArray[np.float64], vector: npt.NDArray[np.float64],
               spec: ModelSpec) -> npt.NDArray[np.float64]:
    if spec.metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1)
        scale = np.where(norms == 0.0, 1.0, norms) * (float(np.linalg.norm(vector)) or 1.0)
        return np.asarray(1.0 - (matrix @ vector) / scale, dtype=np.float64)
    return np.asarray(np.linalg.norm(matrix - vector, axis=1), dtype=np.float64)


def enrolment_warnings(labels: Sequence[str], new: Sequence[_Vector],
                       existing: Sequence[_Vector], spec: ModelSpec) -> list[EnrolWarning]:
    """Warnings for the templates ``new`` (named by ``labels``) of a subject holding
    ``existing``."""
    fresh = np.stack([np.asarray(v, dtype=np.float64) for v in new])
    stored = (np.stack([np.asarray(v, dtype=np.float64) for v in existing]) if existing
              else np.empty((0, fresh.shape[1])))
    warnings: list[EnrolWarning] = []
    try:
        for i, label in enumerate(labels):
            to_stored = _distances(stored, fresh[i], spec) if len(stored) else np.empty(0)
            to_fresh = _distances(fresh, fresh[i], spec)
            earlier = [j for j in range(i) if to_fresh[j] <= IDENTICAL]
            if len(to_stored) and float(to_stored.min()) <= IDENTICAL:
                warnings.append(EnrolWarning(label, "duplicate", f"{label}: identical to a "
                                             "template the subject already has"))
            elif earlier:
                warnings.append(EnrolWarning(label, "duplicate", f"{label}: identical to "
                                             f"{labels[earlier[0]]} in this enrolment"))
            others = to_stored if len(to_stored) else np.delete(to_fresh, i)
            if len(others) and float(np.median(others)) > spec.threshold:
                # No distance in the message: an enroller may not verify, and a number would
                # make every enrolment a finer 1:1 oracle than the one bit the warning is.
                whose = "stored" if len(to_stored) else "newly enrolled"
                warnings.append(EnrolWarning(
                    label, "far_from_subject",
                    f"{label}: farther than the match threshold from most of the subject's "
                    f"{len(others)} other {whose} template(s); is it another person?"))
    finally:
        fresh.fill(0.0)
        stored.fill(0.0)
    return warnings


def subject_warnings(store: TemplateStore, sealer: RecordSealer, tenant: str, subject_id: str,
                     *, spec: ModelSpec, labels: Sequence[str],
                     new: Sequence[_Vector]) -> list[EnrolWarning]:
    """:func:`enrolment_warnings` against the subject's stored templates of ``spec``'s model
    (damaged ones are left out: the integrity check reports them elsewhere)."""
    if not new:
        return []
    opened, _damaged = sealer.open(store.subject_templates(tenant, subject_id))
    existing = [o.encoding for o in opened if o.row.model_id == spec.model_id]
    try:
        return enrolment_warnings(labels, new, existing, spec)
    finally:
        for item in opened:
            item.encoding.fill(0)
