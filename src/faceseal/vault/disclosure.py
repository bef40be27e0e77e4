"""What a match answer reveals: the per-tenant disclosure policy and the presentation of results.

Exact distances are an oracle: 129 of them (the origin and each unit vector, or any 129 probes and
least squares) rebuild a stored 128-d encoding to machine precision, and a rebuilt encoding *is*
the biometric. So an answer reveals, by default, the decision and a coarse band only:

* ``band`` (the default): ``match`` and a ``score`` of ``strong`` (distance at most
  :data:`STRONG_FRACTION` of the threshold), ``match`` (within the threshold) or ``none``;
  identify returns only the candidates within the threshold. A probe that does not match learns
  one bit, the same bit the decision gives; see docs/threat-model.md for why this is the band.
* ``decision``: ``match`` only (no score); identify returns only the matching candidates.
* ``exact``: distances in full and every one of the ``top_k`` candidates. Never a tenant setting:
  only principals holding the ``calibrator`` role (permission ``distances.exact``) get it, and
  every answer's audit event says which disclosure it got.

The policy (disclosure and configured thresholds per model) is stored in the template store's
metadata under ``tenant_policy:<tenant>``, set by an admin (``tenants.policy``), audited, and
signed: a row MAC (:mod:`faceseal.audit.integrity`, domain ``tenant-policy``) over the tenant and
the canonical JSON of the policy, so a policy written into the store without the vault's key --
or moved from another tenant -- is refused (issue 12).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from faceseal.audit.integrity import RowAuthenticator
from faceseal.crypto.encoding import length_prefixed
from faceseal.errors import IntegrityFailure, InvalidInput
from faceseal.matching import thresholds
from faceseal.matching.models import ModelSpec, resolve_model
from faceseal.storage.base import TemplateStore
from faceseal.vault.results import (
    Candidate,
    Disclosure,
    IdentifyResult,
    Result,
    Score,
    VerifyResult,
)

DECISION: Final = "decision"
BAND: Final = "band"
EXACT: Final = "exact"
#: What a tenant may choose for principals without the exact-distance permission.
PolicyLevel = Literal["band", "decision"]
POLICY_LEVELS: tuple[PolicyLevel, ...] = (BAND, DECISION)
DEFAULT_DISCLOSURE: PolicyLevel = BAND
#: A match at most this fraction of the threshold away is ``strong``.
STRONG_FRACTION = 0.75
SCORE_STRONG: Final = "strong"
SCORE_MATCH: Final = "match"
SCORE_NONE: Final = "none"

META_PREFIX = "tenant_policy:"
POLICY_DOMAIN = b"tenant-policy"


@dataclass(frozen=True)
class TenantPolicy(Result):
    """A tenant's disclosure level and configured thresholds (model id -> threshold)."""

    tenant: str
    disclosure: PolicyLevel = DEFAULT_DISCLOSURE
    """What answers reveal to principals without the calibrator role."""
    thresholds: dict[str, float] = field(default_factory=dict)

    def threshold(self, spec: ModelSpec) -> float:
        """The configured threshold of ``spec`` for this tenant."""
        return self.thresholds.get(spec.model_id, spec.threshold)


def check_level(value: object) -> PolicyLevel:
    if value == BAND:
        return BAND
    if value == DECISION:
        return DECISION
    raise InvalidInput(f"disclosure must be one of {', '.join(POLICY_LEVELS)} (exact "
                       "distances are a permission of the principal: the calibrator role)")


def check_thresholds(values: object, models: dict[str, ModelSpec]) -> dict[str, float]:
    if not isinstance(values, dict):
        raise InvalidInput("thresholds must map model ids to numbers")
    return {str(k): thresholds.check_configured(v, resolve_model(str(k), models))
            for k, v in values.items()}


def _signed_content(tenant: str, disclosure: object, thresholds: object) -> bytes:
    return length_prefixed(tenant.encode()) + json.dumps(
        {"disclosure": disclosure, "thresholds": thresholds}, sort_keys=True,
        separators=(",", ":")).encode()


def load_policy(store: TemplateStore, tenant: str, models: dict[str, ModelSpec],
                auth: RowAuthenticator | None = None) -> TenantPolicy:
    """The tenant's policy (the defaults when none was set). A stored value outside the bounds,
    or (with ``auth``) one whose MAC does not verify -- the database edited behind the vault's
    back -- is refused, never used."""
    raw = store.get_meta(META_PREFIX + tenant)
    if raw is None:
        return TenantPolicy(tenant)
    try:
        document = json.loads(raw)
        if auth is not None and not auth.verifies(
                POLICY_DOMAIN, _signed_content(tenant, document["disclosure"],
                                               document["thresholds"]),
                bytes.fromhex(document.get("mac", ""))):
            raise InvalidInput("the policy's MAC does not verify")
        return TenantPolicy(tenant, check_level(document["disclosure"]),
                            check_thresholds(document["thresholds"], models))
    except (ValueError, KeyError, TypeError, InvalidInput):
        raise IntegrityFailure(f"the stored policy of tenant {tenant!r} is invalid or was "
                               "written without the vault's key") from None


def save_policy(store: TemplateStore, policy: TenantPolicy,
                auth: RowAuthenticator | None = None) -> None:
    document: dict[str, object] = {"disclosure": policy.disclosure,
                                   "thresholds": policy.thresholds}
    if auth is not None:
        document["mac"] = auth.sign(POLICY_DOMAIN, _signed_content(
            policy.tenant, policy.disclosure, policy.thresholds)).hex()
    store.set_meta(META_PREFIX + policy.tenant, json.dumps(document, sort_keys=True))


def score(distance: float, threshold: float) -> Score:
    if distance <= STRONG_FRACTION * threshold:
        return SCORE_STRONG
    return SCORE_MATCH if distance <= threshold else SCORE_NONE


def present_verify(result: VerifyResult, level: Disclosure) -> VerifyResult:
    """``result`` (computed exactly) as ``level`` allows the caller to see it."""
    if level == EXACT:
        return replace(result, score=score(result.distance or 0.0, result.threshold),
                       disclosure=EXACT)
    shown = score(result.distance or 0.0, result.threshold) if level == BAND else None
    # Which of the subject's templates was closest is a comparison between two of them: told
    # only on a match (where the caller has shown it holds that face anyway).
    return replace(result, distance=None, score=shown, disclosure=level,
                   template_id=result.template_id if result.match else None)


def present_identify(result: IdentifyResult, level: Disclosure) -> IdentifyResult:
    """``result`` as ``level`` allows: all candidates with distances, or only the matching
    ones with a band (or nothing more than their order)."""
    if level == EXACT:
        shown = [replace(c, score=score(c.distance or 0.0, result.threshold))
                 for c in result.candidates]
        return replace(result, candidates=shown, disclosure=EXACT)
    kept: list[Candidate] = [
        replace(c, distance=None,
                score=score(c.distance or 0.0, result.threshold) if level == BAND else None)
        for c in result.candidates if c.match]
    return replace(result, candidates=kept, disclosure=level)
