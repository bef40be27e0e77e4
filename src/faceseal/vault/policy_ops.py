"""A tenant's answer policy: what verify/identify reveal, and its configured thresholds.

A mixin of :class:`~faceseal.vault.Vault` (like :mod:`faceseal.vault.access_ops`); the rules
themselves live in :mod:`faceseal.vault.disclosure` and :mod:`faceseal.vault.answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from faceseal.access.roles import TENANTS_LIST, TENANTS_POLICY
from faceseal.vault import disclosure
from faceseal.vault.disclosure import TenantPolicy
from faceseal.vault.ids import check_id

if TYPE_CHECKING:
    from faceseal.audit.events import DetailValue
    from faceseal.matching.models import ModelSpec
    from faceseal.storage.base import TemplateStore
    from faceseal.vault.answers import AnswerRules
    from faceseal.vault.guard import Operation


class PolicyOperations:
    """Reading and setting a tenant's :class:`~faceseal.vault.disclosure.TenantPolicy`."""

    if TYPE_CHECKING:  # provided by Vault
        _store: TemplateStore
        _models: dict[str, ModelSpec]
        _answers: AnswerRules

        def _check_open(self) -> None: ...

        def _operation(self, action: str, *, tenant: str | None,
                       subject_id: str | None = None,
                       detail: dict[str, DetailValue] | None = None,
                       ) -> AbstractContextManager[Operation]: ...

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        """The tenant's disclosure level and configured thresholds (admin or auditor)."""
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(TENANTS_LIST, tenant=tenant) as op:
            policy = self._answers.policy(tenant)
            with op.transaction():
                op.record(detail={"policy": "read"})
            return policy

    def set_tenant_policy(self, tenant: str, *, disclosure_level: str | None = None,
                          thresholds: Mapping[str, float] | None = None) -> TenantPolicy:
        """Set what answers reveal to principals without the calibrator role (``band``, the
        default, or ``decision``) and/or the tenant's thresholds per model (each within its
        model's bounds; given models replace their old value, others are kept). Needs admin;
        audited with the old and the new values."""
        self._check_open()
        check_id("tenant", tenant)
        level = None if disclosure_level is None else disclosure.check_level(disclosure_level)
        given = {} if thresholds is None else disclosure.check_thresholds(dict(thresholds),
                                                                          self._models)
        with self._operation(TENANTS_POLICY, tenant=tenant) as op:
            old = self._answers.policy(tenant)
            new = TenantPolicy(tenant, level or old.disclosure, {**old.thresholds, **given})
            with op.transaction():
                self._answers.save_policy(new)
                op.record(detail={
                    "disclosure": new.disclosure, "previous_disclosure": old.disclosure,
                    "thresholds": [f"{k}={v:g}" for k, v in sorted(new.thresholds.items())],
                    "previous_thresholds": [f"{k}={v:g}"
                                            for k, v in sorted(old.thresholds.items())]})
            return new
