"""The Ray actor around a :class:`~faceseal.cluster.shard.ShardCore`.

Ray restarts a dead actor (``max_restarts=-1``) by running its constructor again: the new
incarnation reopens the vault and reloads its partition from the shard's snapshot plus the
change log since, like any process starting. Calls are never retried by Ray
(``max_task_retries=0``): the front end fails closed instead, and the client retries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from faceseal.cluster.shard import ShardAnswer, ShardCore


class Shard:
    """One shard (see :mod:`faceseal.cluster.shard`); its methods are the actor's."""

    def __init__(self, home: str, index: int, shards: int, follow_interval: float,
                 tenants: list[str]) -> None:
        self._core = ShardCore(home, index, shards, follow_interval=follow_interval)
        self._core.warm(tenants)

    def search(self, tenant: str, model_id: str, probes: npt.NDArray[np.float64],
               count: int) -> ShardAnswer:
        return self._core.search(tenant, model_id, probes, count)

    def warm(self, tenants: list[str]) -> dict[str, int]:
        return self._core.warm(tenants)

    def erased(self, tenant: str, subject_id: str, template_ids: list[str]) -> str:
        return self._core.erased(tenant, subject_id, template_ids)

    def status(self) -> dict[str, Any]:
        return self._core.status()

    def close(self) -> None:
        self._core.close()


def shard_actor(num_cpus: float) -> Any:
    """The actor class: restarted by Ray when it dies, calls never retried, a few threads so
    that a status probe is answered while a search runs (the gallery cache has its own lock)."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": -1,
                               "max_task_retries": 0, "max_concurrency": 4}
    return ray.remote(**options)(Shard)
