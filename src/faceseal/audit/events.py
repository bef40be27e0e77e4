"""Audit events: what the facade records, and how an event becomes a stored, chained record.

An event names who (principal and the role that was used), what (action, tenant, subject, template
ids), how it ended (outcome), when, and under which request. It never carries an encoding, a key or
an API key: the ``detail`` mapping accepts only short scalars and lists of identifiers, so an
array of floats cannot slip in by accident.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faceseal.errors import InvalidInput
from faceseal.storage.base import AuditRecord

#: The operation was carried out.
OUTCOME_OK = "ok"
#: The principal is known but its roles or tenant do not allow the operation.
OUTCOME_DENIED = "denied"
#: No credential, or an unknown, revoked or malformed one.
OUTCOME_UNAUTHENTICATED = "unauthenticated"
#: The operation was allowed but failed (bad input, not found, an outage); ``detail.error``
#: says how.
OUTCOME_FAILED = "failed"
OUTCOMES = frozenset({OUTCOME_OK, OUTCOME_DENIED, OUTCOME_UNAUTHENTICATED, OUTCOME_FAILED})

#: The principal field of events with no authenticated principal.
ANONYMOUS = "-"
#: The principal field of events the vault writes on its own behalf (creation, bootstrap).
SYSTEM = "@system"

#: Room for identify's 100 returned subject ids of up to 256 characters each, JSON-escaped.
MAX_DETAIL_CHARS = 262_144
MAX_DETAIL_STRING = 2048
MAX_DETAIL_LIST = 1000
MAX_REQUEST_ID = 128
#: The one rule for request ids, whoever supplies them (the Python API, the X-Request-ID header,
#: the OpenAPI schema): 1-128 printable ASCII characters without spaces, so that an id goes into
#: a header, a log line and an audit event unchanged.
REQUEST_ID_CHAR = "[!-~]"
REQUEST_ID_PATTERN = rf"^{REQUEST_ID_CHAR}+$"  # the schema form; its length is bounded apart
REQUEST_ID_RULE = f"1-{MAX_REQUEST_ID} printable ASCII characters without spaces"
_REQUEST_ID = re.compile(rf"\A{REQUEST_ID_CHAR}{{1,{MAX_REQUEST_ID}}}\Z")

DetailValue = str | int | float | bool | None | list[str]


@dataclass(frozen=True)
class AuditEvent:
    """One event before it is chained (the store assigns ``seq``, the log computes the MAC)."""

    principal: str
    role: str
    action: str
    outcome: str
    tenant: str | None = None
    subject_id: str | None = None
    template_ids: tuple[str, ...] = ()
    request_id: str = ""
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown audit outcome {self.outcome!r}")
        if not self.action:
            raise ValueError("an audit event needs an action")

    def to_record(
        self, seq: int, prev_mac: bytes, mac_of: Any, *, occurred_at: float | None = None,
    ) -> AuditRecord:
        """The stored form of this event at ``seq``, chained to ``prev_mac``.

        ``mac_of(record_without_mac) -> bytes`` computes the MAC (see :mod:`faceseal.audit.chain`).
        """
        record = AuditRecord(
            seq=seq,
            event_id=uuid.uuid4().hex,
            occurred_at=time.time() if occurred_at is None else occurred_at,
            principal=self.principal,
            role=self.role,
            action=self.action,
            tenant=self.tenant,
            subject_id=self.subject_id,
            template_ids=tuple(self.template_ids),
            outcome=self.outcome,
            request_id=self.request_id or new_request_id(),
            detail=encode_detail(self.detail),
            prev_mac=prev_mac,
            mac=b"",
        )
        return _with_mac(record, mac_of(record))


def _with_mac(record: AuditRecord, mac: bytes) -> AuditRecord:
    return AuditRecord(
        record.seq, record.event_id, record.occurred_at, record.principal, record.role,
        record.action, record.tenant, record.subject_id, record.template_ids, record.outcome,
        record.request_id, record.detail, record.prev_mac, mac,
    )


def new_request_id() -> str:
    """A fresh random request id (128 bits, hex)."""
    return os.urandom(16).hex()


def is_request_id(value: object) -> bool:
    """Whether ``value`` follows :data:`REQUEST_ID_RULE`."""
    return isinstance(value, str) and _REQUEST_ID.match(value) is not None


def check_request_id(request_id: str | None) -> str | None:
    """A caller-supplied request id (see :data:`REQUEST_ID_RULE`), or None."""
    if request_id is None:
        return None
    if not is_request_id(request_id):
        raise InvalidInput(f"a request id is {REQUEST_ID_RULE}")
    return request_id


def encode_detail(detail: Mapping[str, DetailValue]) -> str:
    """Canonical JSON of ``detail`` (sorted keys, no spaces), after checking what it holds.

    Only short strings, integers, finite floats, booleans, None and lists of strings are accepted:
    lists of numbers (an encoding), bytes (a key) and nested objects are refused.
    """
    clean: dict[str, DetailValue] = {}
    for key, value in detail.items():
        if not isinstance(key, str) or not key:
            raise ValueError("audit detail keys must be non-empty strings")
        clean[key] = _check_detail_value(key, value)
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_DETAIL_CHARS:
        raise ValueError("audit detail is too long")
    return text


def _check_detail_value(key: str, value: object) -> DetailValue:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit detail {key!r} must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_DETAIL_STRING:
            raise ValueError(f"audit detail {key!r} is too long")
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items = list(value)
        if len(items) > MAX_DETAIL_LIST or not all(isinstance(i, str) for i in items):
            raise ValueError(f"audit detail {key!r} may only be a short list of strings")
        return [str(i) for i in items]
    raise ValueError(f"audit detail {key!r} has a type that may not be audited")


def decode_detail(text: str) -> dict[str, Any]:
    """The ``detail`` mapping of a stored record (an empty one if it is not a JSON object)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
