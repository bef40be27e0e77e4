"""Overview: readiness, the principal's own scope, and for admins and auditors the store, the
key provider and the galleries loaded per tenant with how far behind the change log they are."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from faceseal.access.roles import KEYS_STATUS, TENANTS_LIST
from faceseal.http.console.web import Page


async def overview(page: Page) -> Response:
    service = page.service
    readiness = await service.run(service.vault.readiness)
    galleries: dict[str, Any] | None = None
    tenants = None
    if page.may(TENANTS_LIST):
        tenants = await service.run(page.vault.tenants)
        galleries = service.vault.index_status()["tenants"]  # counts and flags only
    keys = None
    store = None
    if page.may(KEYS_STATUS):
        keys = await service.run(page.vault.key_status)
        # The kind only: the description may be a path or a host name.
        store = service.vault.store_description.split(":", 1)[0]
    return page.render("overview.html", title="Overview", readiness=readiness,
                       vault_id=service.vault.vault_id, tenants=tenants, galleries=galleries,
                       keys=keys, store=store)
