"""Subjects of a tenant: enrol (encodings as JSON, or photos as multipart), list, erase."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, status

from faceseal.errors import InvalidInput
from faceseal.http.models import (
    EnrollEncodingsRequest,
    EnrollResponse,
    EraseResponse,
    SubjectsResponse,
)
from faceseal.http.multipart import read_form
from faceseal.http.routes.common import (
    FACE_INDEX,
    PHOTO,
    ServiceDep,
    SubjectId,
    Tenant,
    View,
    int_field,
    multipart_body,
)
from faceseal.http.strictjson import StrictJSONRoute

router = APIRouter(prefix="/v1/tenants/{tenant}/subjects", tags=["subjects"],
                   route_class=StrictJSONRoute)


@router.get("", response_model=SubjectsResponse, operation_id="listSubjects",
            summary="List a tenant's subjects (enroller)")
async def list_subjects(tenant: Tenant, view: View, service: ServiceDep) -> dict[str, Any]:
    found = await service.run(view.subjects, tenant=tenant)
    return {"tenant": tenant, "subjects": [s.to_dict() for s in found]}


@router.post("/{subject_id}/templates", response_model=EnrollResponse,
             status_code=status.HTTP_201_CREATED, operation_id="enrollEncodings",
             summary="Enrol encodings for a subject (enroller)")
async def enroll_encodings(tenant: Tenant, subject_id: SubjectId, body: EnrollEncodingsRequest,
                           view: View, service: ServiceDep) -> dict[str, Any]:
    """Seal the encodings as templates of the subject (created if new). All or nothing: one
    encoding of the wrong dimension and nothing is written."""
    sources = [np.asarray(encoding, dtype=np.float64) for encoding in body.encodings]
    result = await service.run(view.enroll, subject_id, sources, tenant=tenant,
                               model=body.model)
    return result.to_dict()


@router.post("/{subject_id}/photos", response_model=EnrollResponse,
             status_code=status.HTTP_201_CREATED, operation_id="enrollPhotos",
             summary="Enrol photos for a subject (enroller)",
             openapi_extra=multipart_body(
                 {"photo": {"type": "array", "items": PHOTO, "minItems": 1, "maxItems": 10},
                  "face_index": FACE_INDEX}, ["photo"]))
async def enroll_photos(tenant: Tenant, subject_id: SubjectId, request: Request, view: View,
                        service: ServiceDep) -> dict[str, Any]:
    """Encode each photo (one face each, or the face ``face_index`` picks) and seal the
    encodings. All or nothing: one photo without a usable face and nothing is written."""
    form = await read_form(request.headers.get("content-type"), request.stream(),
                           file_fields={"photo": service.settings.max_photos},
                           text_fields=frozenset({"face_index"}))
    photos = form.files.get("photo", [])
    if not photos:
        raise InvalidInput("the upload has no photo (field 'photo')")
    face_index = int_field(form.fields, "face_index", low=0, high=1000)
    try:
        result = await service.run_photos(request, view.enroll, subject_id, list(photos),
                                          tenant=tenant, face_index=face_index)
    finally:
        photos.clear()
    return result.to_dict()


@router.delete("/{subject_id}", response_model=EraseResponse, operation_id="eraseSubject",
               summary="Erase a subject and destroy its key material (enroller)")
async def erase_subject(tenant: Tenant, subject_id: SubjectId, view: View,
                        service: ServiceDep) -> dict[str, Any]:
    result = await service.run(view.erase, subject_id, tenant=tenant)
    return result.to_dict()
