"""Passphrase-derived keys (for sealing a keyring file).

Argon2id (RFC 9106) when the installed OpenSSL offers it, scrypt otherwise. The chosen function
and its parameters travel with the sealed data, so a keyring sealed on one machine opens on
another, and parameters can be raised later without breaking old files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from faceseal.crypto.secret import SecretBytes

SALT_BYTES = 16


@dataclass(frozen=True)
class KdfParams:
    """Which password hash and how hard. Stored in clear beside the sealed data."""

    name: str  # "argon2id" or "scrypt"
    salt: bytes
    # argon2id: iterations, lanes, memory_kib; scrypt: n, r, p
    cost: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["salt"] = self.salt.hex()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KdfParams:
        return cls(name=str(data["name"]), salt=bytes.fromhex(data["salt"]),
                   cost={k: int(v) for k, v in dict(data["cost"]).items()})


def _argon2id_available() -> bool:
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id  # noqa: PLC0415
    except ImportError:
        return False
    try:
        Argon2id(salt=b"\x00" * SALT_BYTES, length=32, iterations=1, lanes=1, memory_cost=8)
    except UnsupportedAlgorithm:
        return False
    return True


def default_params() -> KdfParams:
    """Fresh salt; OWASP-recommended costs (argon2id m=64 MiB, t=3, p=4; scrypt N=2^17)."""
    salt = os.urandom(SALT_BYTES)
    if _argon2id_available():
        return KdfParams("argon2id", salt, {"iterations": 3, "lanes": 4, "memory_kib": 65536})
    return KdfParams("scrypt", salt, {"n": 2**17, "r": 8, "p": 1})


def derive_key(passphrase: SecretBytes, params: KdfParams, length: int = 32) -> SecretBytes:
    """Stretch ``passphrase`` into a ``length``-byte key."""
    if params.name == "argon2id":
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id  # noqa: PLC0415

        kdf: Any = Argon2id(
            salt=params.salt,
            length=length,
            iterations=params.cost["iterations"],
            lanes=params.cost["lanes"],
            memory_cost=params.cost["memory_kib"],
        )
    elif params.name == "scrypt":
        kdf = Scrypt(salt=params.salt, length=length, n=params.cost["n"], r=params.cost["r"],
                     p=params.cost["p"])
    else:
        raise ValueError(f"unknown key derivation function {params.name!r}")
    return SecretBytes(kdf.derive(passphrase.reveal()))
