"""What a service front end (``faceseal serve``) needs from the vault beyond the operations:
a readiness probe (including whether this replica follows the change log), and auditing the
requests it refuses before they reach a principal.

A mixin of :class:`~faceseal.vault.Vault`, kept apart so that the facade stays readable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faceseal.access.counters import StoreCounters, WindowCounters
from faceseal.access.roles import AUTHENTICATE
from faceseal.audit.events import (
    ANONYMOUS,
    OUTCOME_UNAUTHENTICATED,
    AuditEvent,
    DetailValue,
    check_request_id,
    new_request_id,
)
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import FacesealError, RateLimited

if TYPE_CHECKING:
    from faceseal.audit.log import AuditLog
    from faceseal.audit.state import AuditState
    from faceseal.keys.datakeys import DataKeyManager
    from faceseal.storage.base import TemplateStore
    from faceseal.vault.answers import AnswerRules
    from faceseal.vault.config import VaultConfig
    from faceseal.vault.follower import ChangeFollower
    from faceseal.vault.gallery_cache import GalleryCache
    from faceseal.vault.partition_view import ShardedGalleries

log = logging.getLogger(__name__)

#: The reason recorded in the audit event of a request refused by a rate limit.
RATE_LIMITED_REASON = "rate limited"
_PROBE_CONTEXT = b"faceseal-readiness-probe-v1"

OK = "ok"
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Readiness:
    """Whether the store, the key provider and the audit log answer. Only check names and
    ``ok``/``unavailable``: never a path, a URI, a key id or an error text."""

    checks: dict[str, str] = field(default_factory=dict)
    #: Changes committed by any process that this process's loaded galleries lack (0: caught up).
    behind: int = 0
    #: Per shard of a sharded gallery ("0", "1", ...): "ok", "behind" or "down".
    shards: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(value == OK for value in self.checks.values())


class ServiceOperations:
    """Readiness and refusal auditing on a :class:`~faceseal.vault.Vault`."""

    if TYPE_CHECKING:  # provided by Vault
        _store: TemplateStore
        _data_keys: DataKeyManager
        _audit: AuditLog
        _audit_state: AuditState
        _config: VaultConfig
        _cache: GalleryCache
        _answers: AnswerRules

        def _check_open(self) -> None: ...

        @property
        def follower(self) -> ChangeFollower | None: ...

        @property
        def shards(self) -> ShardedGalleries | None: ...

    def readiness(self) -> Readiness:
        """Probe the template store (schema and vault id readable), the key provider (a fresh
        random key wrapped and unwrapped: one round trip to an HSM or KMS) and the audit log
        (its newest checkpoint and event readable). Never raises for an outage: the failing
        check says ``unavailable`` and the cause is logged (without secrets)."""
        self._check_open()
        behind = 0

        def probe_changes() -> None:
            nonlocal behind
            follower = self.follower
            if follower is not None and (not follower.running or not follower.healthy):
                raise RuntimeError("the change follower is not keeping up")
            behind = sum(self._cache.lag().values())

        checks = {
            "store": self._probe("store", self._probe_store),
            "key_provider": self._probe("key provider", self._probe_provider),
            "audit": self._probe("audit log", self._probe_audit),
            "changes": self._probe("change log", probe_changes),
        }
        shards: dict[str, str] = {}
        sharded = self.shards
        if sharded is not None:
            shards = sharded.states()
            # Identify needs every shard: one down or behind and the service is not ready.
            checks["shards"] = OK if shards and all(v == OK for v in shards.values()) \
                else UNAVAILABLE
        return Readiness(checks, behind, shards)

    def shared_counters(self) -> StoreCounters:
        """Sliding-window counters kept in this vault's store: every process of the vault (each
        replica, the CLI) counts against the same allowance (failed-authentication limits)."""
        self._check_open()
        return StoreCounters(self._store)

    def use_query_counters(self, counters: WindowCounters) -> None:
        """Count this vault's query budgets (every view's) in ``counters`` from now on: the
        front ends pass the counters their failed-authentication limits use (the store's, or
        Redis), so that budgets hold across processes and replicas (docs/threat-model.md)."""
        self._check_open()
        self._answers.use_counters(counters)

    def refuse_rate_limited(self, *, key_id: str | None, request_id: str | None) -> None:
        """Audit a request that a front end refused, before looking at its credential, because
        its client or key id failed authentication too often; then raise
        :class:`~faceseal.errors.RateLimited`. ``key_id`` is the public half of the presented
        key, if it was well-formed."""
        self._check_open()
        request_id = check_request_id(request_id)
        detail: dict[str, DetailValue] = {"reason": RATE_LIMITED_REASON}
        if key_id is not None:
            detail["key_id"] = key_id
        self._audit.append_now(AuditEvent(
            principal=ANONYMOUS, role="", action=AUTHENTICATE, outcome=OUTCOME_UNAUTHENTICATED,
            request_id=request_id or new_request_id(), detail=detail,
        ))
        raise RateLimited("too many failed authentication attempts; retry later")

    # --- probes ----------------------------------------------------------------------------------

    @staticmethod
    def _probe(name: str, probe: Callable[[], None]) -> str:
        try:
            probe()
        except FacesealError as error:
            log.warning("readiness: %s unavailable (%s)", name, error.code)
            return UNAVAILABLE
        except Exception as error:  # an unexpected failure is as unready as an expected one
            log.warning("readiness: %s unavailable (%s)", name, type(error).__name__)
            return UNAVAILABLE
        return OK

    def _probe_store(self) -> None:
        self._store.schema_version()
        if self._store.get_meta("vault_id") != self._config.vault_id:
            raise RuntimeError("the template store answers for another vault")

    def _probe_provider(self) -> None:
        provider = self._data_keys.provider
        probe = SecretBytes(os.urandom(32))
        try:
            unwrapped = provider.unwrap(provider.wrap(probe, _PROBE_CONTEXT), _PROBE_CONTEXT)
            try:
                if unwrapped != probe:
                    raise RuntimeError("the key provider returned another key")
            finally:
                unwrapped.wipe()
        finally:
            probe.wipe()

    def _probe_audit(self) -> None:
        latest = self._audit_state.latest_checkpoint()
        start = max(0, latest.seq - 1) if latest is not None else 0
        next(iter(self._audit.events(after_seq=start, limit=1)), None)
