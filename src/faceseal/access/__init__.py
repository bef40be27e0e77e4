"""Access: principals, roles, the permission table, and API-key verification.

Nothing here performs an operation; the vault facade asks :func:`authorize` before every one and
records the answer in the audit log.
"""

from faceseal.access.apikeys import ApiKey, IssuedKey, generate_api_key, parse_api_key
from faceseal.access.principals import (
    AuthResult,
    Credential,
    Decision,
    NewPrincipal,
    Principal,
    authenticate,
    authorize,
    check_credential,
    check_principal_name,
    new_principal_row,
)
from faceseal.access.roles import (
    ALL_ROLES,
    GLOBAL_ACTIONS,
    PERMISSIONS,
    Role,
    format_roles,
    parse_roles,
)

__all__ = [
    "ALL_ROLES",
    "GLOBAL_ACTIONS",
    "PERMISSIONS",
    "ApiKey",
    "AuthResult",
    "Credential",
    "Decision",
    "IssuedKey",
    "NewPrincipal",
    "Principal",
    "Role",
    "authenticate",
    "authorize",
    "check_credential",
    "check_principal_name",
    "format_roles",
    "generate_api_key",
    "new_principal_row",
    "parse_api_key",
    "parse_roles",
]
