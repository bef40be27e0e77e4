"""What the vault needs to take part in a sharded gallery (``faceseal.cluster``), without
knowing the cluster engine.

Two sides:

* **A shard** holds one partition of every tenant: a :class:`~faceseal.vault.gallery_cache.
  GalleryCache` built over a *view* of the store that yields only the partition's templates
  (:class:`PartitionStore`) and of the subject key store that yields only its subjects' secrets,
  with snapshots of its own (a directory per partition layout, keys in a key file of its own),
  so a shard decrypts nothing outside its partition and never overwrites another's snapshot.
* **A front end** (the vault that answers ``identify``) asks a :class:`ShardedGalleries` for
  the exact top-k instead of its own gallery (each shard ranks its partition exactly, with
  :mod:`faceseal.vault.exact_rank`, as one process does), and tells it about each erasure.

The partition of a subject is a keyed hash (the key from :meth:`Vault.partition_key`, derived
from the vault's audit key on the key side), so shard membership says nothing about a subject to
whoever sees the shards, and the key never needs to travel: every process derives it itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from faceseal.crypto.partition import Partitioner, parse_layout
from faceseal.crypto.secret import SecretBytes
from faceseal.keys.datakeys import DataKeyManager
from faceseal.keys.files import ensure_private_dir
from faceseal.keys.subject_keys import SubjectKeyStore, SubjectRef
from faceseal.matching.gallery import Match
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import ChangeSummary, DirectSource, TemplateRow, TemplateStore
from faceseal.vault.gallery_cache import GalleryCache
from faceseal.vault.records import RecordSealer
from faceseal.vault.snapshot import SnapshotStore

#: Whether a (tenant, subject id) belongs to this shard.
Owns = Callable[[str, str], bool]


class ShardedGalleries(Protocol):
    """The gallery of a front end whose tenants are sharded (see :mod:`faceseal.cluster`)."""

    def propose(self, tenant: str, spec: ModelSpec, probes: npt.NDArray[np.float64],
                top_k: int, head: int) -> tuple[list[list[Match]], int, int]:
        """Per probe, the exact ``top_k`` over every shard (each shard ranks its partition
        exactly, as one process does; the merged top-k are the whole gallery's), the gallery
        size and the number of damaged templates. Every shard must reflect change ``head`` or
        later; any shard down or behind raises :class:`~faceseal.errors.ShardUnavailable`
        (never a partial answer)."""

    def erased(self, tenant: str, subject_id: str, template_ids: list[str]) -> None:
        """The erasure committed: the owning shard drops the subject and replaces its snapshot
        before this returns."""

    def states(self) -> dict[str, str]:
        """Per shard ("0", "1", ...): "ok", "behind" or "down"."""


class PartitionStore:
    """A read view of a template store that shows a gallery only one partition's templates.

    It has only the methods a shard's gallery cache calls, each filtered or harmless (the change
    head; change summaries, whose erasures of other partitions' subjects are no-ops for this
    gallery); anything else is an ``AttributeError``, not the whole store: a store method added
    later cannot reach a shard's gallery unfiltered by accident (tested)."""

    def __init__(self, store: TemplateStore, owns: Owns) -> None:
        self._store = store
        self._owns = owns
        #: Tenants in which the gallery has met an erasure of one of its own subjects since
        #: :meth:`take_erasures` was last called (their snapshot must be replaced).
        self._erasures: set[str] = set()

    def changes(self, tenant: str, after: int, upto: int) -> ChangeSummary:
        summary = self._store.changes(tenant, after, upto)
        if any(self._owns(tenant, subject) for subject in summary.erased):
            self._erasures.add(tenant)
        return summary

    def take_erasures(self) -> set[str]:
        taken, self._erasures = self._erasures, set()
        return taken

    def templates_added(self, tenant: str, after: int, upto: int,
                        batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        for page in self._store.templates_added(tenant, after, upto, batch_size):
            mine = [row for row in page if self._owns(row.tenant, row.subject_id)]
            if mine:
                yield mine

    def template_tuples_of_tenant(self, tenant: str, upto: int, batch_size: int = 10_000
                                  ) -> Iterator[list[tuple[Any, ...]]]:
        for page in self._store.template_tuples_of_tenant(tenant, upto, batch_size):
            mine = [row for row in page if self._owns(row[1], row[2])]
            if mine:
                yield mine

    def direct_read_source(self, tenant: str, at_least: int) -> DirectSource | None:
        del tenant, at_least
        return None  # a helper reading the store itself would see every partition

    def change_head(self, tenant: str) -> int:
        return self._store.change_head(tenant)


class PartitionSubjectKeys:
    """The subject key store, as a shard loading a whole tenant sees it: only its subjects'
    secrets are kept (the others are dropped as soon as they are read). As
    :class:`PartitionStore`, it has only what the gallery cache calls."""

    def __init__(self, keys: SubjectKeyStore, owns: Owns) -> None:
        self._keys = keys
        self._owns = owns

    def for_tenant(self, tenant: str | None) -> dict[SubjectRef, SecretBytes]:
        found = self._keys.for_tenant(tenant)
        return {ref: secret for ref, secret in found.items() if self._owns(ref[0], ref[1])}

    def get_many(self, refs: Iterable[SubjectRef]) -> dict[SubjectRef, SecretBytes]:
        return self._keys.get_many([ref for ref in refs if self._owns(ref[0], ref[1])])

    @property
    def direct_read_location(self) -> str | None:
        return None  # a helper reading the file itself would see every partition's secrets


@dataclass(frozen=True)
class Partition:
    """A shard's gallery cache, the store view it reads through, and what an exact re-rank of
    its candidates needs (the store itself and the record sealer)."""

    cache: GalleryCache
    view: PartitionStore
    store: TemplateStore
    sealer: RecordSealer


def partition_cache(*, home: Path, key_dir: Path, layout: str, owns: Owns,
                    store: TemplateStore, sealer: RecordSealer, subject_keys: SubjectKeyStore,
                    data_keys: DataKeyManager, models: dict[str, ModelSpec], vault_id: str,
                    keyset_id: bytes) -> Partition:
    """A gallery cache holding only the partition ``owns`` accepts; its snapshots live in
    ``<home>/shards/<layout>/`` with their keys in ``<key dir>/shards/<layout>/`` (apart from
    the single-process snapshot and from every other shard's)."""
    snapshot_home = home / "shards" / layout
    snapshot_keys = key_dir / "shards" / layout
    ensure_private_dir(home / "shards")
    ensure_private_dir(snapshot_home)
    ensure_private_dir(key_dir / "shards")
    ensure_private_dir(snapshot_keys)
    view = PartitionStore(store, owns)
    as_store = cast(TemplateStore, view)  # a view: the store's interface, by delegation
    keys = cast(SubjectKeyStore, PartitionSubjectKeys(subject_keys, owns))
    snapshots = SnapshotStore(snapshot_home, snapshot_keys, data_keys, as_store,
                              vault_id=vault_id, keyset_id=keyset_id)
    return Partition(GalleryCache(as_store, sealer, keys, snapshots, models), view, store,
                     sealer)


def shred_shard_snapshots(*, home: Path, key_dir: Path, tenant: str, subject_id: str,
                          partition_key: SecretBytes, data_keys: DataKeyManager,
                          store: TemplateStore, vault_id: str, keyset_id: bytes) -> int:
    """After an erasure, by any process: destroy the snapshot of ``tenant`` held by the shard
    that owns ``subject_id``, in every shard layout on disk (running or not), so no shard
    snapshot copied before the erasure can bring the subject back. The shard itself rewrites
    it (a running one within a follow interval; a stopped one when it next loads). Returns how
    many layouts' snapshots were destroyed."""
    root = key_dir / "shards"
    if not root.is_dir():
        return 0
    destroyed = 0
    for directory in sorted(root.iterdir()):
        layout = parse_layout(directory.name)
        if layout is None or not directory.is_dir():
            continue
        fingerprint, index, shards = layout
        if 1 <= shards <= 4096:
            partitioner = Partitioner(partition_key, shards)
            # A layout of this vault whose owner is another shard holds no copy of the subject.
            if partitioner.fingerprint() == fingerprint \
                    and partitioner.shard_of(tenant, subject_id) != index:
                continue
        SnapshotStore(home / "shards" / directory.name, directory, data_keys, store,
                      vault_id=vault_id, keyset_id=keyset_id).discard(tenant)
        destroyed += 1
    return destroyed
