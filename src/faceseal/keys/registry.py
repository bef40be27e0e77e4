"""Key providers chosen by a key URI.

``local:<directory>`` is the keyring file provider. Other schemes (``pkcs11:``,
``vault-transit:``, ``aws-kms:``) are registered by their modules when their optional extras are
installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.keys.local import LocalKeyring
from faceseal.keys.provider import KeyProvider

PassphraseSource = Callable[[], SecretBytes | None]


def _no_passphrase() -> SecretBytes | None:
    return None


def local_uri(directory: Path) -> str:
    return f"local:{directory.resolve()}"


def scheme_of(uri: str) -> str:
    scheme, sep, _ = uri.partition(":")
    if not sep:
        raise InvalidInput(f"not a key URI (expected scheme:...): {uri!r}")
    return scheme


def local_directory(uri: str) -> Path:
    if scheme_of(uri) != "local":
        raise InvalidInput("not a local keyring URI")
    return Path(uri.partition(":")[2])


def open_provider(uri: str, passphrase: PassphraseSource = _no_passphrase) -> KeyProvider:
    """Open the provider a vault's key URI names."""
    scheme = scheme_of(uri)
    if scheme == "local":
        directory = local_directory(uri)
        if LocalKeyring.is_sealed(directory):
            return LocalKeyring.open(directory, passphrase())
        return LocalKeyring.open(directory, None)
    raise InvalidInput(f"unsupported key provider scheme {scheme!r}")


def create_provider(uri: str, passphrase: PassphraseSource = _no_passphrase) -> KeyProvider:
    """Create the provider (and its first KEK) a new vault's key URI names."""
    scheme = scheme_of(uri)
    if scheme == "local":
        return LocalKeyring.create(local_directory(uri), passphrase())
    raise InvalidInput(f"unsupported key provider scheme {scheme!r}")
