"""Key custody (admin over every tenant): status, KEK rotation and rewrap, data-key rotation,
retirement. Moving the KEK to another provider (``keys migrate``) stays with the CLI on the
host: it needs the target provider's credentials there.

Key operations run one at a time: a second one while another is running gets 409 (a data-key
rotation of a large vault can outlast the request's time limit; it then goes on in the server,
and calling it again resumes or finishes it, as ``faceseal keys rotate --data`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

from faceseal.access.roles import Role
from faceseal.errors import Conflict
from faceseal.http.context import Service
from faceseal.http.models import (
    DataRotationResponse,
    KekRotationResponse,
    KeyStatusResponse,
    RetirementResponse,
    RetireRequest,
)
from faceseal.http.routes.common import ServiceDep, View
from faceseal.http.strictjson import StrictJSONRoute
from faceseal.vault import Vault

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictJSONRoute)
T = TypeVar("T")


@router.get("", response_model=KeyStatusResponse, operation_id="keyStatus",
            summary="Key status: KEK versions, data keys, retirement, rotation (admin)")
async def key_status(view: View, service: ServiceDep) -> dict[str, Any]:
    status = await service.run(view.key_status)
    return status.to_dict()


@router.post("/kek/rotate", response_model=KekRotationResponse, operation_id="rotateKek",
             summary="New KEK version; every data key rewrapped, no record touched (admin)")
async def rotate_kek(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(_one_at_a_time, service, view, view.rotate_kek)
    return result.to_dict()


@router.post("/kek/rewrap", response_model=KekRotationResponse, operation_id="rewrapDataKeys",
             summary="Rewrap data keys still under an older KEK version (admin)")
async def rewrap(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(_one_at_a_time, service, view, view.rewrap_data_keys)
    return result.to_dict()


@router.post("/data/rotate", response_model=DataRotationResponse, operation_id="rotateDataKey",
             summary="New data-key version; every record re-encrypted (admin; resumable)")
async def rotate_data(view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(_one_at_a_time, service, view, view.rotate_data_keys)
    return result.to_dict()


@router.post("/data/retire", response_model=RetirementResponse, operation_id="retireDataKeys",
             summary="Refuse data-key versions below a version, once no record needs them "
                     "(admin)")
async def retire(body: RetireRequest, view: View, service: ServiceDep) -> dict[str, Any]:
    result = await service.run(_one_at_a_time, service, view,
                               lambda: view.retire_data_keys(body.below))
    return result.to_dict()


def _one_at_a_time(service: Service, view: Vault, work: Callable[[], T]) -> T:
    """Run a key operation, refusing (409) while another one runs. Only for a principal the
    vault would let through: anyone else goes straight to the vault's refusal (403, audited),
    so that nobody else learns whether a key operation is running."""
    principal = view.principal
    if principal is None or Role.ADMIN not in principal.roles or principal.tenant is not None:
        return work()
    if not service.key_lock.acquire(blocking=False):
        raise Conflict("another key operation is running; try again when it has finished")
    try:
        return work()
    finally:
        service.key_lock.release()
