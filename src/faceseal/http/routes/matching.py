"""1:1 verify and 1:N identify, with an encoding (JSON) or a photo (multipart) as the probe."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from faceseal.errors import InvalidInput
from faceseal.http.models import (
    IdentifyEncodingRequest,
    IdentifyResponse,
    VerifyEncodingRequest,
    VerifyResponse,
)
from faceseal.http.multipart import Form, read_form
from faceseal.http.routes.common import (
    FACE_INDEX,
    PHOTO,
    THRESHOLD,
    ServiceDep,
    SubjectId,
    Tenant,
    View,
    int_field,
    multipart_body,
    threshold_field,
)
from faceseal.http.strictjson import StrictJSONRoute
from faceseal.vault.results import IdentifyResult, VerifyResult
from faceseal.vault.vault import MAX_TOP_K

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["matching"], route_class=StrictJSONRoute)

TOP_K = {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5,
         "description": "How many subjects to return, closest first."}


@router.post("/subjects/{subject_id}/verify", response_model=VerifyResponse,
             operation_id="verifyEncoding", summary="1:1 verify an encoding (verifier)")
async def verify_encoding(tenant: Tenant, subject_id: SubjectId, body: VerifyEncodingRequest,
                          view: View, service: ServiceDep) -> dict[str, Any]:
    """Is the probe the claimed subject? Compared with each of its templates; the closest
    decides (``match``: distance <= threshold)."""
    probe = np.asarray(body.encoding, dtype=np.float64)
    result: VerifyResult = await service.run(view.verify, subject_id, probe, tenant=tenant,
                                             threshold=body.threshold, model=body.model)
    service.metrics.match("verify", result.match)
    return result.to_dict()


@router.post("/subjects/{subject_id}/verify/photo", response_model=VerifyResponse,
             operation_id="verifyPhoto", summary="1:1 verify a photo (verifier)",
             openapi_extra=multipart_body(
                 {"photo": PHOTO, "face_index": FACE_INDEX, "threshold": THRESHOLD}, ["photo"]))
async def verify_photo(tenant: Tenant, subject_id: SubjectId, request: Request, view: View,
                       service: ServiceDep) -> dict[str, Any]:
    form = await _probe_form(request, frozenset({"face_index", "threshold"}))
    photo = _one_photo(form)
    result: VerifyResult = await service.run_photos(
        request, view.verify, subject_id, photo, tenant=tenant,
        threshold=threshold_field(form.fields),
        face_index=int_field(form.fields, "face_index", low=0, high=1000))
    service.metrics.match("verify", result.match)
    return result.to_dict()


@router.post("/identify", response_model=IdentifyResponse, operation_id="identifyEncoding",
             summary="1:N identify an encoding (identifier)")
async def identify_encoding(tenant: Tenant, body: IdentifyEncodingRequest, view: View,
                            service: ServiceDep) -> dict[str, Any]:
    """Who among the tenant's subjects is closest to the probe? The ``top_k`` closest subjects,
    each with its distance and ``match`` flag, closest first."""
    probe = np.asarray(body.encoding, dtype=np.float64)
    result: IdentifyResult = await service.run(view.identify, probe, tenant=tenant,
                                               top_k=body.top_k, threshold=body.threshold,
                                               model=body.model)
    service.metrics.match("identify", result.best is not None)
    return result.to_dict()


@router.post("/identify/photo", response_model=IdentifyResponse, operation_id="identifyPhoto",
             summary="1:N identify a photo (identifier)",
             openapi_extra=multipart_body(
                 {"photo": PHOTO, "face_index": FACE_INDEX, "top_k": TOP_K,
                  "threshold": THRESHOLD}, ["photo"]))
async def identify_photo(tenant: Tenant, request: Request, view: View,
                         service: ServiceDep) -> dict[str, Any]:
    form = await _probe_form(request, frozenset({"face_index", "top_k", "threshold"}))
    photo = _one_photo(form)
    top_k = int_field(form.fields, "top_k", low=1, high=MAX_TOP_K)
    result: IdentifyResult = await service.run_photos(
        request, view.identify, photo, tenant=tenant, top_k=5 if top_k is None else top_k,
        threshold=threshold_field(form.fields),
        face_index=int_field(form.fields, "face_index", low=0, high=1000))
    service.metrics.match("identify", result.best is not None)
    return result.to_dict()


async def _probe_form(request: Request, fields: frozenset[str]) -> Form:
    return await read_form(request.headers.get("content-type"), request.stream(),
                           file_fields={"photo": 1}, text_fields=fields)


def _one_photo(form: Form) -> bytes:
    photos = form.files.get("photo", [])
    if len(photos) != 1:
        raise InvalidInput("the upload needs exactly one photo (field 'photo')")
    return photos[0]
