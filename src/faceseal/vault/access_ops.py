"""The vault's access and audit operations: principals, tenants and retention, purge, audit log.

A mixin of :class:`~faceseal.vault.Vault`, kept in its own module so the facade stays readable.
Every method goes through the same choke point as enroll/verify/identify (``Vault._operation``):
authorised against the permission table, audited, fail-closed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from faceseal.access.principals import (
    NewPrincipal,
    Principal,
    new_principal_row,
)
from faceseal.access.roles import (
    AUDIT_EXPORT,
    AUDIT_READ,
    AUDIT_VERIFY,
    PRINCIPALS_ADD,
    PRINCIPALS_LIST,
    PRINCIPALS_REVOKE,
    PURGE,
    TENANTS_LIST,
    TENANTS_RETENTION,
    Role,
    parse_roles,
)
from faceseal.audit.chain import ChainReport
from faceseal.audit.log import AuditLog, record_to_json
from faceseal.errors import Conflict, InvalidInput, NotFound
from faceseal.vault import key_lease
from faceseal.vault.config import DEFAULT_TENANT
from faceseal.vault.durations import BIPA_MAX_SECONDS
from faceseal.vault.guard import Caller, Guard, Operation, detail_of
from faceseal.vault.ids import check_id
from faceseal.vault.results import Result

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from faceseal.audit.events import DetailValue
    from faceseal.storage.base import TemplateStore
    from faceseal.vault.gallery_cache import GalleryCache

T = TypeVar("T")
MAX_TAIL = 10_000
_WORKER_ROLES = frozenset({Role.ENROLLER, Role.VERIFIER, Role.IDENTIFIER})


@dataclass(frozen=True)
class TenantInfo(Result):
    tenant: str
    retention_seconds: float | None
    #: Set when the retention is longer than Illinois BIPA allows (3 years).
    warning: str | None = None


@dataclass(frozen=True)
class TenantPurge:
    """What purge found (and erased, unless it was a dry run) in one tenant."""

    tenant: str
    inactive_for: float | None  # None: the tenant has no retention set and none was given
    cutoff: float | None
    subject_ids: list[str]
    erased: int


@dataclass(frozen=True)
class PurgeResult:
    dry_run: bool
    tenants: list[TenantPurge] = field(default_factory=list)

    @property
    def subjects(self) -> int:
        return sum(len(t.subject_ids) for t in self.tenants)

    @property
    def erased(self) -> int:
        return sum(t.erased for t in self.tenants)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "subjects": self.subjects, "erased": self.erased,
                "tenants": [asdict(t) for t in self.tenants]}


def default_scope(roles: frozenset[Role], tenant: str | None, all_tenants: bool) -> str | None:
    """The tenant a new principal is scoped to (None: every tenant).

    ``all_tenants`` asks for every tenant explicitly; without it and without ``tenant``, admins
    and auditors (only) get every tenant, and anyone holding a worker role gets the default tenant.
    """
    if all_tenants:
        if tenant is not None:
            raise InvalidInput("give either a tenant or all_tenants, not both")
        return None
    if tenant is not None:
        return tenant
    return DEFAULT_TENANT if roles & _WORKER_ROLES else None


class AccessOperations:
    """Principals, tenants, purge and the audit log on a :class:`~faceseal.vault.Vault`."""

    if TYPE_CHECKING:  # provided by Vault
        _store: TemplateStore
        _audit: AuditLog
        _guard: Guard
        _caller: Caller
        _principal: Principal | None
        _lock: threading.RLock
        _cache: GalleryCache

        def _check_open(self) -> None: ...

        def _operation(self, action: str, *, tenant: str | None,
                       subject_id: str | None = None,
                       detail: dict[str, DetailValue] | None = None,
                       ) -> AbstractContextManager[Operation]: ...

        def _erase_in(self, op: Operation, tenant: str, subject_id: str, *,
                      shred_snapshot: bool = True) -> tuple[int, bool]: ...

    @property
    def principal(self) -> Principal | None:
        """The principal this vault object acts for (None: unbound, every operation refused)."""
        return self._principal

    def _scope(self) -> str | None:
        """The bound principal's tenant scope (None: every tenant, or unbound)."""
        return self._principal.tenant if self._principal is not None else None

    def _record(self, op: Operation, **detail: DetailValue | None) -> None:
        with op.transaction():
            op.record(detail=detail_of(**detail))

    # --- principals ------------------------------------------------------------------------------

    def add_principal(
        self,
        name: str,
        roles: list[str] | list[Role] | tuple[str | Role, ...] | frozenset[Role] | str,
        *,
        tenant: str | None = None,
        all_tenants: bool = False,
    ) -> NewPrincipal:
        """Create a principal and its API key (returned once, stored only as a hash).

        Scope: ``tenant``, or every tenant with ``all_tenants=True``; by default admins and
        auditors get every tenant and worker roles the default tenant.
        """

        self._check_open()
        parsed = parse_roles([roles] if isinstance(roles, str) else roles)
        scope = default_scope(parsed, tenant, all_tenants)
        if scope is not None:
            check_id("tenant", scope)
        row, issued = new_principal_row(name, parsed, scope)
        row = self._guard.seal.sign(row)
        details: dict[str, DetailValue] = {
            "target": name, "roles": sorted(r.value for r in parsed), "scope": scope or "*"}
        with self._operation(PRINCIPALS_ADD, tenant=scope, detail=details) as op:
            with op.transaction():
                self._store.add_principal(row)
                op.record(detail={**details, "key_id": row.key_id})
            return NewPrincipal(Principal.from_row(row), issued.reveal())

    def principals(self) -> list[Principal]:
        """Principals in the caller's scope (every one for an all-tenant admin), by name."""
        self._check_open()
        scope = self._scope()
        with self._operation(PRINCIPALS_LIST, tenant=scope) as op:
            found = [Principal.from_row(r, self._guard.seal) for r in self._store.principals()
                     if scope is None or r.tenant == scope]
            self._record(op, principals=len(found))
            return found

    def revoke_principal(self, name: str) -> Principal:
        """Revoke a principal's key at once. The last active all-tenant admin cannot be revoked."""
        self._check_open()
        seal = self._guard.seal
        rows = {r.name: r for r in self._store.principals()}
        target = rows.get(name)
        # Only a row that verifies says whose scope it is; a forged one is revoked by an
        # all-tenant admin (revoking it is harmless: it could never authenticate anyway).
        scope = target.tenant if target is not None and seal.verifies(target) else (
            None if target is not None else self._scope())
        details: dict[str, DetailValue] = {"target": name}
        with self._operation(PRINCIPALS_REVOKE, tenant=scope, detail=details) as op:
            principal = Principal.from_row(target, seal) if target is not None else None
            if principal is None or target is None or not principal.active:
                raise NotFound(f"no active principal named {name!r}")
            others = [Principal.from_row(r, seal) for r in rows.values() if r.name != name]
            if Role.ADMIN in principal.roles and principal.tenant is None and not any(
                    p.verified and p.active and p.tenant is None and Role.ADMIN in p.roles
                    for p in others):
                raise Conflict("refusing to revoke the last active all-tenant admin; add "
                               "another admin first")
            # The key side first: once recorded there the key is refused, whatever the store's
            # row says later (a replayed older row included).
            when = seal.record_revocation(target.principal_id, time.time())
            # A forged row stays unsigned: revoking it must not make it verify.
            mac = (seal.sign(dataclasses.replace(target, revoked_at=when)).mac
                   if principal.verified else target.mac)
            with op.transaction():
                if not self._store.revoke_principal(name, when, mac):
                    raise NotFound(f"no active principal named {name!r}")
                op.record(detail={**details, "key_id": principal.key_id})
            return dataclasses.replace(principal, revoked_at=when)

    # --- tenants and retention -------------------------------------------------------------------

    def set_retention(self, tenant: str, retention_seconds: float | None) -> TenantInfo:
        """Keep a tenant's subjects at most this long after their last enrolment or match
        (None: no limit). :meth:`purge` enforces it."""

        self._check_open()
        check_id("tenant", tenant)
        if retention_seconds is not None and (
                not isinstance(retention_seconds, int | float) or not retention_seconds > 0
                or retention_seconds == float("inf")):
            raise InvalidInput("the retention period must be a positive finite number of seconds")
        seconds = None if retention_seconds is None else float(retention_seconds)
        with self._operation(TENANTS_RETENTION, tenant=tenant) as op:
            with op.transaction():
                self._store.set_retention(tenant, seconds)
                op.record(detail=detail_of(retention_seconds=seconds))
            warning = None
            if seconds is not None and seconds > BIPA_MAX_SECONDS:
                warning = ("longer than the 3 years after the last interaction that Illinois "
                           "BIPA allows")
            return TenantInfo(tenant, seconds, warning)

    def tenants(self) -> list[TenantInfo]:
        """Tenants in the caller's scope with their retention settings."""
        self._check_open()
        scope = self._scope()
        with self._operation(TENANTS_LIST, tenant=scope) as op:
            names = self._store.tenants() if scope is None else [scope]
            found = [TenantInfo(t, self._store.retention(t)) for t in names]
            self._record(op, tenants=len(found))
            return found

    def purge(
        self,
        inactive_for: float | None = None,
        *,
        tenant: str | None = None,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> PurgeResult:
        """Erase (crypto-shred) subjects with no enrolment or match for ``inactive_for`` seconds,
        or, when it is None, for each tenant's retention period (tenants without one are left
        alone). ``tenant`` limits it to one tenant; by default every tenant in the caller's
        scope. Each erased subject gets its own audit event; ``dry_run`` only lists them.
        ``progress(done, total)`` follows the erasures of each tenant in turn."""

        self._check_open()
        if inactive_for is not None and (not isinstance(inactive_for, int | float)
                                         or not inactive_for >= 0):
            raise InvalidInput("inactive_for must be a non-negative number of seconds")
        if tenant is not None:
            check_id("tenant", tenant)
            tenants = [tenant]
        else:
            scope = self._scope()
            tenants = self._store.tenants() if scope is None else [scope]
        result = PurgeResult(dry_run)
        for name in tenants:
            result.tenants.append(self._purge_tenant(name, inactive_for, dry_run, progress))
        return result

    def _purge_tenant(self, tenant: str, inactive_for: float | None, dry_run: bool,
                      progress: Callable[[int, int], None] | None) -> TenantPurge:
        with self._operation(PURGE, tenant=tenant, detail={"dry_run": dry_run}) as op:
            period = inactive_for if inactive_for is not None else self._store.retention(tenant)
            if period is None:
                self._record(op, dry_run=dry_run, skipped="no retention period set")
                return TenantPurge(tenant, None, None, [], 0)
            cutoff = time.time() - period
            subject_ids = self._store.inactive_subjects(tenant, cutoff)
            erased = 0
            if not dry_run:
                try:
                    for subject_id in subject_ids:
                        self._erase_in(op, tenant, subject_id, shred_snapshot=False)
                        erased += 1
                        if progress is not None:
                            progress(erased, len(subject_ids))
                finally:
                    if erased:  # once for all of them, before purge returns
                        self._cache.shred_snapshot(tenant)
            self._record(op, dry_run=dry_run, inactive_for=float(period), cutoff=cutoff,
                         subjects=len(subject_ids), erased=erased)
            return TenantPurge(tenant, float(period), cutoff, subject_ids, erased)

    # --- audit log -------------------------------------------------------------------------------

    def audit_tail(self, count: int = 20, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The newest ``count`` events (oldest first) as JSON objects. A tenant-scoped auditor
        sees only its tenant's events; an all-tenant one every event, or one tenant's."""
        self._check_open()
        if not isinstance(count, int) or not 1 <= count <= MAX_TAIL:
            raise InvalidInput(f"count must be an integer within 1..{MAX_TAIL}")
        target = self._audit_tenant(tenant)
        with self._operation(AUDIT_READ, tenant=target) as op:
            events = [record_to_json(r, self._audit.event_verifies(r))
                      for r in self._audit.tail(count, tenant=target)]
            self._record(op, events=len(events))
            return events

    def audit_export(
        self, *, since: float | None = None, tenant: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every event from ``since`` on (oldest first), as JSON objects for a SIEM. The export is
        audited before the first event is returned; events are then streamed."""
        self._check_open()
        target = self._audit_tenant(tenant)
        with self._operation(AUDIT_EXPORT, tenant=target) as op:
            self._record(op, since=since)
        return (record_to_json(r, self._audit.event_verifies(r))
                for r in self._audit.events(tenant=target, since=since))

    def audit_verify(self) -> ChainReport:
        """Verify the whole MAC chain and the checkpoints; the report names the first broken
        event. Needs an all-tenant auditor (the chain spans every tenant)."""
        self._check_open()
        with self._operation(AUDIT_VERIFY, tenant=None) as op:
            report = self._audit.verify()
            self._record(op, ok=report.ok, events=report.events,
                         first_broken_seq=report.first_broken_seq)
            return report

    def _audit_tenant(self, tenant: str | None) -> str | None:

        if tenant is not None:
            check_id("tenant", tenant)
            return tenant
        return self._scope()

    # --- for operations added later (keys, import) ----------------------------------------------

    def _run_audited(
        self,
        action: str,
        work: Callable[[], T],
        *,
        tenant: str | None = None,
        subject_id: str | None = None,
        describe: Callable[[T], dict[str, DetailValue]] | None = None,
        key_operation: bool = False,
    ) -> T:
        """Authorise ``action``, write a ``phase: begin`` event, run ``work``, write the ``ok``
        event with ``describe(result)``. For work whose changes live outside the template store
        (key providers), where the event cannot share the change's transaction: if the first
        event cannot be written nothing is done; if the work fails a ``failed`` event follows.

        A ``key_operation`` holds the store's key-operation lease (``key_lease``) once
        authorised: one at a time across every process, a second refused (audited as failed)."""
        with self._operation(action, tenant=tenant, subject_id=subject_id) as op, (
                key_lease.key_operation(self._store, action) if key_operation
                else nullcontext()):
            self._record(op, phase="begin")
            result = work()
            with op.transaction():
                op.record(detail={"phase": "end", **(describe(result) if describe else {})})
            return result
