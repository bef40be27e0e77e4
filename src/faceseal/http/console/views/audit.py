"""The audit log (auditor): the newest events, filtered and paged; verifying the chain with any
broken events marked; exporting as JSON Lines. Every read goes through the vault and is itself
an audit event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response, StreamingResponse

from faceseal.access.roles import AUDIT_VERIFY
from faceseal.errors import InvalidInput
from faceseal.http.console.web import Page

FILTERS = ("principal", "action", "subject", "outcome", "since", "until")


def _time(text: str, name: str) -> float | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (UTC) as a Unix time."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name} is a date (YYYY-MM-DD) or a date and time "
                           "(YYYY-MM-DDTHH:MM), UTC") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _matches(event: dict[str, Any], wanted: dict[str, str], since: float | None,
             until: float | None) -> bool:
    for field, key in (("principal", "principal"), ("action", "action"),
                       ("subject", "subject_id"), ("outcome", "outcome")):
        needle = wanted[field].casefold()
        if needle and needle not in str(event.get(key) or "").casefold():
            return False
    at = float(event["occurred_at"])
    return (since is None or at >= since) and (until is None or at < until)


async def audit_page(page: Page, *, report: Any = None, status: int = 200) -> Response:
    params = page.request.query_params
    source = page.form.fields if page.request.method == "POST" else params
    wanted = {name: str(source.get(name, ""))[:256] for name in FILTERS}
    tenant = str(source.get("tenant", "")) or None
    error = None
    try:
        since = _time(wanted["since"], "since")
        until = _time(wanted["until"], "until")
    except InvalidInput as problem:
        error, since, until = str(problem), None, None
    window = page.console.settings.audit_window
    events = await page.service.run(page.vault.audit_tail, window, tenant=tenant)
    events.reverse()  # newest first
    found = [e for e in events if _matches(e, wanted, since, until)]
    size = page.console.settings.page_size
    text = params.get("page", "1")
    number = int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1
    pages = max(1, -(-len(found) // size))
    number = min(number, pages)
    broken: set[int] = set()
    if report is not None:
        broken = {b.seq for b in report.breaks}
        if report.first_broken_seq is not None:
            broken.add(report.first_broken_seq)
    return page.render("audit.html", status, title="Audit",
                       events=found[(number - 1) * size:number * size], total=len(found),
                       window=window, filters=wanted, tenant=tenant or "", page_number=number,
                       pages=pages, report=report, broken=broken, error=error,
                       can_verify=page.may(AUDIT_VERIFY),
                       query=_query(wanted, tenant))


def _query(wanted: dict[str, str], tenant: str | None) -> str:
    return urlencode({k: v for k, v in {**wanted, "tenant": tenant or ""}.items() if v})


async def audit(page: Page) -> Response:
    return await audit_page(page)


async def verify_chain(page: Page) -> Response:
    report = await page.service.run(page.vault.audit_verify)
    return await audit_page(page, report=report)


async def export(page: Page) -> Response:
    """Every event since ``since`` (all of them without it) as JSON Lines, streamed; the
    export is audited before the first line."""
    params = page.request.query_params
    since = _time(params.get("since", ""), "since")
    tenant = params.get("tenant") or None
    events = await page.service.run(page.vault.audit_export, since=since, tenant=tenant)

    def lines() -> Iterator[bytes]:
        for event in events:
            yield json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
        "Content-Disposition": 'attachment; filename="faceseal-audit.jsonl"'})
