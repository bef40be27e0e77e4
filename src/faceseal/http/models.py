"""The JSON shapes of the API: strict request models (unknown fields, NaN and infinities refused)
and response models (what the OpenAPI document promises and schemathesis checks)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from faceseal.access.principals import NewPrincipalInfo, PrincipalInfo
from faceseal.access.roles import RoleName
from faceseal.audit.chain import Break, ChainReport
from faceseal.audit.log import AuditEventInfo
from faceseal.encoders.validation import MAX_ABS_VALUE, MAX_DIMENSION, MIN_DIMENSION
from faceseal.vault.bulk import BulkEnrollResult
from faceseal.vault.disclosure import TenantPolicy
from faceseal.vault.ids import MAX_ID_LENGTH
from faceseal.vault.results import (
    Candidate,
    EnrollResult,
    EraseResult,
    IdentifyResult,
    SubjectInfo,
    VerifyResult,
)
from faceseal.vault.rotation import DataKeyState, DataRotation, KekRotation, KeyStatus, Retirement
from faceseal.vault.vault import MAX_TOP_K

#: An id in a URL path: what the vault accepts (1-256 characters, no control characters), minus
#: what a path segment cannot carry: ``/``, and the dot segments ``.`` and ``..``.
_ID_CHAR = r"[^\x00-\x1f\x7f/]"
_ID_START = r"[^\x00-\x1f\x7f/.]"
PATH_ID_PATTERN = (rf"^(?:{_ID_START}{_ID_CHAR}*|\.{_ID_START}{_ID_CHAR}*|\.\.{_ID_CHAR}+)$")
#: An id in a JSON body or a query: 1-256 characters, no control characters.
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
PRINCIPAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_ENCODINGS = 100
#: Templates per bulk enrolment request and probes per batch identify: what fits the default
#: 8 MiB body at worst (a 128-d encoding written out in full is about 3.3 kB of JSON).
MAX_BULK = 1000
MAX_BATCH_PROBES = 256

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
ModelId = Annotated[str, Field(min_length=1, max_length=128, pattern=MODEL_PATTERN,
                               description="Encoder model id (default dlib-resnet-v1).")]
#: Largest magnitude of an encoding value over HTTP. Encoders produce values near 0 (dlib: within
#: about +-0.5; unnormalised 512-d embeddings: a few units); the bound keeps every distance finite.
Value = Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Encoding = Annotated[
    list[Value],
    Field(min_length=MIN_DIMENSION, max_length=MAX_DIMENSION,
          description="One face encoding: finite numbers within +-1000 (128 of them for "
                      "dlib-resnet-v1)."),
]
Threshold = Annotated[float, Field(gt=0, le=1e6, description="A stricter threshold than the "
                                   "tenant's configured one (a looser one is refused with 422); "
                                   "a match is distance <= threshold.")]



def _integral(value: object) -> object:
    """JSON Schema counts 5.0 as an integer: accept it as 5 (and nothing else that is not an
    int: strings and booleans stay refused)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ------------------------------------------------------------------------------------


class EnrollEncodingsRequest(_Request):
    encodings: list[Encoding] = Field(min_length=1, max_length=MAX_ENCODINGS,
                                      description="Encodings to seal as templates of the subject.")
    model: ModelId | None = None


class VerifyEncodingRequest(_Request):
    encoding: Encoding
    threshold: Threshold | None = None
    model: ModelId | None = None


class IdentifyEncodingRequest(_Request):
    encoding: Encoding
    top_k: Integer = Field(default=5, ge=1, le=MAX_TOP_K)
    threshold: Threshold | None = None
    model: ModelId | None = None



class BulkTemplate(_Request):
    subject_id: Id
    encoding: Encoding


class BulkEnrollRequest(_Request):
    templates: list[BulkTemplate] = Field(
        min_length=1, max_length=MAX_BULK,
        description="One template per item; a subject may appear several times. All or "
                    "nothing.")
    model: ModelId | None = None


