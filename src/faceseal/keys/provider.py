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

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from faceseal.crypto.secret import SecretBytes


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

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections or sessions."""

    def __repr__(self) -> str:
        status = self.describe()
        return f"<{type(self).__name__} {status.kind} {status.location}>"
