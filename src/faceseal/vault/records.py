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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.crypto.aead import AeadKey
from faceseal.crypto.derive import record_key
from faceseal.crypto.record import (
    RecordContext,
    open_record,
    open_tenant_records,
    parse_header,
    plaintexts_to_matrix,
    seal_record,
)
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


@dataclass(frozen=True)
class BulkOpened:
    """What :meth:`RecordSealer.open_bulk` opened: per model, its rows and their encodings as
    one matrix; and the rows that did not open. Callers overwrite the matrices that are
    writeable once used (the others are views of plaintext bytes, which cannot be)."""

    #: (model id, subject ids, template ids, encodings: row i belongs to the i-th ids)
    opened: list[tuple[str, list[str], list[str], Encoding]]
    damaged: list[TemplateRow]

    def __repr__(self) -> str:
        return f"BulkOpened(<{sum(len(t) for _, _, t, _ in self.opened)} opened, redacted>, " \
               f"damaged={len(self.damaged)})"


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

    @property
    def keyset_id(self) -> bytes:
        return self._keyset_id

    def usable_data_keys(self) -> dict[int, SecretBytes]:
        """Every data key this vault may still open records with, by version."""
        usable: dict[int, SecretBytes] = {}
        for info in self._data_keys.live_keys():
            try:
                usable[info.version] = self._data_keys.key(info.version)
            except DecryptionError:  # retired, or a row the key side does not know
                continue
        return usable

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

    def open_bulk(
        self,
        tenant: str,
        rows: Sequence[tuple[Any, ...]],
        secrets: dict[SubjectRef, SecretBytes] | None = None,
        keys: dict[tuple[int, str], AeadKey | None] | None = None,
    ) -> BulkOpened:
        """:meth:`open` for many rows of one tenant, given as tuples in :class:`TemplateRow`
        field order, opened as one matrix per model: the gallery-loading path. Same checks,
        same damage rule; ``keys``: a record-key cache for this tenant the caller may keep
        across calls (and clears when done)."""
        if not rows:
            return BulkOpened([], [])
        if secrets is None:
            secrets = self._subject_keys.get_many((tenant, r[2]) for r in rows)
        columns = list(zip(*rows, strict=True))
        batch = open_tenant_records(columns[2], columns[0], columns[3], columns[7],
                                    keyset_id=self._keyset_id, tenant=tenant,
                                    key_for=self.key_source(tenant, secrets), keys=keys)
        opened = [(model_id, [columns[2][i] for i in positions],
                   [columns[0][i] for i in positions],
                   plaintexts_to_matrix(dtype, dimension, plaintexts))
                  for (model_id, dtype, dimension), (positions, plaintexts)
                  in batch.opened.items()]
        damaged = [TemplateRow(*rows[i]) for i in batch.failed]
        if damaged:
            log.warning("%d record(s) failed to open", len(damaged))
        return BulkOpened(opened, damaged)

    def key_source(self, tenant: str, secrets: dict[SubjectRef, SecretBytes]
                   ) -> Callable[[int, str], AeadKey | None]:
        """``(version, subject) -> record key``, or None where no key exists (the subject's
        secret is gone, the data-key version unknown or retired): such records are damaged,
        not an outage. An unreachable key provider still raises."""
        data_keys = self._data_keys

        def key_for(version: int, subject_id: str) -> AeadKey | None:
            secret = secrets.get((tenant, subject_id))
            if secret is None:
                return None
            try:
                dek = data_keys.key(version)
            except DecryptionError:
                return None
            return record_key(dek, tenant, subject_id, secret)

        return key_for

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
