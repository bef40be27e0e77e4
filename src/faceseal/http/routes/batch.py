"""Batch operations: bulk enrolment, and 1:N identify of many probes in one scan of the gallery.
Same roles and the same audit as the single operations (``Vault.enroll_many``,
``Vault.identify_many``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, status

from faceseal.errors import InvalidEncoding
from faceseal.http.models import (
    BulkEnrollRequest,
    BulkEnrollResponse,
    IdentifyBatchRequest,
    IdentifyBatchResponse,
)
from faceseal.http.routes.common import ServiceDep, Tenant, View
from faceseal.http.strictjson import StrictJSONRoute
from faceseal.vault.results import IdentifyResult

router = APIRouter(prefix="/v1/tenants/{tenant}/batch", tags=["batch"],
                   route_class=StrictJSONRoute)


@router.post("/enroll", response_model=BulkEnrollResponse, status_code=status.HTTP_201_CREATED,
             operation_id="enrollMany",
             summary="Bulk enrolment: one template per item, all or nothing (enroller)")
async def enroll_many(tenant: Tenant, body: BulkEnrollRequest, view: View,
                      service: ServiceDep) -> dict[str, Any]:
    subject_ids = [t.subject_id for t in body.templates]
    matrix = _matrix([t.encoding for t in body.templates])
    try:
        result = await service.run(view.enroll_many, subject_ids, matrix, tenant=tenant,
                                   model=body.model)
    finally:
        matrix.fill(0.0)
    return result.to_dict()


@router.post("/identify", response_model=IdentifyBatchResponse, operation_id="identifyMany",
             summary="1:N identify of many encodings in one scan of the gallery (identifier)")
async def identify_many(tenant: Tenant, body: IdentifyBatchRequest, view: View,
                        service: ServiceDep) -> dict[str, Any]:
    matrix = _matrix(body.encodings)
    try:
        results: list[IdentifyResult] = await service.run(
            view.identify_many, matrix, tenant=tenant, top_k=body.top_k,
            threshold=body.threshold, model=body.model)
    finally:
        matrix.fill(0.0)
    for result in results:
        service.metrics.match("identify", result.best is not None)
    return {"results": [r.to_dict() for r in results]}


def _matrix(rows: list[list[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The rows as one float64 matrix; rows of different lengths are a bad request."""
    lengths = {len(row) for row in rows}
    if len(lengths) != 1:
        raise InvalidEncoding("every encoding of a batch must have the same dimension, got "
                              f"{', '.join(map(str, sorted(lengths)[:5]))}")
    return np.array(rows, dtype=np.float64)
