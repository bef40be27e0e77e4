"""AES-256-GCM, the only cipher faceseal seals data with.

One narrow seam in the spirit of tink's ``Aead``: :meth:`AeadKey.encrypt` takes plaintext and
associated data and returns ``nonce || ciphertext || tag``; :meth:`AeadKey.decrypt` reverses it or
raises :class:`~faceseal.errors.DecryptionError`, the same error for every kind of failure.
Nonces are 96 bits from the OS CSPRNG, fresh for every call, never chosen by the caller.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise ValueError(f"AES-256-GCM needs a {KEY_BYTES}-byte key, got {len(key)} bytes")
    return AESGCM(key)


class AeadKey:
    """An AES-256-GCM key handle. It cannot be printed, pickled or copied."""

    __slots__ = ("__aead",)

    def __init__(self, key: SecretBytes) -> None:
        self.__aead = _cipher(key.reveal())

    @classmethod
    def from_derived(cls, key: bytes) -> AeadKey:
        """A handle on key bytes a derivation has just returned (an HMAC output the caller drops
        at once). Wrapping them in :class:`SecretBytes` first would only add one more copy
        (``reveal`` copies again): the record-key path of a gallery load derives one per
        subject."""
        handle = cls.__new__(cls)
        handle.__aead = _cipher(key)
        return handle

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Seal ``plaintext``; returns ``nonce || ciphertext || tag``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.__aead.encrypt(nonce, plaintext, associated_data)

    def encrypt_with_nonce(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """Seal with a nonce drawn by the caller from the CSPRNG (batch paths draw many at once).

        Returns ``ciphertext || tag`` (without the nonce). Never pass a nonce twice.
        """
        return self.__aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, sealed: bytes, associated_data: bytes) -> bytes:
        """Open ``nonce || ciphertext || tag`` or raise :class:`DecryptionError`."""
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError()
        return self.decrypt_with_nonce(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)

    def decrypt_with_nonce(
        self, nonce: bytes, ciphertext_and_tag: bytes, associated_data: bytes
    ) -> bytes:
        """Open ``ciphertext || tag`` under ``nonce`` or raise :class:`DecryptionError`."""
        if len(nonce) != NONCE_BYTES or len(ciphertext_and_tag) < TAG_BYTES:
            raise DecryptionError()
        try:
            return self.__aead.decrypt(nonce, ciphertext_and_tag, associated_data)
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionError() from None

    def __repr__(self) -> str:
        return "AeadKey(<AES-256-GCM, redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("AeadKey cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("AeadKey cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("AeadKey cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("AeadKey cannot be copied")


def generate_key() -> SecretBytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return SecretBytes(os.urandom(KEY_BYTES))
