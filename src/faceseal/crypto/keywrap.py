"""Key wrapping: AES key wrap with padding (RFC 5649, NIST SP 800-38F KWP).

KWP has no associated data, so to bind a wrapped key to where it belongs (its purpose and version),
the wrapped plaintext is ``key || SHA-256(context)[:16]`` and the suffix is checked on unwrap in
constant time. KWP's own integrity check plus that suffix make a wrapped key unusable anywhere
else. Every failure raises the one opaque :class:`~faceseal.errors.DecryptionError`.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError

CONTEXT_TAG_BYTES = 16


def _context_tag(context: bytes) -> bytes:
    return hashlib.sha256(b"faceseal-keywrap-context\x00" + context).digest()[:CONTEXT_TAG_BYTES]


def wrap_key(kek: SecretBytes, key: SecretBytes, context: bytes) -> bytes:
    """Wrap ``key`` under ``kek`` (RFC 5649), bound to ``context``."""
    return aes_key_wrap_with_padding(kek.reveal(), key.reveal() + _context_tag(context))


def unwrap_key(kek: SecretBytes, wrapped: bytes, context: bytes) -> SecretBytes:
    """Unwrap a key made by :func:`wrap_key` with the same ``context``, or raise."""
    try:
        plain = aes_key_unwrap_with_padding(kek.reveal(), wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionError() from None
    if len(plain) <= CONTEXT_TAG_BYTES:
        raise DecryptionError()
    key, tag = plain[:-CONTEXT_TAG_BYTES], plain[-CONTEXT_TAG_BYTES:]
    if not hmac.compare_digest(tag, _context_tag(context)):
        raise DecryptionError()
    return SecretBytes(key)


def kwp_wrap(kek: SecretBytes, key: bytes) -> bytes:
    """Plain RFC 5649 wrap, exposed for the Wycheproof conformance tests."""
    return aes_key_wrap_with_padding(kek.reveal(), key)


def kwp_unwrap(kek: SecretBytes, wrapped: bytes) -> bytes:
    """Plain RFC 5649 unwrap; every failure is :class:`DecryptionError`."""
    try:
        return aes_key_unwrap_with_padding(kek.reveal(), wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionError() from None
