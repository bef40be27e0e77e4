"""The terms of one match query: threshold, disclosure, budget and probe checks, in one place.

verify and identify ask :class:`AnswerRules` the same questions in the same order, so that both
refuse the same things the same way:

1. :meth:`AnswerRules.terms` -- the tenant's configured threshold and the one the query uses
   (stricter only), and what the answer may reveal to this principal;
2. :meth:`AnswerRules.admit` -- the principal must have room in its budget for each probe of
   the call, which it then owes (charged in the transaction of the call's audit event, whatever
   the outcome); then every probe must be plausible for its model;
3. the vault matches, exactly, and :meth:`AnswerRules.reveal_*` presents the result, charging the
   budget of each subject the caller gets to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceseal.access.counters import WindowCounters
from faceseal.access.principals import Principal, authorize
from faceseal.access.roles import DISTANCES_EXACT
from faceseal.audit.integrity import RowAuthenticator
from faceseal.matching import thresholds
from faceseal.matching.models import ModelSpec
from faceseal.matching.plausibility import check_probe
from faceseal.storage.base import TemplateStore
from faceseal.vault import disclosure
from faceseal.vault.budgets import QueryBudgets
from faceseal.vault.guard import Charge, Operation
from faceseal.vault.results import Disclosure, IdentifyResult, VerifyResult


@dataclass(frozen=True)
class Terms:
    #: The tenant's configured threshold: what counts as a genuine match (and as activity).
    configured: float
    #: The threshold this query decides with (the configured one or a stricter one).
    threshold: float
    disclosure: Disclosure


class AnswerRules:
    """Threshold, disclosure, budget and plausibility rules of one vault (shared by its views)."""

    def __init__(self, store: TemplateStore, models: dict[str, ModelSpec],
                 budgets: QueryBudgets, auth: RowAuthenticator | None = None) -> None:
        self._store = store
        self._models = models
        self.budgets = budgets
        self._auth = auth  # signs and checks the tenant policies kept in the store

    def use_counters(self, counters: WindowCounters) -> None:
        """Count budgets in ``counters`` from now on (every view of the vault shares this)."""
        self.budgets = QueryBudgets(counters, self.budgets.limits)

    def policy(self, tenant: str) -> disclosure.TenantPolicy:
        return disclosure.load_policy(self._store, tenant, self._models, self._auth)

    def save_policy(self, policy: disclosure.TenantPolicy) -> None:
        disclosure.save_policy(self._store, policy, self._auth)

    def terms(self, principal: Principal, tenant: str, spec: ModelSpec,
              requested: float | None) -> Terms:
        policy = self.policy(tenant)
        configured = policy.threshold(spec)
        level = (disclosure.EXACT if authorize(principal, DISTANCES_EXACT, tenant).allowed
                 else policy.disclosure)
        return Terms(configured, thresholds.effective(requested, configured), level)

    def admit(self, op: Operation, spec: ModelSpec,
              probes: Sequence[np.ndarray[Any, Any]] | np.ndarray[Any, Any]) -> None:
        """Refuse at once a principal without room for one query per probe; owe those queries
        (paid in the transaction of the operation's event, whatever its outcome); then refuse
        any implausible probe."""
        name, cost, budgets = op.principal.name, len(probes), self.budgets
        budgets.check_principal(name, cost)
        op.owe(Charge(lambda: budgets.charge_principal(name, cost),
                      rolls_back=budgets.charges_join_transactions))
        for probe in probes:
            check_probe(probe, spec)

    def reveal_verify(self, result: VerifyResult, terms: Terms) -> VerifyResult:
        self.budgets.charge_subjects(result.tenant, [result.subject_id])
        return disclosure.present_verify(result, terms.disclosure)

    def reveal_identify(self, results: Sequence[IdentifyResult],
                        terms: Terms) -> list[IdentifyResult]:
        shown = [disclosure.present_identify(r, terms.disclosure) for r in results]
        for result in shown:
            self.budgets.charge_subjects(result.tenant, [c.subject_id for c in result.candidates])
        return shown
