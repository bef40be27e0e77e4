"""The audit log (auditor): the newest events, and verifying the whole chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from faceseal.http.models import ID_PATTERN, AuditEventsResponse, ChainReportModel
from faceseal.http.routes.common import ServiceDep, View
from faceseal.http.strictjson import StrictJSONRoute
from faceseal.vault.access_ops import MAX_TAIL
from faceseal.vault.ids import MAX_ID_LENGTH

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=StrictJSONRoute)


@router.get("/events", response_model=AuditEventsResponse, operation_id="auditTail",
            summary="The newest audit events, oldest first (auditor)")
async def audit_tail(
    view: View, service: ServiceDep,
    count: Annotated[int, Query(ge=1, le=MAX_TAIL, description="How many events.")] = 20,
    tenant: Annotated[str | None, Query(
        min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
        description="Only this tenant's events (a tenant-scoped auditor sees only its own).",
    )] = None,
) -> dict[str, Any]:
    events = await service.run(view.audit_tail, count, tenant=tenant)
    return {"events": events}


@router.get("/verify", response_model=ChainReportModel, operation_id="auditVerify",
            summary="Verify the audit log's MAC chain and checkpoints (all-tenant auditor)")
async def audit_verify(view: View, service: ServiceDep) -> dict[str, Any]:
    """``ok`` false names the first broken event: an edit, a deletion, a reordering or a
    truncation of the log."""
    report = await service.run(view.audit_verify)
    return report.to_dict()
