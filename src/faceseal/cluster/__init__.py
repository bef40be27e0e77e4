"""Sharded 1:N over a Ray cluster (the ``cluster`` extra; see docs/scale-out.md).

A tenant's gallery is split into N partitions by a keyed hash of the subject id
(:mod:`~faceseal.cluster.partition`). Each partition is held by one shard actor
(:mod:`~faceseal.cluster.actor` around :mod:`~faceseal.cluster.shard`), which opens the vault
itself -- keys from the configured provider, never sent over Ray -- decrypts only its partition
and follows the change log. The front end (:mod:`~faceseal.cluster.front`) sends each probe to
every shard, each ranks its partition exactly as a single process does, and their top-k merged
are the whole gallery's; any shard down or behind fails the call closed.

Layering: this package imports the vault and below; nothing below imports it. Only
:mod:`~faceseal.cluster.actor`, :mod:`~faceseal.cluster.front` and
:mod:`~faceseal.cluster.launch` import Ray.
"""
