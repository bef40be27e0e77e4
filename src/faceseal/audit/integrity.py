"""MACs over rows the vault keeps in a store it does not trust.

Whoever can write the template store (a SQLite file, a PostgreSQL login, a file-store directory)
could otherwise forge principals or change their roles. Rows that decide who may do what therefore
carry ``version || HMAC-SHA256(K_rows, ...)`` where ``K_rows`` is derived from the vault's audit
key (a subkey under its own label, see :class:`~faceseal.audit.chain.AuditKey`). The audit key is
stored only wrapped by the key provider's KEK in the key directory, so the store alone can neither
recompute nor move a MAC: every MAC also binds the vault's keyset id and a domain naming the kind
of row.

A MAC cannot stop a replay of an older, genuinely signed row. State that must only ever advance
(revocations, the minimum decryption version) is therefore kept on the key side as well, in the
audit state file (:mod:`faceseal.audit.state`), where the store cannot lower it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from faceseal.audit.chain import AuditKey, mac_version


class RowAuthenticator:
    """Signs and checks row MACs with the vault's audit keys (the newest version signs)."""

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: dict[int, AuditKey]) -> None:
        if not keys:
            raise ValueError("no audit key")
        self._keys = keys
        self._active = keys[max(keys)]

    def sign(self, domain: bytes, content: bytes) -> bytes:
        return self._active.row_mac(domain, content)

    @property
    def version(self) -> int:
        """The audit-key version that signs now."""
        return self._active.version

    def prf(self, version: int, domain: bytes, content: bytes) -> bytes | None:
        """32 pseudo-random bytes keyed by audit-key ``version`` (None: no such version)."""
        key = self._keys.get(version)
        return None if key is None else key.row_mac(domain, content)[4:]

    def prfs(self, version: int, domain: bytes, prefix: bytes,
             suffixes: Iterable[bytes]) -> list[bytes] | None:
        """:meth:`prf` of ``prefix + suffix`` for each suffix (None: no such version)."""
        key = self._keys.get(version)
        return None if key is None else key.row_prfs(domain, prefix, suffixes)

    def verifies(self, domain: bytes, content: bytes, mac: bytes) -> bool:
        version = mac_version(mac)
        key = self._keys.get(version) if version is not None else None
        return key is not None and hmac.compare_digest(mac, key.row_mac(domain, content))

    def __repr__(self) -> str:
        return "RowAuthenticator(<redacted>)"
