"""Sealing encodings into stored rows and opening rows back, in batches.

This is where the three key sources meet: the data key (counted, from the DEK manager), the
subject secret (from the subject key store) and the record's place (its associated data).
Derived record keys are cached per (data-key version, tenant, subject) for the length of one batch
only, so a batch of one subject's templates derives its key once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.crypto.aead import AeadKey
from faceseal.crypto.derive import record_key
from faceseal.crypto.record import RecordContext, open_record, parse_header, seal_record
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError
from faceseal.keys.datakeys import DataKeyManager
from faceseal.keys.subject_keys import SubjectKeyStore, SubjectRef
from faceseal.storage.base import TemplateRow

log = logging.getLogger(__name__)

Encoding = npt.NDArray[np.floating]


@dataclass(frozen=True)
class NewTemplate:
    """An encoding about to be sealed, and where it goes."""

    tenant: str
    subject_id: str
    model_id: str
    encoding: Encoding

    def __repr__(self) -> str:
        return (
            f"NewTemplate(tenant={self.tenant!r}, subject_id={self.subject_id!r}, "
            f"model_id={self.model_id!r}, encoding=<{self.encoding.dtype} x{self.encoding.size}>)"
        )


@dataclass(frozen=True)
class OpenedTemplate:
    """A stored row and its decrypted encoding."""

    row: TemplateRow
    encoding: Encoding

    def __repr__(self) -> str:
        return f"OpenedTemplate(template_id={self.row.template_id!r}, encoding=<redacted>)"


#: "Not derived yet" in a record-key cache (None there means: the subject's secret is gone).
_UNSET: Any = object()


def new_template_id() -> str:
    """128 random bits, hex: unguessable, and known before sealing so it can be bound in."""
    return os.urandom(16).hex()


class RecordSealer:
    """Seals and opens template records for one vault."""

    def __init__(
        self, keyset_id: bytes, data_keys: DataKeyManager, subject_keys: SubjectKeyStore
    ) -> None:
        self._keyset_id = keyset_id
        self._data_keys = data_keys
        self._subject_keys = subject_keys

    def context(self, row: TemplateRow) -> RecordContext:
        return RecordContext(self._keyset_id, row.tenant, row.subject_id, row.template_id,
                             row.model_id)

    def seal(self, items: Sequence[NewTemplate]) -> list[TemplateRow]:
        """Seal encodings into rows ready to store (subject secrets are created as needed)."""
        if not items:
            return []
        # Data keys first: an unreachable provider fails here, before any subject secret is
        # written (a reservation that is then not used only wastes counts, never reuses them).
        reservations = self._data_keys.reserve(len(items))
        secrets = self._subject_keys.get_or_create_many((i.tenant, i.subject_id) for i in items)
        keys: dict[tuple[int, str, str], AeadKey] = {}
        rows: list[TemplateRow] = []
        now = time.time()
        pending = iter(items)
        for reservation in reservations:
            for _ in range(reservation.count):
                item = next(pending)
                cache_key = (reservation.version, item.tenant, item.subject_id)
                key = keys.get(cache_key)
                if key is None:
                    key = record_key(reservation.key, item.tenant, item.subject_id,
                                     secrets[(item.tenant, item.subject_id)])
                    keys[cache_key] = key
                template_id = new_template_id()
                context = RecordContext(self._keyset_id, item.tenant, item.subject_id,
                                        template_id, item.model_id)
                rows.append(TemplateRow(
                    template_id=template_id,
                    tenant=item.tenant,
                    subject_id=item.subject_id,
                    model_id=item.model_id,
                    dimension=int(item.encoding.shape[0]),
                    dtype=item.encoding.dtype.name,
                    key_version=reservation.version,
                    record=seal_record(key, reservation.version, item.encoding, context),
                    created_at=now,
                ))
        log.debug("sealed %d records", len(rows))
        return rows

    def open(
        self,
        rows: Iterable[TemplateRow],
        secrets: dict[SubjectRef, SecretBytes] | None = None,
        keys: dict[tuple[int, str, str], AeadKey | None] | None = None,
    ) -> tuple[list[OpenedTemplate], list[TemplateRow]]:
        """Open rows; returns (opened, damaged). Only decryption failures count as damage:
        an unreachable key provider or store raises instead, so an outage never looks like
        tampering. ``keys``: a record-key cache the caller keeps across calls (a whole-tenant
        load passes one, so each subject's key is derived once however its records are paged);
        the caller clears it when done."""
        rows = list(rows)
        if secrets is None:
            secrets = self._subject_keys.get_many((r.tenant, r.subject_id) for r in rows)
        if keys is None:
            keys = {}
        opened: list[OpenedTemplate] = []
        damaged: list[TemplateRow] = []
        for row in rows:
            try:
                header = parse_header(row.record)
                cache_key = (header.key_version, row.tenant, row.subject_id)
                key = keys.get(cache_key, _UNSET)
                if key is _UNSET:
                    key = keys[cache_key] = self._key_for(header.key_version, row, secrets)
                if key is None:
                    raise DecryptionError()
                opened.append(OpenedTemplate(row, open_record(key, row.record, self.context(row),
                                                              header=header)))
            except DecryptionError:
                damaged.append(row)
        if damaged:
            log.warning("%d record(s) failed to open", len(damaged))
        return opened, damaged

    def _key_for(
        self, version: int, row: TemplateRow, secrets: dict[SubjectRef, SecretBytes]
    ) -> AeadKey | None:
        secret = secrets.get((row.tenant, row.subject_id))
        if secret is None:
            return None  # the subject's secret was destroyed: crypto-shredded
        return record_key(self._data_keys.key(version), row.tenant, row.subject_id, secret)

    def reseal(self, opened: Sequence[OpenedTemplate]) -> list[TemplateRow]:
        """Seal already-stored templates again under the active data key (re-encryption).

        Template ids, tenants, subjects, models and creation times stay; only the key version
        (in the header, hence in the associated data) and the ciphertext change. Encryptions are
        counted before use, like any sealing."""
        if not opened:
            return []
        reservations = self._data_keys.reserve(len(opened))
        secrets = self._subject_keys.get_many((o.row.tenant, o.row.subject_id) for o in opened)
        keys: dict[tuple[int, str, str], AeadKey] = {}
        rows: list[TemplateRow] = []
        pending = iter(opened)
        for reservation in reservations:
            for _ in range(reservation.count):
                item = next(pending)
                row = item.row
                secret = secrets.get((row.tenant, row.subject_id))
                if secret is None:
                    continue  # erased meanwhile: nothing to re-encrypt
                cache_key = (reservation.version, row.tenant, row.subject_id)
                key = keys.get(cache_key)
                if key is None:
                    key = keys[cache_key] = record_key(reservation.key, row.tenant,
                                                       row.subject_id, secret)
                rows.append(TemplateRow(
                    template_id=row.template_id, tenant=row.tenant, subject_id=row.subject_id,
                    model_id=row.model_id, dimension=row.dimension, dtype=row.dtype,
                    key_version=reservation.version,
                    record=seal_record(key, reservation.version, item.encoding,
                                       self.context(row)),
                    created_at=row.created_at,
                ))
        return rows
