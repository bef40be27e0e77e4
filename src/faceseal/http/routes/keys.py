"""Key custody (admin over every tenant): status, KEK rotation and rewrap, data-key rotation,
retirement. Moving the KEK to another provider (``keys migrate``) stays with the CLI on the
host: it needs the target provider's credentials there.

Key operations run one at a time across every process of the vault (the vault holds a lease in
the store, ``faceseal.vault.key_lease``): a second one while another is running gets 409. A
data-key rotation of a large vault can outlast the request's time limit; it then goes on in the
server, and calling it again resumes or finishes it, as ``faceseal keys rotate --data`` does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from faceseal.http.models import (
    DataRotationResponse,
    KekRotationResponse,
    KeyStatusResponse,
    RetirementResponse,
    RetireRequest,
)
from faceseal.http.routes.common import ServiceDep, View
from faceseal.http.strictjson import StrictJSONRoute

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictJSONRoute)


@router.get("", response_model=KeyStatusResponse, operation_id="keyStatus",
            summary="Key status: KEK versions, data keys, retirement, rotation (admin)")
async def key_status(view: View, service: ServiceDep) -> dict[str, Any]:
    status = await service.run(view.key_status)
    return status.to_dict()


@router.post("/kek/rotate", response_model=KekRotationResponse, operation_id="rotateKek",
             summary="New KEK version; every data key rewrapped, no record touched (admin)")
async def rotate_kek(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(view.rotate_kek)
    return result.to_dict()


@router.post("/kek/rewrap", response_model=KekRotationResponse, operation_id="rewrapDataKeys",
             summary="Rewrap data keys still under an older KEK version (admin)")
async def rewrap(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(view.rewrap_data_keys)
    return result.to_dict()


@router.post("/data/rotate", response_model=DataRotationResponse, operation_id="rotateDataKey",
             summary="New data-key version; every record re-encrypted (admin; resumable)")
async def rotate_data(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(view.rotate_data_keys)
    return result.to_dict()


@router.post("/data/retire", response_model=RetirementResponse, operation_id="retireDataKeys",
             summary="Refuse data-key versions below a version, once no record needs them "
                     "(admin)")
async def retire(body: RetireRequest, view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(view.retire_data_keys, body.below)
    return result.to_dict()

