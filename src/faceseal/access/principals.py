"""Principals: who holds an API key, with which roles, over which tenant(s); and the decision
whether one may perform an action.

A principal's roles are stored in ``PrincipalRow.role`` as sorted names joined by commas
(``"auditor,enroller"``), its scope in ``PrincipalRow.tenant`` (``None``: every tenant). Names are
unique for the life of the vault: a revoked principal's name is not reused, so audit events stay
unambiguous.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, cast

from faceseal.access.apikeys import (
    DUMMY_HASH,
    IssuedKey,
    generate_api_key,
    hashes_equal,
    parse_api_key,
)
from faceseal.access.roles import PERMISSIONS, Role, RoleName, format_roles, parse_roles
from faceseal.access.sealing import PrincipalSeal
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.schema import Result
from faceseal.storage.base import PrincipalRow, TemplateStore

_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")

#: Why a credential was refused (recorded in the audit event, never told to the caller).
NO_KEY = "no key"
MALFORMED = "malformed key"
UNKNOWN = "unknown key"
REVOKED = "revoked key"
#: The row matched the key but its MAC did not verify: it was forged or edited in the store.
TAMPERED = "principal row fails its integrity check"


def check_principal_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            "a principal name is 1-64 characters: letters, digits and . _ @ -, starting with a "
            "letter or digit"
        )
    return name


@dataclass(frozen=True)
class Principal:
    """An authenticated (or listed) principal. Holds no key and no key hash."""

    principal_id: str
    name: str
    roles: frozenset[Role]
    tenant: str | None  # None: every tenant
    key_id: str
    created_at: float
    revoked_at: float | None
    #: False when the stored row's MAC does not verify (listed, never authenticated).
    verified: bool = True

    @classmethod
    def from_row(cls, row: PrincipalRow, seal: PrincipalSeal | None = None, *,
                 verified: bool | None = None) -> Principal:
        """The principal a row describes; with ``seal``, its MAC checked (unless the caller
        just did: ``verified``) and its revocation taken from the key side."""
        if seal is None:
            return cls(row.principal_id, row.name, parse_roles([row.role]), row.tenant,
                       row.key_id, row.created_at, row.revoked_at)
        if verified is None:
            verified = seal.verifies(row)
        try:
            roles = parse_roles([row.role])
        except InvalidInput:
            if verified:
                raise
            roles = frozenset()  # a forged row may name anything; it grants nothing
        return cls(row.principal_id, row.name, roles, row.tenant, row.key_id, row.created_at,
                   seal.revoked_at(row), verified)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def role_names(self) -> str:
        return format_roles(self.roles)

    @property
    def scope(self) -> str:
        return "*" if self.tenant is None else self.tenant

    def covers(self, tenant: str | None) -> bool:
        """Whether this principal's scope includes ``tenant`` (None: every tenant)."""
        return self.tenant is None or (tenant is not None and tenant == self.tenant)

    def info(self) -> PrincipalInfo:
        """What may be shown of this principal (listed, served, printed)."""
        return PrincipalInfo(self.name, cast(list[RoleName], sorted(r.value for r in self.roles)),
                             self.tenant, self.tenant is None, self.key_id, self.created_at,
                             self.revoked_at, self.active, self.verified)

    def to_dict(self) -> dict[str, Any]:
        return self.info().to_dict()


@dataclass(frozen=True)
class PrincipalInfo(Result):
    """A principal as listed and served: no key, no key hash, no internal id."""

    name: str
    roles: list[RoleName]
    tenant: str | None
    """The tenant it is scoped to; null: every tenant."""
    all_tenants: bool
    key_id: str
    created_at: float
    revoked_at: float | None
    active: bool
    verified: bool = True
    """False when the stored row's MAC does not verify: it was written without the vault's key
    and is refused."""


@dataclass(frozen=True)
class NewPrincipalInfo(PrincipalInfo):
    """A principal just created, and its API key, shown this once."""

    api_key: str = ""
    """The principal's API key, shown this once; faceseal keeps only a hash of it."""

    def __repr__(self) -> str:
        return f"NewPrincipalInfo(name={self.name!r}, api_key=<redacted>)"


