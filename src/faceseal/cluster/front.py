"""The front end of a sharded gallery: fan a batch of probes out to every shard, merge.

Each shard returns, per probe, the exact top-k of its partition: its gallery's bounded first
pass, then every candidate the bound cannot exclude opened from the records and compared in
float64 with verify's function (:mod:`faceseal.vault.exact_rank`), as one process does. A
subject lives in exactly one partition, so the global top-k (ordered by exact distance, then
subject id, as the gallery orders them) is among the union of the shards' top-k: merging them
gives exactly the single-process answer. Same candidates, same distances.

Fail closed: if any shard is down, restarting, times out or reflects an older change than the
store's head read before the fan-out, the whole call raises
:class:`~faceseal.errors.ShardUnavailable` -- a partial answer could turn a match into "no
match".

Probes travel in chunks of :data:`CHUNK_PROBES` (64 KiB of float64), below Ray's inline limit
(100 KiB), so they are carried inside the call itself and never written to Ray's shared-memory
object store (which may spill to disk).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from faceseal.cluster.partition import Partitioner
from faceseal.cluster.shard import ShardAnswer
from faceseal.errors import ShardUnavailable
from faceseal.matching.gallery import Match
from faceseal.matching.models import ModelSpec

log = logging.getLogger(__name__)

#: Probes per call: 64 x 128 float64 = 64 KiB, inline in the call (see the module docstring).
CHUNK_PROBES = 64
DEFAULT_TIMEOUT = 120.0
STATUS_TIMEOUT = 5.0

OK = "ok"
BEHIND = "behind"
DOWN = "down"


def merge(answers: Sequence[ShardAnswer], probes: int, count: int) -> list[list[Match]]:
    """Per probe, the ``count`` best over every shard (by exact distance, then subject id: the
    gallery's own order)."""
    merged: list[list[Match]] = []
    for number in range(probes):
        pool = [Match(subject, template, distance)
                for answer in answers for subject, template, distance in answer.proposals[number]]
        pool.sort(key=lambda m: (m.distance, m.subject_id))
        merged.append(pool[:count])
    return merged


class RayShards:
    """The shards of one vault on a Ray cluster (implements
    :class:`faceseal.vault.partition_view.ShardedGalleries`)."""

    def __init__(self, handles: list[Any], partitioner: Partitioner, *,
                 timeout: float = DEFAULT_TIMEOUT, owned: bool = True) -> None:
        if len(handles) != partitioner.shards:
            raise ValueError("one actor per shard")
        self._handles = handles
        self._partitioner = partitioner
        self._timeout = timeout
        self._owned = owned

    @property
    def count(self) -> int:
        return len(self._handles)

    @property
    def handles(self) -> list[Any]:
        return list(self._handles)

    def _get(self, refs: list[Any], what: str, shard_of: list[int]) -> list[Any]:
        try:
            return list(ray.get(refs, timeout=self._timeout))
        except Exception as exc:
            failed = "?"
            for ref, index in zip(refs, shard_of, strict=True):
                ready, _ = ray.wait([ref], timeout=0)
                if ready:
                    try:
                        ray.get(ref, timeout=0)
                    except Exception:
                        failed = str(index)
                        break
            log.warning("shard call failed: %s (%s)", what, type(exc).__name__)
            raise ShardUnavailable(
                f"shard {failed} of {self.count} did not answer ({type(exc).__name__}); "
                f"{what} refused rather than answered from the other shards") from None

    def propose(self, tenant: str, spec: ModelSpec, probes: npt.NDArray[np.float64],
                top_k: int, head: int) -> tuple[list[list[Match]], int, int]:
        refs: list[Any] = []
        shard_of: list[int] = []
        for lo in range(0, len(probes), CHUNK_PROBES):
            # A copy (never a view of the caller's probes, which the vault still re-ranks with).
            chunk = np.array(probes[lo:lo + CHUNK_PROBES], dtype=np.float64, order="C", copy=True)
            try:
                for index, handle in enumerate(self._handles):
                    refs.append(handle.search.remote(tenant, spec.model_id, chunk, top_k))
                    shard_of.append(index)
            finally:
                chunk.fill(0.0)  # serialised into the calls; this copy is no longer needed
        answers: list[ShardAnswer] = self._get(refs, "identify", shard_of)
        behind = [a.index for a in answers if a.applied < head]
        if behind:
            raise ShardUnavailable(
                f"shard {behind[0]} of {self.count} is behind the change log; identify refused")
        merged: list[list[Match]] = []
        chunks = [answers[i:i + self.count] for i in range(0, len(answers), self.count)]
        for lo, group in zip(range(0, len(probes), CHUNK_PROBES), chunks, strict=True):
            merged.extend(merge(group, min(CHUNK_PROBES, len(probes) - lo), top_k))
        first = chunks[0] if chunks else []
        size = sum(a.size for a in first)
        damaged = sum(a.damaged for a in first)
        return merged, size, damaged

    def erased(self, tenant: str, subject_id: str, template_ids: list[str]) -> None:
        owner = self._partitioner.shard_of(tenant, subject_id)
        self._get([self._handles[owner].erased.remote(tenant, subject_id, template_ids)],
                  "the erasure's shard update", [owner])

    def warm(self, tenants: list[str]) -> None:
        """Load ``tenants`` on every shard now (each from its snapshot plus the delta)."""
        self._get([h.warm.remote(tenants) for h in self._handles], "warming",
                  list(range(self.count)))

    def statuses(self) -> list[dict[str, Any] | None]:
        """Each shard's status, or None for a shard that does not answer within a few
        seconds (down, or restarting and reloading)."""
        refs = [h.status.remote() for h in self._handles]
        found: list[dict[str, Any] | None] = []
        for ref in refs:
            try:
                found.append(ray.get(ref, timeout=STATUS_TIMEOUT))
            except Exception:
                found.append(None)
        return found

    def states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for index, status in enumerate(self.statuses()):
            # A shard with changes pending is still "ok": it applies them before it answers.
            # "behind": its follower is failing (it cannot read the change log).
            if status is None:
                states[str(index)] = DOWN
            elif not status.get("healthy"):
                states[str(index)] = BEHIND
            else:
                states[str(index)] = OK
        return states

    def close(self) -> None:
        """Stop the shards this front end started (their galleries are overwritten)."""
        if not self._owned:
            return
        for handle in self._handles:
            with contextlib.suppress(Exception):  # killed below anyway
                ray.get(handle.close.remote(), timeout=STATUS_TIMEOUT)
            ray.kill(handle, no_restart=True)

    def __repr__(self) -> str:
        return f"<RayShards {self.count}>"
