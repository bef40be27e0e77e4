"""Opening legacy AES-256-CBC + PKCS7 ciphertext, for ``faceseal import-legacy`` only.

Many projects store face encodings as ``AES-256-CBC(key, iv, PKCS7(float64 bytes))`` with the IV
beside the ciphertext and no MAC. faceseal never *writes* that format (CBC without a MAC is
malleable and, online, a padding oracle); this module only opens it once, offline, so the
encodings can be re-sealed with AES-256-GCM. There is no encrypt function on purpose.

Unlike :class:`~faceseal.errors.DecryptionError`, failures here carry a short reason (wrong
length, bad padding): the import reports which legacy rows failed and why, to the operator
running it; there is no online attacker to feed an oracle. Reasons never contain key or
plaintext bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from faceseal.crypto.secret import SecretBytes

BLOCK_BYTES = 16
KEY_BYTES = 32


class LegacyDecryptError(Exception):
    """One legacy ciphertext could not be opened; ``reason`` says why, without any secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decrypt_cbc_pkcs7(key: SecretBytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-256-CBC decrypt and strip PKCS7 padding, or raise :class:`LegacyDecryptError`."""
    if len(key) != KEY_BYTES:
        raise ValueError("the legacy key must be 32 bytes (AES-256)")
    if len(iv) != BLOCK_BYTES:
        raise LegacyDecryptError(f"the IV is {len(iv)} bytes, not {BLOCK_BYTES}")
    if not ciphertext or len(ciphertext) % BLOCK_BYTES:
        raise LegacyDecryptError(
            f"the ciphertext is {len(ciphertext)} bytes, not a positive multiple of {BLOCK_BYTES}"
        )
    decryptor = Cipher(algorithms.AES(key.reveal()), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_BYTES * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise LegacyDecryptError("bad padding: wrong key or corrupted ciphertext") from None
