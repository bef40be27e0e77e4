"""API keys: high-entropy, self-identifying, shown once, stored only as a hash.

Format: ``fsk_<key id>_<secret>`` where the key id is 16 lowercase hex characters (64 random bits,
public: it finds the principal's row and may appear in audit events) and the secret is 43 base64url
characters (256 random bits from the OS CSPRNG). The store keeps only
``SHA-256("faceseal-api-key-v1" || key id || secret)``: the secret has 256 bits of entropy, so a
fast hash cannot be brute-forced and no slow password hash is needed; the hash does not let anyone
recover or use the key. Comparison is constant-time (:func:`hmac.compare_digest`), and an unknown
key id is compared against a dummy hash so that it takes the same time as a wrong secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from faceseal.crypto.secret import SecretBytes

PREFIX = "fsk"
KEY_ID_BYTES = 8
SECRET_BYTES = 32
#: The one definition of a well-formed key (the HTTP middleware uses it through :func:`key_id_of`).
_PATTERN = re.compile(rf"\A{PREFIX}_([0-9a-f]{{{2 * KEY_ID_BYTES}}})_([A-Za-z0-9_-]{{43}})\Z")
_HASH_LABEL = b"faceseal-api-key-v1\x00"
#: Compared against when the key id is unknown, so that both paths cost the same.
DUMMY_HASH = hashlib.sha256(b"faceseal-api-key-dummy").digest()


@dataclass(frozen=True)
class ApiKey:
    """A parsed API key: the public key id and the secret part (which never prints)."""

    key_id: str
    secret: SecretBytes

    def hash(self) -> bytes:
        return hash_secret(self.key_id, self.secret)

    def __repr__(self) -> str:
        return f"ApiKey(key_id={self.key_id!r}, secret=<redacted>)"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly generated key: give ``text`` to its holder once; store only ``key_hash``."""

    key_id: str
    key_hash: bytes
    text: SecretBytes  # the whole ``fsk_...`` string, UTF-8

    def reveal(self) -> str:
        return self.text.reveal().decode()

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, <redacted>)"


def generate_api_key() -> IssuedKey:
    key_id = os.urandom(KEY_ID_BYTES).hex()
    secret = base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).rstrip(b"=")
    text = SecretBytes(f"{PREFIX}_{key_id}_".encode() + secret)
    return IssuedKey(key_id, hash_secret(key_id, SecretBytes(secret)), text)


def parse_api_key(value: str | bytes | SecretBytes) -> ApiKey | None:
    """The key id and secret of a well-formed key; None when it is malformed."""
    if isinstance(value, SecretBytes):
        raw = value.reveal()
    elif isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = value.encode("utf-8", "replace")
    else:
        return None
    match = _PATTERN.match(raw.strip().decode("ascii", "replace"))
    if match is None:
        return None
    return ApiKey(match.group(1), SecretBytes(match.group(2).encode()))


def key_id_of(text: str) -> str | None:
    """The public key id of a well-formed key, None otherwise (nothing of the secret kept):
    labels a request for rate limiting before the key is checked."""
    match = _PATTERN.match(text)
    return match.group(1) if match is not None else None


def hash_secret(key_id: str, secret: SecretBytes) -> bytes:
    return hashlib.sha256(_HASH_LABEL + key_id.encode() + b"\x00" + secret.reveal()).digest()


def hashes_equal(stored: bytes, presented: bytes) -> bool:
    """Constant-time comparison of two key hashes."""
    return hmac.compare_digest(stored, presented)
