"""Subjects of a tenant (enroller): list and search, enrol from photos, erase with a
confirmation that names what erasure does."""

from __future__ import annotations

from starlette.responses import Response

from faceseal.access.roles import ERASE
from faceseal.encoders.dlib_resnet import LARGEST, FaceChoice
from faceseal.errors import Conflict, InvalidInput, NotFound
from faceseal.http.console.web import Page

MAX_FACE_INDEX = 1000


def _page_number(page: Page) -> int:
    text = page.request.query_params.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1


async def list_subjects(page: Page, *, enrolled: object = None, error: str | None = None,
                        status: int = 200) -> Response:
    tenant = page.tenant()
    query = page.request.query_params.get("q", "")
    found = await page.service.run(page.vault.subjects, tenant=tenant)
    if query:
        needle = query.casefold()
        found = [s for s in found if needle in s.subject_id.casefold()]
    size = page.console.settings.page_size
    number = _page_number(page)
    pages = max(1, -(-len(found) // size))
    number = min(number, pages)
    shown = found[(number - 1) * size:number * size]
    return page.render("subjects.html", status, title="Subjects", tenant=tenant, query=query,
                       subjects=shown, total=len(found), page_number=number, pages=pages,
                       enrolled=enrolled, error=error,
                       max_photos=page.service.settings.max_photos)


async def subjects(page: Page) -> Response:
    return await list_subjects(page)


async def enrol(page: Page) -> Response:
    """Photos in, templates out; the page says which face of each photo was used."""
    tenant = page.tenant()
    subject_id = page.form.fields.get("subject_id", "")
    try:
        face_index = _face_index(page.form.fields.get("face_index", ""))
        if not page.form.files:
            raise InvalidInput("choose at least one photo")
        result = await page.service.run_photos(page.request, page.vault.enroll, subject_id,
                                               list(page.form.files), tenant=tenant,
                                               face_index=face_index)
    except (InvalidInput, NotFound, Conflict) as error:
        return await list_subjects(page, error=str(error), status=422)
    if face_index is None:
        face = "the only face found"
    elif face_index == LARGEST:
        face = "the largest face (others ignored)"
    else:
        face = f"face {face_index} (counting from the left, from 0)"
    return await list_subjects(page, enrolled={"result": result, "face": face})


def _face_index(text: str) -> FaceChoice:
    text = text.strip().lower()
    if not text:
        return None
    if text == LARGEST:
        return "largest"
    if not text.isdigit() or int(text) > MAX_FACE_INDEX:
        raise InvalidInput(f'the face is "largest" or a number from 0 to {MAX_FACE_INDEX}')
    return int(text)


async def confirm_erase(page: Page) -> Response:
    page.require(ERASE)
    tenant = page.tenant()
    subject_id = page.request.query_params.get("subject_id", "")
    return page.render("erase.html", title="Erase a subject", tenant=tenant,
                       subject_id=subject_id)


async def erase(page: Page) -> Response:
    tenant = page.tenant()
    subject_id = page.form.fields.get("subject_id", "")
    if page.form.fields.get("confirm") != "erase":
        return page.render("erase.html", 422, title="Erase a subject", tenant=tenant,
                           subject_id=subject_id,
                           error="tick the box to confirm that the erasure is irreversible")
    result = await page.service.run(page.vault.erase, subject_id, tenant=tenant)
    return page.render("erased.html", title="Subject erased", result=result)

