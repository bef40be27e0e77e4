"""Bulk enrolment: many encodings of many subjects sealed and stored in one go.

The per-record work left is one AES-GCM call and one row in an ``executemany``: subject secrets are
read or created for the whole batch at once, data-key encryptions are reserved once, record keys
are derived once per subject, nonces and template ids come from one CSPRNG call each, and every row
goes into the store in one transaction (all or nothing).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.crypto.batch import seal_batch
from faceseal.encoders.validation import check_values
from faceseal.errors import Conflict, InvalidEncoding, InvalidInput
from faceseal.keys.datakeys import DataKeyManager
from faceseal.keys.subject_keys import SubjectKeyStore
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateBatch, TemplateStore
from faceseal.vault import rotation
from faceseal.vault.ids import MAX_ID_LENGTH
from faceseal.vault.results import Result

#: Most encodings one ``enroll_many`` call takes (split bigger imports into several calls).
MAX_BATCH = 1_000_000
#: Rows sealed and inserted per step (bounds the memory held by sealed records).
STEP_ROWS = 65_536

Matrix = npt.NDArray[np.floating[Any]]
# The vault's subject id rules (faceseal.vault.ids), with a fast path for the common case.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BulkEnrollResult(Result):
    """What :meth:`~faceseal.vault.Vault.enroll_many` stored. Carries no encoding."""

    tenant: str
    model_id: str
    templates: int
    subjects: int
    template_ids: list[str] = field(repr=False)


def check_batch(
    subject_ids: Sequence[str], encodings: object, spec: ModelSpec,
    check_id: Callable[[str, str], str],
) -> tuple[list[str], Matrix]:
    """Validate a bulk enrolment before anything is written; returns (ids, native C matrix).

    The matrix is the caller's array when no conversion was needed: never wipe it without
    checking ``np.shares_memory``.
    """
    if not isinstance(encodings, np.ndarray):
        raise InvalidEncoding("encodings must be a 2-D numpy array (one encoding per row)")
    if encodings.dtype.name not in ("float32", "float64"):
        raise InvalidEncoding(f"unsupported encoding dtype {encodings.dtype.name!r}; "
                              "expected float32 or float64")
    if encodings.ndim != 2:
        raise InvalidEncoding(f"encodings must be 2-D (one per row), got {encodings.ndim} "
                              "dimension(s)")
    count, dim = encodings.shape
    if dim != spec.dimension:
        raise InvalidEncoding(f"wrong encoding dimension: expected {spec.dimension}, got {dim}")
    if count == 0:
        raise InvalidInput("nothing to enroll: no encodings were given")
    if count > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} encodings per call; split the import")
    if isinstance(subject_ids, str) or len(subject_ids) != count:
        raise InvalidInput("subject_ids must be a sequence with one subject id per encoding")
    ids = list(subject_ids)
    unique = list(dict.fromkeys(ids))
    if not all(isinstance(s, str) and 0 < len(s) <= MAX_ID_LENGTH for s in unique) or any(
            _CONTROL.search(s) for s in unique):
        for subject in unique:  # the per-id check names the rule that was broken
            check_id("subject id", subject)
    check_values(encodings)
    # Native byte order, C order: the caller's array itself when it already is (no copy of a
    # large import); the caller must not change it while enroll_many runs.
    matrix = np.ascontiguousarray(encodings, dtype=encodings.dtype.newbyteorder("="))
    return ids, matrix


def seal_and_store(
    *,
    keyset_id: bytes,
    data_keys: DataKeyManager,
    subject_keys: SubjectKeyStore,
    store: TemplateStore,
    tenant: str,
    spec: ModelSpec,
    subject_ids: list[str],
    encodings: Matrix,
) -> list[str]:
    """Seal every row and store it atomically; returns the new template ids in row order."""
    count = len(subject_ids)
    secrets = subject_keys.get_or_create_for_tenant(tenant, subject_ids)
    pool = os.urandom(16 * count).hex()
    template_ids = [pool[32 * i:32 * (i + 1)] for i in range(count)]
    reservations = data_keys.reserve(count)
    now = time.time()
    with store.transaction():
        # As rotation.store_rows: a writer that raced `keys retire` fails cleanly.
        if min(r.version for r in reservations) < rotation.min_decrypt_version(store):
            raise Conflict("a data key was retired while this operation ran; nothing was "
                           "stored, retry it")
        offset = 0
        for reservation in reservations:
            end = offset + reservation.count
            for lo in range(offset, end, STEP_ROWS):
                hi = min(end, lo + STEP_ROWS)
                records = seal_batch(
                    reservation.key, key_version=reservation.version, keyset_id=keyset_id,
                    tenant=tenant, model_id=spec.model_id, subject_ids=subject_ids[lo:hi],
                    subject_secrets=secrets, encodings=encodings[lo:hi],
                    template_ids=template_ids[lo:hi],
                )
                store.add_template_batch(TemplateBatch(
                    tenant=tenant, model_id=spec.model_id, dimension=spec.dimension,
                    dtype=encodings.dtype.name, key_version=reservation.version, created_at=now,
                    subject_ids=subject_ids[lo:hi], template_ids=template_ids[lo:hi],
                    records=records,
                ))
            offset = end
    return template_ids
