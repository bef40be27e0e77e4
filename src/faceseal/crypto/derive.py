"""Per-subject record keys.

A record is sealed under ``HMAC-SHA256(DEK, label || tenant || subject || subject_secret)``:
the data key (versioned, wrapped by the KEK, counted) combined with 32 random bytes that exist once
per subject in the key store. Destroying the subject secret makes every copy of that subject's
records unreadable, even to someone holding the DEK (crypto-shredding), while the DEK still serves
everyone else. HMAC-SHA256 as a PRF keyed by the DEK is HKDF-Expand with a single block.
"""

from __future__ import annotations

import hmac
import os

from faceseal.crypto.aead import AeadKey
from faceseal.crypto.encoding import length_prefixed
from faceseal.crypto.secret import SecretBytes

SUBJECT_SECRET_BYTES = 32
_LABEL = b"faceseal-record-key-v1\x00"


def new_subject_secret() -> SecretBytes:
    """32 bytes from the OS CSPRNG, generated once per subject."""
    return SecretBytes(os.urandom(SUBJECT_SECRET_BYTES))


def _record_key_digest(
    dek: SecretBytes, tenant: str, subject_id: str, subject_secret: SecretBytes
) -> bytes:
    message = (
        _LABEL
        + length_prefixed(tenant.encode())
        + length_prefixed(subject_id.encode())
        + subject_secret.reveal()
    )
    return hmac.digest(dek.reveal(), message, "sha256")


def record_key_bytes(
    dek: SecretBytes, tenant: str, subject_id: str, subject_secret: SecretBytes
) -> SecretBytes:
    """The raw 256-bit key that seals one subject's records under one data-key version."""
    return SecretBytes(_record_key_digest(dek, tenant, subject_id, subject_secret))


def record_key(
    dek: SecretBytes, tenant: str, subject_id: str, subject_secret: SecretBytes
) -> AeadKey:
    """An AES-256-GCM handle for one subject's records under one data-key version."""
    return AeadKey.from_derived(_record_key_digest(dek, tenant, subject_id, subject_secret))
