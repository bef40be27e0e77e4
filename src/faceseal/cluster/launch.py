"""Start (or join) a Ray cluster and put a vault's gallery on N shards.

``faceseal serve --shards N`` starts an embedded Ray instance on this machine, bound to the
loopback address; ``--ray-address ADDR`` joins an existing cluster, which must use Ray's TLS
(``RAY_USE_TLS=1`` with ``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY`` and ``RAY_TLS_CA_CERT``
on every node and here) unless it is on the loopback address: probes and answers cross that
network (docs/scale-out.md, docs/threat-model.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import ray

from faceseal.cluster.actor import shard_actor
from faceseal.cluster.front import DEFAULT_TIMEOUT, RayShards
from faceseal.cluster.partition import Partitioner
from faceseal.errors import InvalidInput, ShardUnavailable
from faceseal.vault import Vault
from faceseal.vault.config import DEFAULT_TENANT

log = logging.getLogger(__name__)

TLS_ENV = "RAY_USE_TLS"
TLS_FILES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
#: Seconds the shards may take to open the vault and load their partitions at start.
DEFAULT_START_TIMEOUT = 600.0


def tls_enabled() -> bool:
    return os.environ.get(TLS_ENV, "").strip().lower() in {"1", "true"}


def check_tls() -> None:
    """Ray's TLS is on and its three PEM files are named and readable."""
    if not tls_enabled():
        raise InvalidInput(
            f"a Ray cluster beyond this machine's loopback needs TLS: set {TLS_ENV}=1 and "
            f"{', '.join(TLS_FILES)} on every node and here (docs/scale-out.md)")
    for name in TLS_FILES:
        value = os.environ.get(name)
        if not value or not Path(value).is_file():
            raise InvalidInput(f"{TLS_ENV} is on but ${name} does not name a readable file")


def is_loopback_address(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port``) is on the loopback."""
    if address == "auto":
        return False  # whatever cluster this node belongs to: may span machines
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(shards: int, ray_address: str | None, num_cpus: float) -> None:
    """Join ``ray_address``, or start an embedded Ray on the loopback address; nothing if this
    process is connected already."""
    if (ray_address is not None and not is_loopback_address(ray_address)) or tls_enabled():
        check_tls()
    if ray.is_initialized():
        return
    if ray_address is not None:
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
        return
    ray.init(num_cpus=max(1, int(shards * num_cpus + 0.999)), include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)


def attach(vault: Vault, shards: int, *, ray_address: str | None = None,
           tenants: Sequence[str] = (DEFAULT_TENANT,), num_cpus: float = 1.0,
           follow_interval: float = 1.0, timeout: float = DEFAULT_TIMEOUT,
           start_timeout: float = DEFAULT_START_TIMEOUT) -> RayShards:
    """Start ``shards`` shard actors for ``vault`` (each opens the vault at the same path on its
    node and loads its partition of ``tenants``), check they partition as this process does,
    and make the vault answer identify from them. Returns the shards (``close()`` stops them)."""
    if not 1 <= shards <= 4096:
        raise InvalidInput("--shards must be within 1..4096")
    connect(shards, ray_address, num_cpus)
    key = vault.partition_key()
    try:
        partitioner = Partitioner(key, shards)
    finally:
        key.wipe()
    actor = shard_actor(num_cpus)
    home = str(Path(vault.home).resolve())
    handles = [actor.options(scheduling_strategy="SPREAD").remote(
        home, index, shards, follow_interval, list(tenants)) for index in range(shards)]
    front = RayShards(handles, partitioner, timeout=timeout)
    try:
        statuses = ray.get([h.status.remote() for h in handles], timeout=start_timeout)
    except Exception as exc:
        front.close()
        raise ShardUnavailable(
            f"the shards did not start ({type(exc).__name__}); see the Ray logs") from None
    for status in statuses:
        if status["vault_id"] != vault.vault_id \
                or status["fingerprint"] != partitioner.fingerprint():
            front.close()
            raise ShardUnavailable("a shard opened another vault or partitions differently "
                                   "(each node must see the same vault and key directory)")
    vault.use_shards(front)
    log.info("identify answered by %d shard(s)", shards)
    return front


def detach(vault: Vault, front: RayShards) -> None:
    """Back to the local gallery, shards stopped."""
    if vault.shards is front:
        vault.use_shards(None)
    front.close()
