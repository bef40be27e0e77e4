"""A tenant's answer policy (admin): what verify/identify reveal, and its thresholds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from faceseal.http.models import TenantPolicyRequest, TenantPolicyResponse
from faceseal.http.routes.common import ServiceDep, Tenant, View
from faceseal.http.strictjson import StrictJSONRoute

router = APIRouter(prefix="/v1/tenants/{tenant}/policy", tags=["tenants"],
                   route_class=StrictJSONRoute)


@router.get("", response_model=TenantPolicyResponse, operation_id="getTenantPolicy",
            summary="A tenant's answer policy (admin or auditor)")
async def get_policy(tenant: Tenant, view: View, service: ServiceDep) -> dict[str, Any]:
    policy = await service.run(view.tenant_policy, tenant)
    return policy.to_dict()


@router.put("", response_model=TenantPolicyResponse, operation_id="setTenantPolicy",
            summary="Set a tenant's answer policy (admin)")
async def set_policy(tenant: Tenant, body: TenantPolicyRequest, view: View,
                     service: ServiceDep) -> dict[str, Any]:
    """``disclosure``: ``band`` (decision and a coarse score, the default) or ``decision``;
    exact distances are never a tenant setting (they need the calibrator role). ``thresholds``:
    per model, within its bounds (a looser one than the model allows is refused with 422).
    Fields left out keep their value. Audited."""
    policy = await service.run(view.set_tenant_policy, tenant, disclosure_level=body.disclosure,
                               thresholds=body.thresholds or None)
    return policy.to_dict()
