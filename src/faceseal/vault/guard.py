"""The choke point: every vault operation is authenticated, authorised and audited here.

A facade method opens an :meth:`Guard.operation`; the guard re-checks the caller's key (so a
revocation takes effect at once), asks the permission table, and:

* on a refusal, writes the ``unauthenticated``/``denied`` event (committed) and raises;
* otherwise yields an :class:`Operation`. The operation's work runs inside
  :meth:`Operation.transaction` and calls :meth:`Operation.record` there, so the change and its
  ``ok`` event commit in the same store transaction, or neither does. Reads record their event
  the same way after computing the result and before returning it. If the event cannot be
  written the transaction rolls back and :class:`~faceseal.errors.AuditWriteFailed` propagates:
  fail-closed.
* when the work raises after authorisation (not found, bad input, an outage), a ``failed`` event
  naming the error code is written before the error reaches the caller; if even that cannot be
  written, the caller gets :class:`~faceseal.errors.AuditWriteFailed` instead (a "not found" is
  information too, and none is returned unrecorded).
* what an operation owes (:class:`Charge`: a matching query against the principal's budget) is
  paid in the transaction of its ``ok`` event, or else of its ``failed`` event; if it cannot be
  paid there, that refusal is what the caller gets, never the answer or error it did not pay for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from faceseal.access.principals import (
    NO_KEY,
    TAMPERED,
    Credential,
    Principal,
    authenticate,
    authorize,
    check_credential,
)
from faceseal.access.roles import AUTHENTICATE
from faceseal.access.sealing import PrincipalSeal
from faceseal.audit.events import (
    ANONYMOUS,
    OUTCOME_DENIED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_UNAUTHENTICATED,
    AuditEvent,
    DetailValue,
    check_request_id,
    new_request_id,
)
from faceseal.audit.log import AuditLog
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import (
    AccessDenied,
    AuditWriteFailed,
    AuthenticationFailed,
    FacesealError,
    StorageUnavailable,
)
from faceseal.storage.base import AuditRecord, TemplateStore
from faceseal.vault.integrity import NOT_UPGRADED

log = logging.getLogger(__name__)

REFUSED_MESSAGE = "the API key was refused (unknown, revoked or malformed)"
NO_KEY_MESSAGE = (
    "no API key: pass api_key= to Vault.open / Vault.as_key, or use --key-file FILE or "
    "$FACESEAL_API_KEY with the CLI"
)


@dataclass(frozen=True)
class Caller:
    """Who a vault view acts for: a remembered credential (or none) and an optional request id."""

    credential: Credential | None
    request_id: str | None = None


@dataclass(frozen=True)
class Charge:
    """A budget charge an operation owes whatever its outcome: made in the transaction of its
    ``ok`` event, or else in that of its ``failed`` event."""

    pay: Callable[[], None]
    #: Undone with the transaction it was made in (counts kept in the store itself); otherwise
    #: it stands once made.
    rolls_back: bool

    def __repr__(self) -> str:
        return f"Charge(rolls_back={self.rolls_back})"


@dataclass
class Operation:
    """One authorised operation. Its work calls :meth:`record` inside :meth:`transaction`."""

    guard: Guard
    principal: Principal
    role: str
    action: str
    tenant: str | None
    subject_id: str | None
    request_id: str
    committed: list[AuditRecord] = field(default_factory=list)
    #: What the operation owes (:meth:`owe`), until it is paid for good.
    owed: Charge | None = None
    _pending: list[AuditRecord] | None = None

    def owe(self, charge: Charge) -> None:
        """Charge this operation ``charge`` in its transaction, or in its failure's."""
        if self.owed is not None:
            raise RuntimeError("an operation owes one charge at most")
        self.owed = charge

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A store transaction for the change and its event (and what the operation owes, paid
        first: refused, nothing of the transaction happens); checkpoints follow the commit."""
        if self._pending is not None:
            raise RuntimeError("operation transactions do not nest")
        pending: list[AuditRecord] = []
        self._pending = pending
        try:
            with self.guard.store.transaction():
                owed = self.owed
                if owed is not None:
                    owed.pay()
                    if not owed.rolls_back:
                        self.owed = None  # it stands, whatever this transaction does next
                yield
        finally:
            self._pending = None
        self.owed = None  # committed with the event
        self.committed.extend(pending)
        for record in pending:
            self.guard.audit.committed(record)

    def record(
        self,
        *,
        subject_id: str | None = None,
        template_ids: tuple[str, ...] | list[str] = (),
        detail: dict[str, DetailValue] | None = None,
        tenant: str | None = None,
    ) -> AuditRecord:
        """Write this operation's ``ok`` event in the current transaction."""
        if self._pending is None:
            raise RuntimeError("Operation.record must be called inside Operation.transaction")
        record = self.guard.audit.append(self.event(
            OUTCOME_OK,
            subject_id=subject_id if subject_id is not None else self.subject_id,
            template_ids=tuple(template_ids), detail=detail or {},
            tenant=tenant if tenant is not None else self.tenant,
        ))
        self._pending.append(record)
        return record

    def event(self, outcome: str, *, subject_id: str | None = None,
              template_ids: tuple[str, ...] = (), detail: dict[str, DetailValue] | None = None,
              tenant: str | None = None) -> AuditEvent:
        return AuditEvent(
            principal=self.principal.name, role=self.role, action=self.action, outcome=outcome,
            tenant=tenant if tenant is not None else self.tenant,
            subject_id=subject_id if subject_id is not None else self.subject_id,
            template_ids=template_ids, request_id=self.request_id, detail=detail or {},
        )


