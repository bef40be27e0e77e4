"""Authenticated inventories: each subject's set of template ids, signed by the vault.

The AEAD binds a record to its tenant, subject and template id, so a row moved to another
subject or forged does not open. It cannot say that a row is *missing*: a template (or every
template but one) deleted straight from the store would otherwise go unnoticed, and so would a
genuine row copied back after an erase. Each subject row therefore carries an inventory::

    0x01 | key version (4) | count (8) | digest (32) | MAC (36)

``digest`` is the XOR over the subject's template ids of ``PRF(K_rows, tenant, subject, id)``
(an XOR-MAC: incremental, so enrolling one more template costs one PRF, not a rescan), ``count``
how many there are, and ``MAC`` a row MAC (:mod:`faceseal.audit.integrity`) over tenant, subject,
version, count and digest. The keys come from the audit key, which the store never holds.

Inventories are written in the same store transaction as the templates they describe. ``check``
recomputes every subject's from its rows and reports each that differs (and each subject key with
no rows: a subject deleted behind the vault's back, or an erase that stopped half-way); ``verify``
refuses a subject whose rows do not match.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from faceseal.audit.integrity import RowAuthenticator
from faceseal.crypto.encoding import length_prefixed
from faceseal.storage.base import TemplateRow, TemplateStore

_FORMAT = 1
_ITEM = b"inventory-item"
_DOMAIN = b"inventory"
_HEAD = struct.Struct(">BIQ")
DIGEST_BYTES = 32


@dataclass(frozen=True)
class Tally:
    """What a subject's rows add up to: how many, and their keyed digest (for one key
    version)."""

    count: int
    digest: bytes


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(DIGEST_BYTES, "big")


class InventorySigner:
    """Computes, signs and checks subject inventories."""

    def __init__(self, auth: RowAuthenticator) -> None:
        self._auth = auth

    def _item(self, version: int, tenant: str, subject_id: str, template_id: str) -> bytes:
        value = self._auth.prf(version, _ITEM, length_prefixed(tenant.encode())
                               + length_prefixed(subject_id.encode())
                               + length_prefixed(template_id.encode()))
        return value if value is not None else bytes(DIGEST_BYTES)

    def tally(self, tenant: str, subject_id: str, template_ids: Iterable[str],
              version: int | None = None) -> Tally:
        version = self._auth.version if version is None else version
        ids = list(template_ids)
        # As _item per id, with the shared part of every PRF input built once and the XOR
        # taken over integers (a bulk enrolment tallies every template it adds).
        items = self._auth.prfs(version, _ITEM, length_prefixed(tenant.encode())
                                + length_prefixed(subject_id.encode()),
                                [length_prefixed(t.encode()) for t in ids])
        if items is None:  # no such key version: every item is zero, as _item makes it
            return Tally(len(ids), bytes(DIGEST_BYTES))
        folded = 0
        for item in items:
            folded ^= int.from_bytes(item, "big")
        return Tally(len(ids), folded.to_bytes(DIGEST_BYTES, "big"))

    def add_one(self, tally: Tally | None, tenant: str, subject_id: str,
                template_id: str) -> Tally:
        """``tally`` (under the signing key version) with one more template: a scan keeps one
        small tally per subject instead of every id."""
        base = tally or Tally(0, bytes(DIGEST_BYTES))
        item = self._item(self._auth.version, tenant, subject_id, template_id)
        return Tally(base.count + 1, _xor(base.digest, item))

    def vouches_for(self, tenant: str, subject_id: str, blob: bytes, tally: Tally) -> bool:
        """Whether the stored inventory verifies and equals ``tally`` (made with
        :meth:`add_one`)."""
        opened = self.open(tenant, subject_id, blob)
        return opened is not None and opened == (self._auth.version, tally)

    def _content(self, tenant: str, subject_id: str, version: int, tally: Tally) -> bytes:
        return (length_prefixed(tenant.encode()) + length_prefixed(subject_id.encode())
                + _HEAD.pack(_FORMAT, version, tally.count) + tally.digest)

    def seal(self, tenant: str, subject_id: str, tally: Tally,
             version: int | None = None) -> bytes:
        version = self._auth.version if version is None else version
        head = _HEAD.pack(_FORMAT, version, tally.count) + tally.digest
        return head + self._auth.sign(_DOMAIN, self._content(tenant, subject_id, version, tally))

    def open(self, tenant: str, subject_id: str, blob: bytes) -> tuple[int, Tally] | None:
        """The key version and tally a stored inventory vouches for; None if it does not
        verify (or is missing)."""
        if len(blob) < _HEAD.size + DIGEST_BYTES:
            return None
        fmt, version, count = _HEAD.unpack_from(blob)
        digest = blob[_HEAD.size:_HEAD.size + DIGEST_BYTES]
        mac = blob[_HEAD.size + DIGEST_BYTES:]
        tally = Tally(count, digest)
        if fmt != _FORMAT or not self._auth.verifies(
                _DOMAIN, self._content(tenant, subject_id, version, tally), mac):
            return None
        return version, tally

    def matches(self, tenant: str, subject_id: str, blob: bytes,
                template_ids: Iterable[str]) -> bool:
        opened = self.open(tenant, subject_id, blob)
        if opened is None:
            return False
        version, tally = opened
        return self.tally(tenant, subject_id, template_ids, version) == tally

    def extend(self, tenant: str, subject_id: str, blob: bytes | None,
               template_ids: Sequence[str]) -> bytes:
        """The inventory after adding ``template_ids`` to the one ``blob`` vouches for (a new
        subject when ``blob`` is None or empty). An inventory that does not verify is not
        extended: the result then vouches only for the new ids, and the damage stays visible."""
        opened = self.open(tenant, subject_id, blob) if blob else None
        version, base = opened if opened is not None else (self._auth.version,
                                                            Tally(0, bytes(DIGEST_BYTES)))
        added = self.tally(tenant, subject_id, template_ids, version)
        return self.seal(tenant, subject_id,
                         Tally(base.count + added.count, _xor(base.digest, added.digest)),
                         version)

    def record_additions(self, store: TemplateStore, rows: Sequence[TemplateRow]) -> None:
        """Extend the inventories of the subjects ``rows`` add templates to (call inside the
        transaction that stores the rows, after they are stored)."""
        by_tenant: dict[str, dict[str, list[str]]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant, {}).setdefault(row.subject_id, []).append(
                row.template_id)
        for tenant, subjects in by_tenant.items():
            self.record(store, tenant, subjects)

    def record(self, store: TemplateStore, tenant: str, added: dict[str, list[str]]) -> None:
        current = store.inventories(tenant, list(added))
        store.set_inventories(tenant, {
            subject: self.extend(tenant, subject, current.get(subject), ids)
            for subject, ids in added.items()})

    def __repr__(self) -> str:
        return "InventorySigner(<redacted>)"
