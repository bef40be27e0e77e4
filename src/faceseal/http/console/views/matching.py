"""Try verify (1:1) and identify (1:N) with an uploaded photo. The answer is what the vault
returns under the tenant's disclosure policy: no more than the API would show."""

from __future__ import annotations

from starlette.responses import Response

from faceseal.access.roles import IDENTIFY, VERIFY
from faceseal.errors import InvalidInput, NotFound
from faceseal.http.console.web import Page
from faceseal.vault.vault import MAX_TOP_K

DEFAULT_TOP_K = 5


async def try_page(page: Page, *, verified: object = None, identified: object = None,
                   error: str | None = None, status: int = 200) -> Response:
    return page.render("try.html", status, title="Try verify / identify", tenant=page.tenant(),
                       can_verify=page.may(VERIFY, page.tenant()),
                       can_identify=page.may(IDENTIFY, page.tenant()), verified=verified,
                       identified=identified, error=error, max_top_k=MAX_TOP_K)


async def show(page: Page) -> Response:
    page.require(VERIFY, IDENTIFY)
    return await try_page(page)


def _one_photo(page: Page) -> bytes:
    if len(page.form.files) != 1:
        raise InvalidInput("choose one photo")
    return page.form.files[0]


async def verify(page: Page) -> Response:
    tenant = page.tenant()
    try:
        photo = _one_photo(page)
        result = await page.service.run_photos(
            page.request, page.vault.verify, page.form.fields.get("subject_id", ""), photo,
            tenant=tenant)
    except (InvalidInput, NotFound) as error:
        return await try_page(page, error=str(error), status=422)
    page.service.metrics.match("verify", result.match)
    return await try_page(page, verified=result)


async def identify(page: Page) -> Response:
    tenant = page.tenant()
    text = page.form.fields.get("top_k", "").strip() or str(DEFAULT_TOP_K)
    try:
        if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
            raise InvalidInput(f"top k is a whole number from 1 to {MAX_TOP_K}")
        photo = _one_photo(page)
        result = await page.service.run_photos(page.request, page.vault.identify, photo,
                                               tenant=tenant, top_k=int(text))
    except InvalidInput as error:
        return await try_page(page, error=str(error), status=422)
    page.service.metrics.match("identify", result.best is not None)
    return await try_page(page, identified=result)
