"""Principals (admin): add one (its API key is in the answer, once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from faceseal.http.models import (
    PRINCIPAL_NAME_PATTERN,
    AddPrincipalRequest,
    NewPrincipalResponse,
    PrincipalModel,
    PrincipalsResponse,
)
from faceseal.http.routes.common import ServiceDep, View
from faceseal.http.strictjson import StrictJSONRoute

router = APIRouter(prefix="/v1/principals", tags=["principals"], route_class=StrictJSONRoute)

Name = Annotated[str, Path(pattern=PRINCIPAL_NAME_PATTERN, description="The principal's name.")]


@router.get("", response_model=PrincipalsResponse, operation_id="listPrincipals",
            summary="List principals in your scope (admin)")
async def list_principals(view: View, service: ServiceDep) -> dict[str, Any]:
    found = await service.run(view.principals)
    return {"principals": [p.to_dict() for p in found]}


@router.post("", response_model=NewPrincipalResponse, status_code=status.HTTP_201_CREATED,
             operation_id="addPrincipal", summary="Add a principal and issue its API key (admin)")
async def add_principal(body: AddPrincipalRequest, view: View,
                        service: ServiceDep) -> dict[str, Any]:
    """The answer holds the new API key, this once: faceseal stores only its hash. Scope: the
    tenant given, every tenant with ``all_tenants``, else admins and auditors every tenant and
    other roles the ``default`` tenant."""
    created = await service.run(view.add_principal, body.name, [str(role) for role in body.roles],
                                tenant=body.tenant, all_tenants=body.all_tenants)
    return created.to_dict()


@router.delete("/{name}", response_model=PrincipalModel, operation_id="revokePrincipal",
               summary="Revoke a principal's API key, at once (admin)")
async def revoke_principal(name: Name, view: View, service: ServiceDep) -> dict[str, Any]:
    revoked = await service.run(view.revoke_principal, name)
    return revoked.to_dict()
