"""Keys (all-tenant admin): status, rotate the KEK, rewrap, rotate data keys (in the
background, with progress), retire old data-key versions. Locations (paths, URIs) stay on the
host (``faceseal keys status``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import RedirectResponse, Response

from faceseal.access.roles import KEYS_ROTATE
from faceseal.errors import Conflict, InvalidInput
from faceseal.http.console.web import Page


async def keys_page(page: Page, *, done: str | None = None, error: str | None = None,
                    status: int = 200) -> Response:
    key_status = await page.service.run(page.vault.key_status)
    return page.render("keys.html", status, title="Keys", keys=key_status,
                       job=page.console.jobs.current, done=done, error=error)


async def keys(page: Page) -> Response:
    return await keys_page(page)


async def _run(page: Page, work: Callable[[], Any], describe: Callable[[Any], str]) -> Response:
    try:
        result = await page.service.run(work)  # the vault runs key operations one at a time
    except (Conflict, InvalidInput) as error:
        return await keys_page(page, error=str(error), status=409)
    return await keys_page(page, done=describe(result))


async def rotate_kek(page: Page) -> Response:
    return await _run(page, page.vault.rotate_kek,
                      lambda r: f"KEK version {r.kek_version} is active; "
                                f"{r.data_keys_rewrapped} data key(s) rewrapped")


async def rewrap(page: Page) -> Response:
    return await _run(page, page.vault.rewrap_data_keys,
                      lambda r: f"{r.data_keys_rewrapped} data key(s) rewrapped")


async def rotate_data(page: Page) -> Response:
    if not page.may(KEYS_ROTATE):  # the vault refuses (and audits) it, in the foreground
        await page.service.run(page.vault.rotate_data_keys)
    try:
        page.console.jobs.start_data_rotation(page.vault)
    except Conflict as error:
        return await keys_page(page, error=str(error), status=409)
    # To the page by GET: it reloads itself while the job runs, which must not post again.
    return RedirectResponse(f"{page.base}/keys", status_code=303)


async def retire(page: Page) -> Response:
    text = page.form.fields.get("below", "").strip()
    if not text.isdigit() or not 0 < int(text) < 2**31:
        return await keys_page(page, error="retire below a data-key version (a whole number)",
                               status=422)
    below = int(text)
    return await _run(page, lambda: page.vault.retire_data_keys(below),
                      lambda r: f"data-key versions below {r.min_decrypt_version} are retired")
