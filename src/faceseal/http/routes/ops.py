"""For operators and orchestrators: liveness, readiness, metrics. No API key, no audit event:
none of them reads or returns biometric data or identities."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from faceseal.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from faceseal.http.models import HealthResponse, ReadinessResponse
from faceseal.http.routes.common import ServiceDep
from faceseal.http.strictjson import StrictJSONRoute

router = APIRouter(tags=["operations"], route_class=StrictJSONRoute)


@router.get("/healthz", response_model=HealthResponse, operation_id="health",
            summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadinessResponse, operation_id="ready",
            summary="Readiness: store, key provider and audit log reachable; change log followed",
            responses={503: {"model": ReadinessResponse,
                             "description": "Not ready: a check is unavailable."}})
async def ready(service: ServiceDep) -> Response:
    readiness = await service.run(service.vault.readiness)
    body = ReadinessResponse(ready=readiness.ready, checks=readiness.checks,
                             caught_up=readiness.behind == 0, changes_behind=readiness.behind,
                             shards=readiness.shards or None)
    return JSONResponse(body.model_dump(exclude_none=True),
                        status_code=200 if readiness.ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=PlainTextResponse,
            summary="Prometheus metrics (text format 0.0.4)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)
