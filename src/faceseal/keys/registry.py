"""Key providers chosen by a key URI.

==================  ==============================================================================
``local:DIR``       the keyring file in DIR (:mod:`faceseal.keys.local`)
``pkcs11:...``      a PKCS#11 HSM token (:mod:`faceseal.keys.pkcs11`, extra ``hsm``)
``vault-transit:``  HashiCorp Vault / OpenBao transit (:mod:`faceseal.keys.transit`, extra ``kms``)
``aws-kms:...``     AWS KMS (:mod:`faceseal.keys.awskms`, extra ``kms``)
==================  ==============================================================================

Google Cloud KMS (``gcp-kms:``) and Azure Key Vault (``azure-kv:``) are not supported yet: they
are refused with a message saying so. See ``docs/keys.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.keys.local import LocalKeyring
from faceseal.keys.provider import KeyProvider

PassphraseSource = Callable[[], SecretBytes | None]

REMOTE_SCHEMES = ("pkcs11", "vault-transit", "aws-kms")
NOT_YET_SUPPORTED = {
    "gcp-kms": "Google Cloud KMS",
    "gcpkms": "Google Cloud KMS",
    "azure-kv": "Azure Key Vault",
    "azurekv": "Azure Key Vault",
}


def _no_passphrase() -> SecretBytes | None:
    return None


def local_uri(directory: Path) -> str:
    return f"local:{directory.resolve()}"


def scheme_of(uri: str) -> str:
    if not isinstance(uri, str):
        raise InvalidInput("a key URI must be a string")
    scheme, sep, _ = uri.partition(":")
    if not sep:
        raise InvalidInput(f"not a key URI (expected scheme:...): {uri!r}")
    return scheme


def local_directory(uri: str) -> Path:
    if scheme_of(uri) != "local":
        raise InvalidInput("not a local keyring URI")
    rest = uri.partition(":")[2]
    if not rest:
        raise InvalidInput("a local key URI names a directory: local:/path/to/keys")
    return Path(rest).expanduser()


def check_uri(uri: str) -> str:
    """Validate a key URI's syntax (no provider call, no credential read); returns its scheme."""
    scheme = scheme_of(uri)
    if scheme == "local":
        local_directory(uri)
    elif scheme == "pkcs11":
        from faceseal.keys.pkcs11 import Pkcs11Uri  # noqa: PLC0415 - optional extra

        Pkcs11Uri.parse(uri)
    elif scheme == "vault-transit":
        from faceseal.keys.transit import TransitUri  # noqa: PLC0415

        TransitUri.parse(uri)
    elif scheme == "aws-kms":
        from faceseal.keys.awskms import KmsUri  # noqa: PLC0415

        KmsUri.parse(uri)
    elif scheme in NOT_YET_SUPPORTED:
        raise InvalidInput(f"{NOT_YET_SUPPORTED[scheme]} is not supported yet (see docs/keys.md)")
    else:
        raise InvalidInput(f"unsupported key provider scheme {scheme!r} (supported: local, "
                           f"{', '.join(REMOTE_SCHEMES)})")
    return scheme


def open_provider(uri: str, passphrase: PassphraseSource = _no_passphrase) -> KeyProvider:
    """Open the provider a vault's key URI names."""
    scheme = check_uri(uri)
    if scheme == "local":
        directory = local_directory(uri)
        if LocalKeyring.is_sealed(directory):
            return LocalKeyring.open(directory, passphrase())
        return LocalKeyring.open(directory, None)
    return _remote(scheme).open(uri)


def create_provider(uri: str, passphrase: PassphraseSource = _no_passphrase) -> KeyProvider:
    """Create the provider (and its first KEK) a new vault's key URI names.

    A local keyring must not exist yet; a remote KEK (HSM key label, transit key, KMS alias) is
    created if missing and reused if present (the wrapping context binds every blob to its
    vault, so one KEK may serve several vaults)."""
    scheme = check_uri(uri)
    if scheme == "local":
        return LocalKeyring.create(local_directory(uri), passphrase())
    return _remote(scheme).create(uri)


def open_or_create_provider(uri: str,
                            passphrase: PassphraseSource = _no_passphrase) -> KeyProvider:
    """For migration targets: open the provider, creating a local keyring that is missing."""
    if check_uri(uri) == "local" and not (local_directory(uri) / "keyring.json").exists():
        return create_provider(uri, passphrase)
    if scheme_of(uri) == "local":
        return open_provider(uri, passphrase)
    return create_provider(uri, passphrase)


def _remote(scheme: str) -> RemoteProvider:
    if scheme == "pkcs11":
        from faceseal.keys.pkcs11 import Pkcs11Provider  # noqa: PLC0415

        return Pkcs11Provider
    if scheme == "vault-transit":
        from faceseal.keys.transit import TransitProvider  # noqa: PLC0415

        return TransitProvider
    from faceseal.keys.awskms import AwsKmsProvider  # noqa: PLC0415

    return AwsKmsProvider


class RemoteProvider(Protocol):
    """What every remote provider class offers: open an existing KEK, or create one."""

    def open(self, uri: str) -> KeyProvider: ...

    def create(self, uri: str) -> KeyProvider: ...
