"""Sealing many records at once: the same v1 records as :func:`~faceseal.crypto.record.seal_record`,
with the per-record overhead taken out.

* every record of a subject under one data-key version shares one derived key: it is derived once
  per batch, not once per record;
* nonces come from one call to the OS CSPRNG (``12 * n`` bytes) instead of ``n`` calls; each record
  still has its own random 96-bit nonce under its own subject key;
* the plaintexts are one contiguous little-endian buffer sliced without copying, and the
  associated data is built from a per-subject prefix.

The output is byte-for-byte the record format of :mod:`faceseal.crypto.record` (a test opens every
batch-sealed record with :func:`~faceseal.crypto.record.open_record`), and the first record of every
batch is checked against :class:`~faceseal.crypto.record.RecordContext` before anything is sealed.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceseal.crypto.aead import NONCE_BYTES, TAG_BYTES
from faceseal.crypto.derive import record_key_bytes
from faceseal.crypto.encoding import length_prefixed
from faceseal.crypto.record import RecordContext, header_for
from faceseal.crypto.secret import SecretBytes

_AD_LABEL = b"faceseal-record-v1\x00"
_KEY_LABEL = b"faceseal-record-key-v1\x00"
_U16 = struct.Struct(">H")


def seal_batch(
    dek: SecretBytes,
    *,
    key_version: int,
    keyset_id: bytes,
    tenant: str,
    model_id: str,
    subject_ids: Sequence[str],
    subject_secrets: Mapping[str, SecretBytes],
    encodings: npt.NDArray[np.floating],
    template_ids: Sequence[str],
) -> list[memoryview]:
    """Seal row ``i`` of ``encodings`` as template ``template_ids[i]`` of ``subject_ids[i]``.

    All rows share one tenant, model, dtype (float32 or float64) and dimension. Returns the v1
    records in order, as read-only views into one buffer (no copy per record; ``bytes(view)``
    where a ``bytes`` object is needed). ``subject_secrets`` must hold the secret of every
    subject named.
    """
    count = len(subject_ids)
    if encodings.ndim != 2 or encodings.shape[0] != count or len(template_ids) != count:
        raise ValueError("subject ids, template ids and encodings do not line up")
    if count == 0:
        return []
    header = header_for(encodings[0], key_version).pack()
    little = np.ascontiguousarray(encodings, dtype=encodings.dtype.newbyteorder("<"))
    width = little.shape[1] * little.dtype.itemsize
    plain = little.data.cast("B")
    fixed = _AD_LABEL + header + keyset_id + length_prefixed(tenant.encode())
    model_part = length_prefixed(model_id.encode())
    first = RecordContext(keyset_id, tenant, subject_ids[0], template_ids[0], model_id)
    if first.associated_data(header) != (fixed + length_prefixed(subject_ids[0].encode())
                                         + length_prefixed(template_ids[0].encode())
                                         + model_part):
        raise AssertionError("batch associated data diverges from the record format")
    record_bytes = len(header) + NONCE_BYTES + width + TAG_BYTES
    sealed = _prefilled(header, count, record_bytes)
    out = memoryview(sealed)
    body = len(header) + NONCE_BYTES
    pack = _U16.pack
    encoded = [t.encode() for t in template_ids]
    if max(map(len, encoded)) > 0xFFFF:
        raise ValueError("template id too long")
    tails = [pack(len(t)) + t + model_part for t in encoded]
    # Record keys as crypto.derive.record_key_bytes makes them (checked on the first subject),
    # without the per-call wrappers: HMAC-SHA256(DEK, label || tenant || subject || secret).
    dek_bytes = dek.reveal()
    key_prefix = _KEY_LABEL + length_prefixed(tenant.encode())
    _check_derivation(dek, tenant, subject_ids[0], subject_secrets[subject_ids[0]], key_prefix)
    subjects: dict[str, tuple[AESGCM, bytes]] = {}
    header_len = len(header)
    try:
        for i in range(count):
            subject = subject_ids[i]
            entry = subjects.get(subject)
            if entry is None:
                part = length_prefixed(subject.encode())
                entry = subjects[subject] = (
                    AESGCM(hmac.digest(dek_bytes, key_prefix + part
                                       + subject_secrets[subject].reveal(), "sha256")),
                    fixed + part,
                )
            base = i * record_bytes
            entry[0].encrypt_into(
                out[base + header_len:base + body], plain[i * width:(i + 1) * width],
                entry[1] + tails[i], out[base + body:base + record_bytes],
            )
    finally:
        out.release()
        plain.release()
        if not np.shares_memory(little, encodings):
            little.fill(0)  # our own little-endian copy; never the caller's array
    whole = memoryview(sealed).toreadonly()
    return [whole[i * record_bytes:(i + 1) * record_bytes] for i in range(count)]


def _prefilled(header: bytes, count: int, record_bytes: int) -> bytearray:
    """One buffer for ``count`` records: each starts with the header and a fresh random nonce
    (all nonces from one CSPRNG call)."""
    nonces = os.urandom(NONCE_BYTES * count)
    sealed = bytearray(record_bytes * count)
    layout = np.frombuffer(sealed, dtype=np.uint8).reshape(count, record_bytes)
    layout[:, :len(header)] = np.frombuffer(header, dtype=np.uint8)
    layout[:, len(header):len(header) + NONCE_BYTES] = np.frombuffer(
        nonces, dtype=np.uint8).reshape(count, NONCE_BYTES)
    del layout
    return sealed


def _check_derivation(dek: SecretBytes, tenant: str, subject: str, secret: SecretBytes,
                      key_prefix: bytes) -> None:
    """The inlined derivation must give what :func:`record_key_bytes` gives."""
    expected = record_key_bytes(dek, tenant, subject, secret)
    inlined = hmac.digest(dek.reveal(), key_prefix + length_prefixed(subject.encode())
                          + secret.reveal(), "sha256")
    same = hmac.compare_digest(expected.reveal(), inlined)
    expected.wipe()
    if not same:
        raise AssertionError("batch key derivation diverges from crypto.derive")
