"""Retention (admin sets it; admin or enroller runs a purge dry-run): how long a tenant keeps
subjects after their last enrolment or match, and which subjects a purge would erase now."""

from __future__ import annotations

from starlette.responses import Response

from faceseal.access.roles import PURGE, TENANTS_LIST, TENANTS_RETENTION
from faceseal.errors import InvalidInput
from faceseal.http.console.web import Page

DAY = 86400.0


async def retention_page(page: Page, *, dry_run: object = None, error: str | None = None,
                         notice: str | None = None, status: int = 200) -> Response:
    tenants = (await page.service.run(page.vault.tenants)) if page.may(TENANTS_LIST) else None
    return page.render("retention.html", status, title="Retention", tenants=tenants,
                       tenant=page.tenant(), dry_run=dry_run, error=error, notice=notice)


async def retention(page: Page) -> Response:
    page.require(TENANTS_RETENTION, PURGE)
    return await retention_page(page)


def _days(text: str, *, zero: bool = False) -> float | None:
    """Days as seconds (None when empty); 0 only where ``zero`` allows it (a dry run of
    "inactive for any time at all")."""
    text = text.strip()
    if not text:
        return None
    try:
        days = float(text)
    except ValueError:
        raise InvalidInput("give a number of days") from None
    low_ok = days >= 0 if zero else days > 0
    if not low_ok or days > 36500:
        raise InvalidInput(f"give {'0' if zero else 'more than 0'} to 36500 days")
    return days * DAY


async def set_retention(page: Page) -> Response:
    tenant = page.tenant()
    try:
        seconds = _days(page.form.fields.get("days", ""))
        info = await page.service.run(page.vault.set_retention, tenant, seconds)
    except InvalidInput as error:
        return await retention_page(page, error=str(error), status=422)
    notice = f"retention of tenant {tenant!r} set" + (f" ({info.warning})"
                                                      if info.warning else "")
    return await retention_page(page, notice=notice)


async def purge_dry_run(page: Page) -> Response:
    tenant = page.tenant()
    try:
        inactive = _days(page.form.fields.get("inactive_days", ""), zero=True)
        result = await page.service.run(page.vault.purge, inactive, tenant=tenant,
                                        dry_run=True)
    except InvalidInput as error:
        return await retention_page(page, error=str(error), status=422)
    return await retention_page(page, dry_run=result)