class IdentifyBatchRequest(_Request):
    encodings: list[Encoding] = Field(min_length=1, max_length=MAX_BATCH_PROBES,
                                      description="Probes, answered in this order.")
    top_k: Integer = Field(default=5, ge=1, le=MAX_TOP_K)
    threshold: Threshold | None = None
    model: ModelId | None = None


class AddPrincipalRequest(_Request):
    name: str = Field(pattern=PRINCIPAL_NAME_PATTERN, description="Unique for the life of the "
                      "vault: a revoked principal's name is never reused.")
    roles: list[RoleName] = Field(min_length=1, max_length=5)
    tenant: Id | None = Field(default=None, description="Scope the principal to this tenant.")
    all_tenants: bool = Field(default=False, description="Scope it to every tenant (not with "
                              "tenant).")

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={
        "not": {"required": ["tenant", "all_tenants"],
                "properties": {"tenant": {"type": "string"}, "all_tenants": {"const": True}}},
    })


# --- responses -----------------------------------------------------------------------------------
# The vault's result types are the response models (one definition each: faceseal.vault.results
# and friends, read by pydantic as dataclasses). The names below are the ones the routes and
# other code used before; they are the same classes. Only shapes that are the service's own
# (envelopes, principals, audit events, health) are defined here.

EnrollResponse = EnrollResult
VerifyResponse = VerifyResult
CandidateModel = Candidate
IdentifyResponse = IdentifyResult
TenantPolicyResponse = TenantPolicy
BulkEnrollResponse = BulkEnrollResult
SubjectModel = SubjectInfo
EraseResponse = EraseResult
DataKeyModel = DataKeyState
KeyStatusResponse = KeyStatus
KekRotationResponse = KekRotation
DataRotationResponse = DataRotation
RetirementResponse = Retirement


class IdentifyBatchResponse(_Response):
    results: list[IdentifyResult]


class SubjectsResponse(_Response):
    tenant: str
    subjects: list[SubjectInfo]



class TenantPolicyRequest(_Request):
    disclosure: Literal["band", "decision"] | None = Field(
        default=None, description="What answers reveal to principals without the calibrator "
                                  "role.")
    thresholds: dict[Annotated[str, Field(max_length=128, pattern=MODEL_PATTERN)],
                     Annotated[float, Field(gt=0, le=1e6)]] = Field(
        default_factory=dict, max_length=64,
        # Keys outside the pattern are refused, so the document says so too.
        json_schema_extra={"additionalProperties": False},
        description="The tenant's threshold per model id, within each model's bounds; models "
                    "left out keep their value.")


PrincipalModel = PrincipalInfo
NewPrincipalResponse = NewPrincipalInfo


class PrincipalsResponse(_Response):
    principals: list[PrincipalInfo]


AuditEventModel = AuditEventInfo


class AuditEventsResponse(_Response):
    events: list[AuditEventInfo]


ChainBreakModel = Break
ChainReportModel = ChainReport


class RetireRequest(_Request):
    below: Integer = Field(ge=1, le=2**31 - 1, description="Refuse data-key versions below this "
                           "one from now on (once no record needs them).")


class HealthResponse(_Response):
    status: str = Field(description='"ok" while the process serves requests.')


class ReadinessResponse(_Response):
    ready: bool
    checks: dict[str, str] = Field(description='"store", "key_provider", "audit", "changes": '
                                   '"ok" or "unavailable".')
    caught_up: bool = Field(description="Whether this replica's loaded galleries hold every "
                            "committed change (answers are always fresh: a replica applies "
                            "pending changes before it answers).")
    changes_behind: int = Field(description="Changes committed to the store (by any process) "
                                "that this replica has not applied yet, over all loaded "
                                "tenants.")
    shards: dict[str, str] | None = Field(default=None, description='Sharded galleries only '
                                          '(serve --shards; absent otherwise): per shard '
                                          'number, "ok", "behind" or "down".')


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable machine-readable error code.")
    request_id: str

