"""Query budgets: how many matching queries a principal, and a subject, may see per window.

Disclosure bands leave an attacker one bit per query near a face; budgets bound how many such
bits (and how many probes of any kind) a key can collect. Two budgets, each over a sliding
window:

* per principal: every verify call and every probe of an identify (a batch counts each probe).
  A principal without room for the call is refused before any matching is done; the charge
  itself is made in the transaction of the call's audit event, whatever the outcome (a "not
  found" is information too), so each call costs one durable commit, not two;
* per subject: every verify of that subject, and every identify answer that *reveals* the subject
  (a candidate the caller gets to see), is charged.

Over budget the request is refused with :class:`~faceseal.errors.BudgetExceeded` (HTTP 429, CLI
exit 3) and its ``failed`` audit event is marked suspicious. The counts live in a
:class:`~faceseal.access.counters.WindowCounters`: in memory by default, shared by every replica
when the deployment plugs in a shared implementation, the same one the failed-authentication
limits use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from faceseal.access.counters import WindowCounters
from faceseal.errors import BudgetExceeded, InvalidInput

DEFAULT_WINDOW_SECONDS = 3600.0
#: A busy front end (about one query every two seconds, around the clock); raise it for more.
DEFAULT_PER_PRINCIPAL = 2000
#: Nobody is verified more than once a minute on average for an hour; below the 129 exact
#: answers that rebuild one encoding, so even a leaked calibrator key needs several windows.
DEFAULT_PER_SUBJECT = 60


@dataclass(frozen=True)
class BudgetLimits:
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    per_principal: int = DEFAULT_PER_PRINCIPAL
    per_subject: int = DEFAULT_PER_SUBJECT

    def __post_init__(self) -> None:
        if not (isinstance(self.window_seconds, int | float) and self.window_seconds > 0
                and math.isfinite(self.window_seconds)):
            raise InvalidInput("the budget window must be a positive number of seconds")
        for name in ("per_principal", "per_subject"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"budget {name} must be a positive integer")


class QueryBudgets:
    """Charges queries against :class:`BudgetLimits` in a :class:`WindowCounters`."""

    def __init__(self, counters: WindowCounters, limits: BudgetLimits) -> None:
        self._counters = counters
        self.limits = limits

    @property
    def charges_join_transactions(self) -> bool:
        """Whether a charge made inside a store transaction is undone when it rolls back."""
        return self._counters.joins_store_transactions

    def check_principal(self, principal: str, cost: int = 1) -> None:
        """Refuse, counting nothing, if ``cost`` more queries would take ``principal`` over its
        budget now. The charge itself is :meth:`charge_principal`, made later in the
        operation's own transaction (see :class:`faceseal.vault.answers.AnswerRules`)."""
        limit, window = self.limits.per_principal, self.limits.window_seconds
        # "cost more fit within limit" is "one more fits within limit - cost + 1".
        wait = (window if cost > limit
                else self._counters.retry_after(_key("principal", principal), limit - cost + 1,
                                                window))
        if wait is not None:
            raise self._principal_refusal(wait)

    def charge_principal(self, principal: str, cost: int = 1) -> None:
        """Count ``cost`` queries for ``principal``, or refuse (counting nothing)."""
        wait = self._counters.take(_key("principal", principal), self.limits.per_principal,
                                   self.limits.window_seconds, cost)
        if wait is not None:
            raise self._principal_refusal(wait)

    def _principal_refusal(self, wait: float) -> BudgetExceeded:
        return BudgetExceeded(
            f"query budget exceeded: at most {self.limits.per_principal} queries per "
            f"{self.limits.window_seconds:g} s for this principal; retry in {math.ceil(wait)} s")

    def charge_subjects(self, tenant: str, subject_ids: Iterable[str]) -> None:
        """Count one query against each subject, or refuse at the first one over budget."""
        for subject_id in subject_ids:
            wait = self._counters.take(_key("subject", tenant, subject_id),
                                       self.limits.per_subject, self.limits.window_seconds)
            if wait is not None:
                raise BudgetExceeded(
                    f"query budget exceeded: at most {self.limits.per_subject} queries per "
                    f"{self.limits.window_seconds:g} s may concern one subject; retry in "
                    f"{math.ceil(wait)} s")


def _key(*parts: str) -> str:
    # JSON keeps the parts apart whatever characters tenant and subject ids hold.
    return "budget:" + json.dumps(parts, separators=(",", ":"))