class Guard:
    """Authentication, authorisation and auditing for one open vault (shared by its views)."""

    def __init__(self, store: TemplateStore, audit: AuditLog, seal: PrincipalSeal) -> None:
        self.store = store
        self.audit = audit
        self.seal = seal

    # --- credentials -----------------------------------------------------------------------------

    def bind(self, api_key: str | bytes | SecretBytes | None, *,
             request_id: str | None = None) -> tuple[Caller, Principal]:
        """Authenticate ``api_key`` or audit the refusal and raise
        :class:`~faceseal.errors.AuthenticationFailed`."""
        request_id = check_request_id(request_id)
        if not self.seal.current():
            raise AuthenticationFailed(NOT_UPGRADED)
        result = authenticate(self.store, self.seal, api_key)
        if result.failure is not None or result.principal is None or result.credential is None:
            self._refuse(AUTHENTICATE, result.failure or NO_KEY, key_id=result.key_id,
                         principal=result.principal, tenant=None, subject_id=None,
                         request_id=request_id)
        assert result.principal is not None  # for mypy: _refuse raised otherwise
        assert result.credential is not None
        return Caller(result.credential, request_id), result.principal

    def current(self, caller: Caller, action: str, tenant: str | None,
                subject_id: str | None) -> Principal:
        """The caller's principal as stored now; refusals are audited and raised."""
        if caller.credential is None:
            self._refuse(action, NO_KEY, key_id=None, principal=None, tenant=tenant,
                         subject_id=subject_id, request_id=caller.request_id)
        assert caller.credential is not None
        result = check_credential(self.store, self.seal, caller.credential)
        if result.failure is not None or result.principal is None:
            self._refuse(action, result.failure or NO_KEY, key_id=result.key_id,
                         principal=result.principal, tenant=tenant, subject_id=subject_id,
                         request_id=caller.request_id)
        assert result.principal is not None
        return result.principal

    def _refuse(self, action: str, reason: str, *, key_id: str | None,
                principal: Principal | None, tenant: str | None, subject_id: str | None,
                request_id: str | None) -> None:
        detail: dict[str, DetailValue] = {"reason": reason}
        if key_id is not None:
            detail["key_id"] = key_id  # the public half only; never the secret
        self.audit.append_now(AuditEvent(
            principal=principal.name if principal is not None else ANONYMOUS,
            role=principal.role_names if principal is not None else "",
            action=action, outcome=OUTCOME_UNAUTHENTICATED, tenant=tenant,
            subject_id=subject_id, request_id=request_id or new_request_id(), detail=detail,
        ))
        if reason == TAMPERED:
            log.warning("refused a key whose principal row fails its integrity check (key id "
                        "%s): the template store was written without the vault's key", key_id)
        else:
            log.info("refused a credential for %s: %s", action, reason)
        raise AuthenticationFailed(NO_KEY_MESSAGE if reason == NO_KEY else REFUSED_MESSAGE)

    # --- operations ------------------------------------------------------------------------------

    @contextmanager
    def operation(
        self,
        caller: Caller,
        action: str,
        *,
        tenant: str | None,
        subject_id: str | None = None,
        detail: dict[str, DetailValue] | None = None,
    ) -> Iterator[Operation]:
        """Authorise ``action`` for ``caller`` on ``tenant`` and audit it (see the module doc)."""
        principal = self.current(caller, action, tenant, subject_id)
        request_id = caller.request_id or new_request_id()
        decision = authorize(principal, action, tenant)
        if not decision.allowed:
            self.audit.append_now(AuditEvent(
                principal=principal.name, role=decision.role, action=action,
                outcome=OUTCOME_DENIED, tenant=tenant, subject_id=subject_id,
                request_id=request_id, detail={**(detail or {}), "reason": decision.reason},
            ))
            raise AccessDenied(f"access denied to {principal.name}: {decision.reason}")
        op = Operation(self, principal, decision.role, action, tenant, subject_id, request_id)
        try:
            yield op
        except AuditWriteFailed:
            raise
        except Exception as error:
            refused = self._record_failure(op, error, detail)
            if refused is not None:  # what it owed could not be paid: the error is not shown
                raise refused from None
            raise
        if not op.committed:
            raise RuntimeError(f"operation {action} returned without recording its audit event")

    def _record_failure(self, op: Operation, error: Exception,
                        detail: dict[str, DetailValue] | None) -> FacesealError | None:
        """Write the ``failed`` event, paying what the operation owes in its transaction. If
        that cannot be paid (the budget ran out meanwhile, the counts are unreachable), the
        event names that error and it is returned: the caller raises it instead of ``error``,
        which is information the call did not pay for."""
        owed, op.owed = op.owed, None
        refused: FacesealError | None = None
        try:
            with self.store.transaction():
                if owed is not None:
                    try:
                        owed.pay()
                    except FacesealError as unpaid:
                        refused = unpaid
                shown: Exception = refused if refused is not None else error
                code = shown.code if isinstance(shown, FacesealError) else "internal_error"
                failed: dict[str, DetailValue] = {**(detail or {}), "error": code}
                if isinstance(shown, FacesealError) and shown.suspicious:
                    failed["suspicious"] = True
                record = self.audit.append(op.event(OUTCOME_FAILED, detail=failed))
        except AuditWriteFailed as audit_error:
            raise audit_error from None
        except StorageUnavailable as outage:  # the commit of the event itself
            raise AuditWriteFailed(f"the audit event could not be written: {outage}") from None
        self.audit.committed(record)
        return refused


def detail_of(**values: Any) -> dict[str, DetailValue]:
    """A detail mapping without the None values."""
    return {k: v for k, v in values.items() if v is not None}