@dataclass(frozen=True)
class Decision:
    """Whether an action is allowed, and by which role (for the audit event)."""

    allowed: bool
    role: str
    reason: str = ""


def authorize(principal: Principal, action: str, tenant: str | None) -> Decision:
    """Allow ``action`` on ``tenant`` (None: every tenant) for ``principal``, or say why not."""
    try:
        needed = PERMISSIONS[action]
    except KeyError:
        raise ValueError(f"no permission rule for action {action!r}") from None
    granting = sorted(r.value for r in principal.roles & needed)
    if not granting:
        return Decision(False, principal.role_names,
                        f"role {principal.role_names} may not {action} (needs "
                        f"{' or '.join(sorted(r.value for r in needed))})")
    if not principal.covers(tenant):
        where = "every tenant" if tenant is None else f"tenant {tenant!r}"
        return Decision(False, granting[0],
                        f"principal is scoped to tenant {principal.scope!r}, not {where}")
    return Decision(True, granting[0])


@dataclass(frozen=True)
class NewPrincipal:
    """A principal just created, and its API key, shown this once."""

    principal: Principal
    api_key: str

    def __repr__(self) -> str:
        return f"NewPrincipal(name={self.principal.name!r}, api_key=<redacted>)"

    def info(self) -> NewPrincipalInfo:
        return NewPrincipalInfo(**vars(self.principal.info()), api_key=self.api_key)

    def to_dict(self) -> dict[str, Any]:
        return self.info().to_dict()


def new_principal_row(
    name: str, roles: frozenset[Role], tenant: str | None
) -> tuple[PrincipalRow, IssuedKey]:
    """A row to store for a new principal, and its key (to show once)."""
    check_principal_name(name)
    issued = generate_api_key()
    row = PrincipalRow(
        principal_id=os.urandom(16).hex(), name=name, role=format_roles(roles), tenant=tenant,
        key_id=issued.key_id, key_hash=issued.key_hash, created_at=time.time(), revoked_at=None,
    )
    return row, issued


@dataclass(frozen=True)
class Credential:
    """What a bound vault remembers of its key: the public id and the hash, not the key."""

    key_id: str
    key_hash: bytes

    def __repr__(self) -> str:
        return f"Credential(key_id={self.key_id!r}, <hash redacted>)"


@dataclass(frozen=True)
class AuthResult:
    """The principal a key belongs to, or why it was refused."""

    principal: Principal | None
    credential: Credential | None
    failure: str | None
    key_id: str | None  # the public key id, when the key was well-formed


def authenticate(store: TemplateStore, seal: PrincipalSeal,
                 api_key: str | bytes | SecretBytes | None) -> AuthResult:
    """Look up a key's principal; constant-time hash comparison, then the row's MAC; revoked
    keys (on the key side or in the row) refused."""
    if api_key is None or (isinstance(api_key, str | bytes | SecretBytes) and len(api_key) == 0):
        return AuthResult(None, None, NO_KEY, None)
    parsed = parse_api_key(api_key)
    if parsed is None:
        return AuthResult(None, None, MALFORMED, None)
    presented = parsed.hash()
    credential = Credential(parsed.key_id, presented)
    return check_credential(store, seal, credential)


def check_credential(store: TemplateStore, seal: PrincipalSeal,
                     credential: Credential) -> AuthResult:
    """Re-check a remembered credential against the store (revocation takes effect at once).

    The row must match the key's hash *and* carry a valid MAC: a row forged or edited in the
    store is refused as ``TAMPERED`` (and the guard audits it), never trusted."""
    row = store.principal_by_key_id(credential.key_id)
    stored = row.key_hash if row is not None else DUMMY_HASH
    matches = hashes_equal(stored, credential.key_hash)
    if row is None or not matches:
        return AuthResult(None, None, UNKNOWN, credential.key_id)
    if not seal.verifies(row):
        return AuthResult(None, None, TAMPERED, credential.key_id)
    principal = Principal.from_row(row, seal, verified=True)
    if not principal.active:
        return AuthResult(principal, None, REVOKED, credential.key_id)
    return AuthResult(principal, credential, None, credential.key_id)
