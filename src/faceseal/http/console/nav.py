"""The console's pages and which vault actions each one serves. A page is listed for a
principal when the vault's permission table allows it one of them; the vault still refuses any
call the principal may not make, whichever URL it comes from."""

from __future__ import annotations

from dataclasses import dataclass

from faceseal.access.principals import Principal, authorize
from faceseal.access.roles import (
    AUDIT_READ,
    GLOBAL_ACTIONS,
    IDENTIFY,
    KEYS_STATUS,
    PRINCIPALS_LIST,
    PURGE,
    SUBJECTS,
    TENANTS_RETENTION,
    VERIFY,
)


@dataclass(frozen=True)
class NavPage:
    path: str
    title: str
    #: Vault actions the page calls; empty: every signed-in principal.
    actions: tuple[str, ...]


PAGES: tuple[NavPage, ...] = (
    NavPage("/", "Overview", ()),
    NavPage("/subjects", "Subjects", (SUBJECTS,)),
    NavPage("/try", "Try verify / identify", (VERIFY, IDENTIFY)),
    NavPage("/audit", "Audit", (AUDIT_READ,)),
    NavPage("/principals", "Principals", (PRINCIPALS_LIST,)),
    NavPage("/keys", "Keys", (KEYS_STATUS,)),
    NavPage("/retention", "Retention", (TENANTS_RETENTION, PURGE)),
)


def allowed(principal: Principal, action: str) -> bool:
    where = None if action in GLOBAL_ACTIONS else principal.tenant
    return authorize(principal, action, where).allowed


def visible(principal: Principal) -> list[NavPage]:
    """The pages ``principal`` may use, in menu order."""
    return [p for p in PAGES
            if not p.actions or any(allowed(principal, a) for a in p.actions)]
