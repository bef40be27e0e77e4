"""The audit trail: every access recorded in an append-only, keyed, hash-chained log.

* :mod:`faceseal.audit.events` -- what an event holds (never an encoding, key or API key);
* :mod:`faceseal.audit.chain` -- the MAC chain, checkpoints and verification;
* :mod:`faceseal.audit.state` -- the audit key and checkpoints, kept in the key directory;
* :mod:`faceseal.audit.log` -- appending (inside the operation's transaction), checkpointing,
  reading and exporting.
"""

from faceseal.audit.chain import AuditKey, ChainReport, Checkpoint, verify_chain
from faceseal.audit.events import (
    ANONYMOUS,
    OUTCOME_DENIED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_UNAUTHENTICATED,
    SYSTEM,
    AuditEvent,
    new_request_id,
)
from faceseal.audit.log import AuditLog, record_to_json
from faceseal.audit.state import AUDIT_STATE_FILE, AuditState

__all__ = [
    "ANONYMOUS",
    "AUDIT_STATE_FILE",
    "OUTCOME_DENIED",
    "OUTCOME_FAILED",
    "OUTCOME_OK",
    "OUTCOME_UNAUTHENTICATED",
    "SYSTEM",
    "AuditEvent",
    "AuditKey",
    "AuditLog",
    "AuditState",
    "ChainReport",
    "Checkpoint",
    "new_request_id",
    "record_to_json",
    "verify_chain",
]
