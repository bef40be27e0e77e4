"""One shard: a partition of every tenant's gallery, held by its own open vault.

Engine-free (no Ray here): :mod:`faceseal.cluster.actor` wraps it in an actor, and tests or a
single process can drive it directly. The shard opens the vault from its directory with the keys
of the configured provider (a passphrase, if any, from this machine's ``$FACESEAL_PASSPHRASE``),
derives the partition key itself, and builds a gallery cache that reads and decrypts only its
partition's templates (:mod:`faceseal.vault.partition_view`). Before each answer the cache
applies every committed change, as a single process does; a follower thread also applies them
while idle and replaces the shard's snapshot after an erasure of one of its subjects.

What leaves a shard: its exact top-k per probe (subject ids, template ids, float64
distances) and counts. Never a template, a key or a subject secret.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from faceseal.cluster.partition import Partitioner
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.vault import Vault
from faceseal.vault.exact_rank import ExactRanker
from faceseal.vault.partition_view import Partition
from faceseal.vault.paths import PASSPHRASE_ENV

log = logging.getLogger(__name__)

#: One answer row as it crosses the wire: (subject id, template id, exact distance).
Proposal = tuple[str, str, float]


@dataclass(frozen=True)
class ShardAnswer:
    """A shard's exact top-k for a batch of probes, and the change its gallery reflected."""

    index: int
    applied: int
    size: int
    damaged: int
    proposals: list[list[Proposal]] = field(default_factory=list)


def _rss_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _passphrase() -> SecretBytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return SecretBytes(value.encode()) if value else None


class ShardCore:
    """A partition's gallery, kept fresh, answering searches and erasures."""

    def __init__(self, home: str | Path, index: int, shards: int, *,
                 follow_interval: float = 1.0) -> None:
        if not 0 <= index < shards:
            raise InvalidInput("the shard index must be within 0..shards-1")
        self.index = index
        self._vault = Vault.open(Path(home), passphrase=_passphrase)
        try:
            key = self._vault.partition_key()
            try:
                self._partitioner = Partitioner(key, shards)
            finally:
                key.wipe()
            partitioner = self._partitioner

            def owns(tenant: str, subject_id: str) -> bool:
                return partitioner.shard_of(tenant, subject_id) == index

            self._partition: Partition = self._vault.partition_cache(
                partitioner.layout(index), owns)
            # Erasures replace the snapshot in the background (see GalleryCache.shred_snapshot).
            self._partition.cache.background_persist = True
        except BaseException:
            self._vault.close()
            raise
        self._interval = follow_interval
        self._stop = threading.Event()
        self.healthy = True
        self.started = time.time()
        self._thread = threading.Thread(target=self._follow, name="faceseal-shard-follower",
                                        daemon=True)
        self._thread.start()

    # --- answering -------------------------------------------------------------------------------

    def search(self, tenant: str, model_id: str, probes: npt.NDArray[np.float64],
               top_k: int) -> ShardAnswer:
        """The exact ``top_k`` of this partition for each probe (the gallery's bounded first
        pass, then every candidate it cannot exclude opened from the records and compared in
        float64, as one process does), after applying every committed change."""
        spec = self._vault.model(model_id)
        partition = self._partition
        cache = partition.cache
        try:
            with cache.holding():
                applied = cache.catch_up(tenant)
                gallery, damaged = cache.fresh(tenant, spec)
                if gallery is None or not len(gallery):
                    found: list[list[Proposal]] = [[] for _ in probes]
                    size = 0
                else:
                    with ExactRanker(partition.store, partition.sealer, tenant, spec) as ranker:
                        matches = gallery.search_many(probes, top_k, ranker.exact,
                                                      ranker.prefetch)
                        cache.note_damaged(ranker.damaged)
                    found = [[(m.subject_id, m.template_id, m.distance) for m in row]
                             for row in matches]
                    size = len(gallery)
        finally:
            if probes.flags.writeable:
                probes.fill(0.0)  # this process's copy of the probes
        self._take_erasures()
        return ShardAnswer(self.index, applied, size, damaged, found)

    def warm(self, tenants: list[str]) -> dict[str, int]:
        """Load (or catch up) ``tenants`` now, so the first query does not pay for it."""
        return {tenant: self._partition.cache.catch_up(tenant) for tenant in tenants}

    def erased(self, tenant: str, subject_id: str, template_ids: list[str]) -> str:
        """A front end erased a subject this shard owns: drop it from memory and replace (or
        destroy) this shard's snapshot of the tenant before returning."""
        cache = self._partition.cache
        cache.after_erase(tenant, subject_id, template_ids)
        self._partition.view.take_erasures()
        return cache.shred_snapshot(tenant)

    def _take_erasures(self) -> None:
        for tenant in sorted(self._partition.view.take_erasures()):
            self._partition.cache.shred_snapshot(tenant)

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts, change numbers and flags only (what /readyz shows per shard)."""
        cache = self._partition.cache
        lag = cache.lag()
        states = cache.states()
        return {
            "index": self.index,
            "shards": self._partitioner.shards,
            "fingerprint": self._partitioner.fingerprint(),
            "vault_id": self._vault.vault_id,
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "healthy": self.healthy and self._thread.is_alive(),
            "behind": sum(lag.values()),
            "gallery_bytes": sum(g.nbytes() for t in states
                                 for g in cache.galleries_of(t).values()),
            "rss_bytes": _rss_bytes(),
            "tenants": {tenant: {"applied": state.applied, "templates": state.templates,
                                 "damaged": state.damaged,
                                 "source": cache.loads.get(tenant, {}).get("source")}
                        for tenant, state in states.items()},
        }

    # --- following -------------------------------------------------------------------------------

    def _follow(self) -> None:
        cache = self._partition.cache
        while not self._stop.wait(self._interval):
            try:
                cache.catch_up_all()
                self._take_erasures()
                cache.persist_due()
            except Exception as exc:  # an outage: keep following, say so in the status
                if self.healthy:
                    log.warning("shard %d: catching up failed (%s)", self.index,
                                type(exc).__name__)
                self.healthy = False
                continue
            self.healthy = True

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 5)
        self._vault.close()

    def __repr__(self) -> str:
        return f"<ShardCore {self.index} of {self._partitioner.shards}>"
