"""The one interface every key-encryption-key (KEK) provider implements.

A provider holds KEKs somewhere apart from the data (a keyring file, an HSM, a cloud KMS) and does
exactly four things with them: wrap a data key, unwrap it, describe itself, rotate to a new KEK
version. It never hands out a KEK. Wrapped blobs are self-describing: each names the KEK version
that made it, so old blobs keep unwrapping after a rotation.

Errors: a blob that fails to unwrap (tampered, wrong context, wrong KEK) is the opaque
:class:`~faceseal.errors.DecryptionError`; a provider that cannot be reached or refuses to work
(missing file, token absent, wrong PIN, network down) is
:class:`~faceseal.errors.KeyProviderUnavailable` or :class:`~faceseal.errors.KeyringError`, never
a decryption error, so an outage is not mistaken for a bad key.
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from faceseal.crypto.aead import generate_key
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError


@dataclass(frozen=True)
class ProviderStatus:
    """What a provider tells about itself: never key material, never credentials."""

    kind: str
    location: str
    kek_versions: tuple[int, ...]
    active_version: int
    details: dict[str, str] = field(default_factory=dict)


class KeyProvider(ABC):
    """Wraps and unwraps data keys under a KEK that never leaves the provider."""

    #: Short name of the provider kind ("local", "pkcs11", "vault-transit", "aws-kms").
    kind: str = "abstract"

    @abstractmethod
    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        """Wrap ``key`` under the active KEK version, bound to ``context``."""

    @abstractmethod
    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        """Unwrap a blob made by :meth:`wrap` with the same ``context``."""

    @abstractmethod
    def describe(self) -> ProviderStatus:
        """Kind, location (without credentials), KEK versions and the active one."""

    @abstractmethod
    def rotate(self) -> int:
        """Create a new KEK version, make it active, return its number."""

    @abstractmethod
    def kek_version_of(self, wrapped: bytes) -> int:
        """The KEK version that made ``wrapped`` (read from the blob, no provider call)."""

    # --- optional operations with portable defaults ---------------------------------------------
    # Providers override these where their service does better (one round trip, the plaintext
    # key never leaving the service, a batch API).

    def generate_data_key(self, context: bytes) -> tuple[SecretBytes, bytes]:
        """A fresh 256-bit data key and its wrapped form (KMS ``GenerateDataKey``, transit
        ``datakey``); by default a CSPRNG key wrapped with :meth:`wrap`."""
        key = generate_key()
        return key, self.wrap(key, context)

    def unwrap_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[SecretBytes | None]:
        """Unwrap several ``(wrapped, context)`` pairs; ``None`` for each that does not open.

        Outages still raise. A provider with a batch API answers in one call."""
        results: list[SecretBytes | None] = []
        for wrapped, context in items:
            try:
                results.append(self.unwrap(wrapped, context))
            except DecryptionError:
                results.append(None)
        return results

    def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Re-wrap a blob under the active KEK version (transit ``rewrap``, KMS ``ReEncrypt``).

        The default unwraps and wraps again in this process."""
        key = self.unwrap(wrapped, context)
        try:
            return self.wrap(key, context)
        finally:
            key.wipe()

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections or sessions."""

    def __repr__(self) -> str:
        # No provider call here: a repr must work while the provider is down.
        return f"<{type(self).__name__} {self.kind}>"


def same_key(a: SecretBytes, b: SecretBytes) -> bool:
    """Constant-time equality of two keys (used to verify a rewrap before storing it)."""
    return hmac.compare_digest(a.reveal(), b.reveal())
