"""Signed principal rows: the store cannot forge, edit or un-revoke a principal.

Every principal row carries a MAC (:mod:`faceseal.audit.integrity`) over all its fields: id,
name, roles, tenant scope, key id, key hash, creation and revocation times. Authentication checks
it on every use; a row whose MAC does not verify is refused and the refusal audited, whatever its
key hash says.

Revocation is also recorded on the key side (the audit state file's ``revocations``) *before* the
row changes. An older signed copy of the row (one from before the revocation) still carries a
valid MAC, so the key-side record, not the row, is what makes a revocation final.
"""

from __future__ import annotations

import dataclasses
import struct

from faceseal.audit.integrity import RowAuthenticator
from faceseal.audit.state import INTEGRITY_SETTING, INTEGRITY_VERSION, AuditState
from faceseal.crypto.encoding import length_prefixed
from faceseal.storage.base import PrincipalRow

DOMAIN = b"principal"
_F64 = struct.Struct(">d")


def _optional(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + length_prefixed(value.encode())


def principal_content(row: PrincipalRow) -> bytes:
    """The bytes a principal's MAC covers: every field but the MAC, unambiguously."""
    return b"".join([
        length_prefixed(row.principal_id.encode()),
        length_prefixed(row.name.encode()),
        length_prefixed(row.role.encode()),
        _optional(row.tenant),
        length_prefixed(row.key_id.encode()),
        length_prefixed(row.key_hash),
        _F64.pack(row.created_at),
        b"\x00" if row.revoked_at is None else b"\x01" + _F64.pack(row.revoked_at),
    ])


class PrincipalSeal:
    """Signs principal rows and decides whether a stored one may be trusted."""

    def __init__(self, authenticator: RowAuthenticator, state: AuditState) -> None:
        self._auth = authenticator
        self._state = state
        self._current = False

    @property
    def authenticator(self) -> RowAuthenticator:
        return self._auth

    def current(self) -> bool:
        """Whether the vault's rows are signed (False: a vault still to be upgraded by
        ``faceseal migrate``). Once True it stays True, so it is read once."""
        if not self._current:
            self._current = self._state.setting(INTEGRITY_SETTING) == str(INTEGRITY_VERSION)
        return self._current

    def sign(self, row: PrincipalRow) -> PrincipalRow:
        return dataclasses.replace(row, mac=self._auth.sign(DOMAIN, principal_content(row)))

    def verifies(self, row: PrincipalRow) -> bool:
        return bool(row.mac) and self._auth.verifies(DOMAIN, principal_content(row), row.mac)

    def revoked_at(self, row: PrincipalRow) -> float | None:
        """When the principal was revoked: the key side's record first (the store cannot remove
        it), else the row's own (a store can only make a principal *more* revoked)."""
        recorded = self._state.revoked_at(row.principal_id)
        return recorded if recorded is not None else row.revoked_at

    def record_revocation(self, principal_id: str, when: float) -> float:
        """Make the revocation final on the key side; returns the time it first took effect."""
        return self._state.revoke(principal_id, when)

    def __repr__(self) -> str:
        return "PrincipalSeal(<redacted>)"
