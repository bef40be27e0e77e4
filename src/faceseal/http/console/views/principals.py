"""Principals (admin): list with roles and scope, add one (its API key shown on this one page,
never again), revoke."""

from __future__ import annotations

from starlette.responses import Response

from faceseal.access.roles import Role
from faceseal.errors import Conflict, InvalidInput, NotFound
from faceseal.http.console.web import Page

ROLE_NAMES = tuple(sorted(r.value for r in Role))


async def principals_page(page: Page, *, created: object = None, revoked: object = None,
                          error: str | None = None, status: int = 200) -> Response:
    found = await page.service.run(page.vault.principals)
    return page.render("principals.html", status, title="Principals", principals=found,
                       roles=ROLE_NAMES, created=created, revoked=revoked, error=error)


async def principals(page: Page) -> Response:
    return await principals_page(page)


async def add(page: Page) -> Response:
    fields = page.form.fields
    roles = [name for name in ROLE_NAMES if fields.get(f"role_{name}") == "on"]
    tenant = fields.get("scope_tenant", "").strip() or None
    every = fields.get("all_tenants") == "on"
    try:
        if every and tenant is not None:
            raise InvalidInput("give a tenant or tick every tenant, not both")
        created = await page.service.run(page.vault.add_principal, fields.get("name", ""),
                                         roles, tenant=tenant, all_tenants=every)
    except (InvalidInput, Conflict) as error:
        return await principals_page(page, error=str(error), status=422)
    return await principals_page(page, created=created)


async def revoke(page: Page) -> Response:
    try:
        revoked = await page.service.run(page.vault.revoke_principal,
                                         page.form.fields.get("name", ""))
    except (NotFound, Conflict, InvalidInput) as error:
        return await principals_page(page, error=str(error), status=422)
    return await principals_page(page, revoked=revoked)
