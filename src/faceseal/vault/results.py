"""Typed results of vault operations. None of them carries an encoding.

Each result type is the one definition of its shape: the Python API returns it, the HTTP service
serves it as its response model (pydantic reads these dataclasses: the field types, and the
docstring under a field as its description in the OpenAPI document), the CLI prints its
:meth:`Result.to_dict`, and the HTTP client rebuilds it with :meth:`Result.from_dict`. Adding a
field here adds it everywhere (``tests/test_result_schemas.py``). The base,
:class:`faceseal.schema.Result`, sits in the top layer so that the audit and access layers'
results (``ChainReport``, ``PrincipalInfo``) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from faceseal.schema import SCHEMA_CONFIG, Result

# Result and SCHEMA_CONFIG are re-exported: the base every result type shares.
__all__ = ["SCHEMA_CONFIG", "Candidate", "CheckResult", "Disclosure", "EnrollResult",
           "EraseResult", "IdentifyResult", "Result", "Score", "SubjectInfo", "VerifyResult"]

#: What an answer reveals: exact distances, a band, or the decision only.
Disclosure = Literal["exact", "band", "decision"]
#: The coarse band a non-exact answer gives.
Score = Literal["strong", "match", "none"]


@dataclass(frozen=True)
class EnrollResult(Result):
    tenant: str
    subject_id: str
    model_id: str
    template_ids: list[str]
    sources: list[str]
    #: Sources left out under ``skip_bad``: {"source", "code", "reason"} each.
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Templates enrolled anyway but worth a look: {"source", "code", "message"} each, code
    #: "far_from_subject" (another person?) or "duplicate".
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyResult(Result):
    """1:1: is the probe the claimed subject?"""

    tenant: str
    subject_id: str
    match: bool
    distance: float | None
    """The exact distance: only for principals holding the calibrator role, else null."""
    threshold: float
    model_id: str
    template_id: str | None
    """The closest template; null on a non-match unless the disclosure is exact."""
    damaged_template_ids: list[str] = field(default_factory=list)
    """Templates of this subject that failed their integrity check and were left out."""
    score: Score | None = None
    """A coarse band (strong, match, none); null when the tenant's disclosure is 'decision'."""
    disclosure: Disclosure = "exact"
    """What this answer reveals: exact, band or decision."""


@dataclass(frozen=True)
class Candidate(Result):
    subject_id: str
    #: The exact distance; None unless the caller may see exact distances.
    distance: float | None
    match: bool
    template_id: str
    score: Score | None = None


@dataclass(frozen=True)
class IdentifyResult(Result):
    """1:N: who among the tenant's subjects is closest to the probe?"""

    tenant: str
    model_id: str
    threshold: float
    top_k: int
    candidates: list[Candidate]
    """Closest first. Every top-k candidate with its distance for calibrators; otherwise only
    the candidates within the threshold."""
    #: How many templates the gallery searched.
    gallery_size: int
    #: How many templates of the tenant are damaged and were left out of the search.
    damaged_templates: int = 0
    #: What this answer reveals: ``exact`` (every top-k candidate with its distance), ``band``
    #: or ``decision`` (only the candidates within the threshold).
    disclosure: Disclosure = "exact"

    @property
    def best(self) -> Candidate | None:
        """The closest candidate if it is within the threshold."""
        return self.candidates[0] if self.candidates and self.candidates[0].match else None


@dataclass(frozen=True)
class EraseResult(Result):
    tenant: str
    subject_id: str
    templates_erased: int
    key_material_destroyed: bool


@dataclass(frozen=True)
class SubjectInfo(Result):
    tenant: str
    subject_id: str
    templates: int
    created_at: float
    last_seen_at: float


@dataclass(frozen=True)
class CheckResult(Result):
    """An integrity scan: every record opened once."""

    records: int
    damaged: list[dict[str, str]]
    orphan_subject_keys: int
    #: Subjects whose rows do not match their authenticated inventory (templates deleted,
    #: added or moved outside the vault), with what the inventory and the rows say.
    inventory_mismatches: list[dict[str, str | int | None]] = field(default_factory=list)
    #: Principal rows whose MAC does not verify (refused at authentication), by name.
    unverified_principals: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.orphan_subject_keys or self.inventory_mismatches
                    or self.unverified_principals)
