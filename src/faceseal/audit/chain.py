"""The keyed MAC chain over audit events, checkpoints of its head, and verification.

Each stored event carries ``mac = version || HMAC-SHA256(K_event, content)`` where ``content`` is
an unambiguous (length-prefixed) encoding of the vault's keyset id, the previous event's MAC and
every field of the event including its sequence number. An edit changes the content, a deletion
leaves a gap in ``seq`` and breaks the next ``prev_mac``, a swap or reordering moves content away
from the ``seq`` it was MACed with, and an inserted event cannot carry a valid MAC without the key.

Cutting off the newest events leaves a shorter chain that is still valid. Checkpoints catch that:
``(seq, mac)`` of the head, MACed with a separate subkey and kept in the key directory, apart from
the log. A log whose last event is older than a checkpoint, or whose event at a checkpoint's
``seq`` has another MAC, was cut.

The audit key is 32 random bytes, stored only wrapped by the key provider; the two subkeys are
derived from it with HMAC-SHA256 under distinct labels.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from faceseal.crypto.encoding import length_prefixed
from faceseal.crypto.secret import SecretBytes
from faceseal.schema import Result
from faceseal.storage.base import AuditRecord

_EVENT_LABEL = b"faceseal-audit-event-v1\x00"
_CHECKPOINT_LABEL = b"faceseal-audit-checkpoint-v1\x00"
_ROW_LABEL = b"faceseal-row-v1\x00"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
MAC_VERSION_BYTES = _U32.size
MAC_BYTES = MAC_VERSION_BYTES + 32


def _optional(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + length_prefixed(value.encode())


def event_content(keyset_id: bytes, record: AuditRecord) -> bytes:
    """The bytes an event's MAC covers (everything but the MAC itself)."""
    detail = record.detail.encode()
    parts = [
        _EVENT_LABEL,
        length_prefixed(keyset_id),
        length_prefixed(record.prev_mac),
        _U64.pack(record.seq),
        length_prefixed(record.event_id.encode()),
        _F64.pack(record.occurred_at),
        length_prefixed(record.principal.encode()),
        length_prefixed(record.role.encode()),
        length_prefixed(record.action.encode()),
        _optional(record.tenant),
        _optional(record.subject_id),
        _U32.pack(len(record.template_ids)),
        *(length_prefixed(t.encode()) for t in record.template_ids),
        length_prefixed(record.outcome.encode()),
        length_prefixed(record.request_id.encode()),
        _U32.pack(len(detail)) + detail,
    ]
    return b"".join(parts)


