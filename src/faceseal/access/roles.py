"""Roles and the permission table: which roles may perform which action.

A principal holds one or more roles and is scoped either to one tenant or to every tenant. An
action is allowed when the principal holds one of the roles the table lists for it *and* its scope
covers the action's tenant. Actions that span every tenant (an integrity scan, key operations,
verifying the whole audit chain) are asked for with ``tenant=None`` and need an all-tenant scope.

The table is the single source of truth; ``docs/access.md`` prints it and
``tests/test_access_matrix.py`` checks every role x action x tenant combination against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal

from faceseal.errors import InvalidInput


class Role(StrEnum):
    ADMIN = "admin"  # keys, principals, tenants' retention, integrity scans
    ENROLLER = "enroller"  # enroll, erase, import, list subjects
    VERIFIER = "verifier"  # 1:1 verify
    IDENTIFIER = "identifier"  # 1:N identify (the most privacy-invasive)
    AUDITOR = "auditor"  # read, export and verify the audit log
    #: Sees exact distances in verify/identify answers (on top of verifier/identifier): exact
    #: distances rebuild stored encodings, so they are a permission of their own.
    CALIBRATOR = "calibrator"


ALL_ROLES: frozenset[Role] = frozenset(Role)
#: A role's name as results and the HTTP API spell it (tests/test_result_schemas.py keeps it
#: equal to Role).
RoleName = Literal["admin", "enroller", "verifier", "identifier", "auditor", "calibrator"]

# --- actions -------------------------------------------------------------------------------------

ENROLL = "enroll"
VERIFY = "verify"
IDENTIFY = "identify"
ERASE = "erase"
IMPORT = "import"
SUBJECTS = "subjects"
PURGE = "purge"
CHECK = "check"
TENANTS_LIST = "tenants.list"
TENANTS_RETENTION = "tenants.retention"
TENANTS_POLICY = "tenants.policy"
#: Not an operation of its own: what verify/identify ask to reveal exact distances.
DISTANCES_EXACT = "distances.exact"
PRINCIPALS_ADD = "principals.add"
PRINCIPALS_LIST = "principals.list"
PRINCIPALS_REVOKE = "principals.revoke"
AUDIT_READ = "audit.read"
AUDIT_EXPORT = "audit.export"
AUDIT_VERIFY = "audit.verify"
KEYS_STATUS = "keys.status"
KEYS_ROTATE = "keys.rotate"
KEYS_RETIRE = "keys.retire"
KEYS_MIGRATE = "keys.migrate"
CONFIG_SAVE = "config.save"
#: Not a permission: the action recorded when a credential is refused.
AUTHENTICATE = "authenticate"

_A, _E, _V, _I, _AU = Role.ADMIN, Role.ENROLLER, Role.VERIFIER, Role.IDENTIFIER, Role.AUDITOR
_C = Role.CALIBRATOR

#: action -> roles that may perform it (within the principal's tenant scope).
PERMISSIONS: dict[str, frozenset[Role]] = {
    ENROLL: frozenset({_E}),
    ERASE: frozenset({_E}),
    IMPORT: frozenset({_E}),
    SUBJECTS: frozenset({_E}),
    VERIFY: frozenset({_V}),
    IDENTIFY: frozenset({_I}),
    PURGE: frozenset({_A, _E}),
    CHECK: frozenset({_A}),
    TENANTS_LIST: frozenset({_A, _AU}),
    TENANTS_RETENTION: frozenset({_A}),
    TENANTS_POLICY: frozenset({_A}),
    DISTANCES_EXACT: frozenset({_C}),
    PRINCIPALS_ADD: frozenset({_A}),
    PRINCIPALS_LIST: frozenset({_A}),
    PRINCIPALS_REVOKE: frozenset({_A}),
    AUDIT_READ: frozenset({_AU}),
    AUDIT_EXPORT: frozenset({_AU}),
    AUDIT_VERIFY: frozenset({_AU}),
    KEYS_STATUS: frozenset({_A}),
    KEYS_ROTATE: frozenset({_A}),
    KEYS_RETIRE: frozenset({_A}),
    KEYS_MIGRATE: frozenset({_A}),
    CONFIG_SAVE: frozenset({_A}),
}

#: Actions that always span every tenant (asked for with ``tenant=None``).
GLOBAL_ACTIONS: frozenset[str] = frozenset({
    CHECK, AUDIT_VERIFY, KEYS_STATUS, KEYS_ROTATE, KEYS_RETIRE, KEYS_MIGRATE, CONFIG_SAVE,
})


def parse_roles(values: Iterable[str | Role]) -> frozenset[Role]:
    """Roles from their names; an unknown name or an empty list is :class:`InvalidInput`."""
    roles: set[Role] = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                roles.add(Role(name))
            except ValueError:
                known = ", ".join(sorted(r.value for r in Role))
                raise InvalidInput(f"unknown role {name!r} (roles: {known})") from None
    if not roles:
        raise InvalidInput("a principal needs at least one role")
    return frozenset(roles)


def format_roles(roles: Iterable[Role]) -> str:
    """Roles as stored: sorted names joined by commas (``PrincipalRow.role``)."""
    return ",".join(sorted(r.value for r in roles))