class AuditKey:
    """The audit MAC key of one vault (one version). Never printed, pickled or copied."""

    __slots__ = ("__checkpoint_key", "__event_key", "__row_key", "_keyset_id", "version")

    def __init__(self, key: SecretBytes, version: int, keyset_id: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the audit key must be 32 bytes")
        raw = key.reveal()
        self.__event_key = hmac.digest(raw, b"faceseal-audit-subkey/event", "sha256")
        self.__checkpoint_key = hmac.digest(raw, b"faceseal-audit-subkey/checkpoint", "sha256")
        # A third subkey authenticates rows the vault must be able to trust in a store it does
        # not trust (principals, see faceseal.audit.integrity); distinct label, distinct key.
        self.__row_key = hmac.digest(raw, b"faceseal-audit-subkey/rows", "sha256")
        self.version = version
        self._keyset_id = keyset_id

    def event_mac(self, record: AuditRecord) -> bytes:
        tag = hmac.digest(self.__event_key, event_content(self._keyset_id, record), "sha256")
        return _U32.pack(self.version) + tag

    def checkpoint_tag(self, seq: int, mac: bytes, written_at: float) -> bytes:
        message = (_CHECKPOINT_LABEL + length_prefixed(self._keyset_id) + _U64.pack(seq)
                   + length_prefixed(mac) + _F64.pack(written_at))
        return _U32.pack(self.version) + hmac.digest(self.__checkpoint_key, message, "sha256")

    def row_mac(self, domain: bytes, content: bytes) -> bytes:
        """``version || HMAC(K_rows, label || keyset || domain || content)``."""
        message = (_ROW_LABEL + length_prefixed(self._keyset_id) + length_prefixed(domain)
                   + content)
        return _U32.pack(self.version) + hmac.digest(self.__row_key, message, "sha256")

    def row_prfs(self, domain: bytes, prefix: bytes, suffixes: Iterable[bytes]) -> list[bytes]:
        """``row_mac(domain, prefix + suffix)[4:]`` for each suffix: the HMACs alone, with the
        shared part of the message built once (an inventory tally makes one per template)."""
        head = _ROW_LABEL + length_prefixed(self._keyset_id) + length_prefixed(domain) + prefix
        key = self.__row_key
        digest = hmac.digest
        return [digest(key, head + suffix, "sha256") for suffix in suffixes]

    def __repr__(self) -> str:
        return f"AuditKey(version={self.version}, <redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("AuditKey cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("AuditKey cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("AuditKey cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("AuditKey cannot be copied")


def mac_version(mac: bytes) -> int | None:
    """The audit-key version a MAC names (None if it is too short to name one)."""
    if len(mac) < MAC_VERSION_BYTES:
        return None
    return int(_U32.unpack_from(mac)[0])


@dataclass(frozen=True)
class Checkpoint:
    """The head of the log at some moment: its ``seq`` and ``mac``, MACed with ``tag``."""

    seq: int
    mac: bytes
    written_at: float
    tag: bytes


@dataclass(frozen=True)
class Break(Result):
    """One place where the log is broken: the event (None for a gap) and what is wrong."""

    seq: int
    event_id: str | None
    problem: str


#: At most this many breaks are listed (all are counted): a wholesale rewrite stays readable.
MAX_LISTED_BREAKS = 1000


@dataclass(frozen=True)
class ChainReport(Result):
    """The outcome of verifying the audit chain (no event content, only positions).

    Every event is checked on its own (its MAC) and against its predecessor (its link), and
    the walk goes on past a break: ``breaks`` lists each one, ``first_broken_*`` and
    ``problem`` name the first. ``verified_events`` counts the events whose own MAC holds."""

    ok: bool
    events: int
    head_seq: int
    checkpoint_seq: int
    first_broken_seq: int | None = None
    first_broken_event_id: str | None = None
    problem: str | None = None
    checkpoints_checked: int = 0
    notes: list[str] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    """Every break found (up to 1000), in log order; the walk goes on past each one."""
    break_count: int = 0
    verified_events: int = 0
    """Events whose own MAC holds."""


def event_verifies(record: AuditRecord, keys: dict[int, AuditKey]) -> bool:
    """Whether one event's own MAC holds (whatever the events around it say)."""
    version = mac_version(record.mac)
    key = keys.get(version) if version is not None else None
    return key is not None and hmac.compare_digest(record.mac, key.event_mac(record))


class _Walk:
    """The state of one pass over the log: where it should be, and what it found."""

    def __init__(self, keys: dict[int, AuditKey], checkpoints: dict[int, bytes]) -> None:
        self.keys, self.checkpoints = keys, checkpoints
        self.expected, self.prev_mac, self.count, self.verified = 1, b"", 0, 0
        self.breaks: list[Break] = []
        self.total = 0

    def broken(self, seq: int, event_id: str | None, problem: str) -> None:
        self.total += 1
        if len(self.breaks) < MAX_LISTED_BREAKS:
            self.breaks.append(Break(seq, event_id, problem))

    def check(self, record: AuditRecord) -> None:
        expected, gap = self.expected, False
        if record.seq > expected:
            missing = (f"event {expected} is missing" if record.seq == expected + 1 else
                       f"events {expected}..{record.seq - 1} are missing")
            self.broken(expected, None, f"{missing}: the log jumps from event {expected - 1} "
                        f"to event {record.seq} ({record.event_id}); events were deleted")
            gap = True  # the link of the next event is the same break, not another
        elif record.seq < expected:
            self.broken(record.seq, record.event_id, f"event {record.seq} ({record.event_id}) "
                        f"is out of order after event {expected - 1}")
        if not gap and not hmac.compare_digest(record.prev_mac, self.prev_mac):
            self.broken(record.seq, record.event_id,
                        f"event {record.seq} ({record.event_id}) does not chain to event "
                        f"{record.seq - 1}: events were deleted, inserted or reordered")
        if event_verifies(record, self.keys):
            self.verified += 1
        else:
            self.broken(record.seq, record.event_id, f"event {record.seq} ({record.event_id}) "
                        "fails its MAC: it was edited, forged or moved")
        want = self.checkpoints.get(record.seq)
        if want is not None and not hmac.compare_digest(want, record.mac):
            self.broken(record.seq, record.event_id,
                        f"event {record.seq} ({record.event_id}) differs from the checkpoint "
                        "taken at that position: the log was cut and rewritten")
        self.prev_mac = record.mac
        self.expected = max(expected, record.seq) + 1
        self.count += 1


def verify_chain(
    records: Iterable[AuditRecord],
    keys: dict[int, AuditKey],
    checkpoints: list[Checkpoint],
) -> ChainReport:
    """Walk the whole log once, checking every event's MAC and link, and report every break.

    ``keys`` maps audit-key versions to keys; ``checkpoints`` are every stored checkpoint.
    """
    valid_checkpoints: dict[int, bytes] = {}
    for cp in checkpoints:
        version = mac_version(cp.tag)
        key = keys.get(version) if version is not None else None
        if key is None or not hmac.compare_digest(cp.tag, key.checkpoint_tag(cp.seq, cp.mac,
                                                                             cp.written_at)):
            return ChainReport(False, 0, 0, cp.seq, None, None,
                               f"the checkpoint at event {cp.seq} fails its MAC: the key "
                               "directory's audit state was tampered with", break_count=1)
        valid_checkpoints[cp.seq] = cp.mac
    checkpoint_seq = max(valid_checkpoints, default=0)

    walk = _Walk(keys, valid_checkpoints)
    for record in records:
        walk.check(record)
    breaks, total_breaks, count, verified = walk.breaks, walk.total, walk.count, walk.verified
    expected = walk.expected
    head = expected - 1
    if checkpoint_seq > head:
        missing = (f"event {head + 1} is missing" if checkpoint_seq == head + 1 else
                   f"events {head + 1}..{checkpoint_seq} are missing")
        walk.broken(head + 1, None, f"{missing}: the log ends at event {head} but a checkpoint "
                    f"records event {checkpoint_seq}; the newest events were cut off")
        total_breaks = walk.total
    first = breaks[0] if breaks else None
    if first is not None:
        return ChainReport(False, count, head, checkpoint_seq, first.seq, first.event_id,
                           first.problem, len(valid_checkpoints), breaks=breaks,
                           break_count=total_breaks, verified_events=verified)
    if count and not valid_checkpoints:
        return ChainReport(False, count, head, 0, None, None,
                           "no checkpoint of the log exists in the key directory: the audit "
                           "state was removed, so cutting off events cannot be ruled out",
                           len(valid_checkpoints), break_count=1, verified_events=verified)
    notes = []
    if head > checkpoint_seq:
        notes.append(f"events {checkpoint_seq + 1}..{head} are newer than the last checkpoint")
    return ChainReport(True, count, head, checkpoint_seq, checkpoints_checked=len(
        valid_checkpoints), notes=notes, verified_events=verified)
