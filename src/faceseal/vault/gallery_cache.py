"""The in-memory galleries of one vault process, kept in step with every process's writes.

A gallery is a cache: the store's records are the truth, and other processes (the CLI, cron's
``faceseal purge``, other ``faceseal serve`` replicas) write to the same store. Every store keeps
a per-tenant *change log* (:meth:`~faceseal.storage.base.TemplateStore.change_head`): each write
that changes what a gallery must hold bumps the tenant's head in the same transaction. This
module keeps, per tenant, the head its galleries reflect (``applied``), and before a gallery
answers it reads the store's head -- one indexed read -- and applies the delta if they differ:

* subjects erased since are removed (their rows overwritten);
* templates added since are read and decrypted -- only those -- and added.

Never a full reload for a small delta. The guarantee (docs/architecture.md): once ``erase`` has
returned, no process of the vault answers with the erased subject; once ``enroll`` has returned,
every process finds the new templates. A process that holds a gallery at head N has applied
every change numbered <= N, because heads only grow and a change commits with its number.

Snapshots (:mod:`faceseal.vault.snapshot`) record the head they reflect, so a process starting
from one applies only the delta since, whoever wrote it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceseal.errors import FacesealError
from faceseal.keys.subject_keys import SubjectKeyStore
from faceseal.matching.gallery import Gallery
from faceseal.matching.models import ModelSpec
from faceseal.storage.base import TemplateRow, TemplateStore, template_tuple
from faceseal.vault.parallel_open import ParallelLoad, helper_enabled
from faceseal.vault.records import BulkOpened, RecordSealer
from faceseal.vault.rwlock import SharedLock
from faceseal.vault.snapshot import SnapshotStore

log = logging.getLogger(__name__)

#: A tenant at least this large is read by the loader's helper process itself, where the
#: store allows it (smaller ones load faster than the helper starts), and its snapshot is
#: written after the first answer rather than before.
DIRECT_READ_AT_LEAST = 20_000

#: A follower rewrites a snapshot that lags this many changes behind its gallery (and a closing
#: process any that lags at all), so that the next start is fast again.
RESNAPSHOT_AFTER = 1000
#: A follower rewrites a tenant's snapshot at most this often.
RESNAPSHOT_SECONDS = 5.0


@dataclass(frozen=True)
class TenantState:
    """What a process's galleries hold for one tenant (counts and numbers only)."""

    applied: int
    templates: int
    damaged: int


class GalleryCache:
    """Galleries per (tenant, model), the change each tenant reflects, damaged templates, and
    the tenant's snapshot. Thread-safe: one lock guards the bookkeeping; galleries guard their
    own arrays."""

    def __init__(self, store: TemplateStore, sealer: RecordSealer, subject_keys: SubjectKeyStore,
                 snapshots: SnapshotStore, models: dict[str, ModelSpec]) -> None:
        self._store = store
        self._sealer = sealer
        self._subject_keys = subject_keys
        self._snapshots = snapshots
        self._models = models
        self._galleries: dict[tuple[str, str], Gallery] = {}
        self._applied: dict[str, int] = {}
        self._saved: dict[str, int] = {}
        self._damaged: dict[str, TemplateRow] = {}
        self._last_persist: dict[str, float] = {}
        #: Threads writing a snapshot after a large load (see _persist_soon).
        self._writers: list[threading.Thread] = []
        self._writers_lock = threading.Lock()
        # Exclusive for bookkeeping and deltas; shared while a search reads a gallery.
        self._lock = SharedLock()
        #: A change follower writes snapshots in the background (see :meth:`shred_snapshot`).
        self.background_persist = False
        #: How each tenant's galleries were loaded: source, seconds, templates, delta.
        self.loads: dict[str, dict[str, Any]] = {}

    # --- answering ---------------------------------------------------------------------------

    @contextmanager
    def answering(self, tenant: str, spec: ModelSpec) -> Iterator[tuple[Gallery | None, int]]:
        """The tenant's gallery of ``spec`` with every change committed before this call applied,
        and how many of the tenant's templates are damaged; held *shared* while the caller
        searches it, so searches run side by side and a delta waits until they are done.

        The store's head is read first, outside any lock (one indexed read); if the galleries
        already reflect it (the common case) the search starts at once, else the delta is
        applied under the exclusive lock and the check repeats. Heads only grow, so a gallery at
        head >= the one read holds every change committed before the call (an erasure that
        returned before it is gone; an enrolment is there)."""
        while True:
            head = self._store.change_head(tenant) if self.is_loaded(tenant) else None
            with self._lock.shared():
                applied = self._applied.get(tenant)
                if head is not None and applied is not None and applied >= head:
                    damaged = sum(1 for row in self._damaged.values() if row.tenant == tenant)
                    yield self._galleries.get((tenant, spec.model_id)), damaged
                    return
            self.catch_up(tenant)

    def fresh(self, tenant: str, spec: ModelSpec) -> tuple[Gallery | None, int]:
        """The tenant's gallery of ``spec`` with every committed change applied, and how many of
        the tenant's templates are damaged. Call (and search) under :meth:`holding`."""
        with self._lock:
            self.catch_up(tenant)
            damaged = sum(1 for row in self._damaged.values() if row.tenant == tenant)
            return self._galleries.get((tenant, spec.model_id)), damaged

    def holding(self) -> SharedLock:
        """The lock under which a caller reads a gallery it got from :meth:`fresh`, so that no
        delta is applied between the freshness check and the answer (exclusive: prefer
        :meth:`answering`, which lets searches run side by side)."""
        return self._lock

    def catch_up(self, tenant: str, known: dict[str, Any] | None = None) -> int:
        """Load the tenant, or apply the changes committed since it was loaded; returns the head
        its galleries now reflect. ``known``: plaintext of templates this process just wrote."""
        with self._lock:
            if tenant not in self._applied:
                self._load(tenant)
                return self._applied[tenant]
            head = self._store.change_head(tenant)
            if head != self._applied[tenant]:
                self._apply(tenant, head, known)
            return self._applied[tenant]

    def catch_up_all(self) -> None:
        """Catch up every loaded tenant (what a replica's change follower calls)."""
        with self._lock:
            tenants = sorted(self._applied)
        for tenant in tenants:
            self.catch_up(tenant)

    def is_loaded(self, tenant: str) -> bool:
        with self._lock:
            return tenant in self._applied

    # --- writes made by this process ---------------------------------------------------------

    def after_write(self, tenant: str, known: dict[str, Any] | None = None) -> None:
        """This process committed a change to ``tenant``: apply it now if the tenant is loaded
        (read-your-writes without waiting for the next answer). ``known`` maps the template ids
        it just wrote to their encodings, which need no decryption (the rows are still read from
        the store: the log, not the caller, says what the gallery must hold)."""
        with self._lock:
            if tenant in self._applied:
                self.catch_up(tenant, known)

    def after_erase(self, tenant: str, subject_id: str, template_ids: Iterable[str]) -> None:
        """The erasure committed: drop the subject from memory at once (overwritten) and catch
        up with the log. Call :meth:`shred_snapshot` before the erasure returns."""
        with self._lock:
            for (gallery_tenant, _), gallery in self._galleries.items():
                if gallery_tenant == tenant:
                    gallery.remove_subject(subject_id)
            for template_id in template_ids:
                self._damaged.pop(template_id, None)
            if tenant in self._applied:
                self.catch_up(tenant)

    def shred_snapshot(self, tenant: str) -> str:
        """After erasures: leave no readable snapshot of ``tenant`` that holds an erased subject.

        The snapshot is *replaced* (a fresh key destroys the old one) by one that reflects the
        erasures, so the next process still starts fast; when that is not cheap it is destroyed:

        * this process holds the tenant: with a change follower running (a server), the old
          snapshot is destroyed now and the follower writes the new one within a round or two
          (writing a large snapshot per erasure would stall a busy server); otherwise the new
          snapshot is written now;
        * it does not (the CLI, cron's purge): the old snapshot is opened, the change log
          applied, the result written under a fresh key and dropped from memory -- a sequential
          read and write, never a decryption of every record; if the snapshot cannot be opened
          it is destroyed.

        Returns what was done: "replaced", "destroyed" or "none" (no snapshot).
        """
        with self._lock:
            if tenant in self._applied:
                self.catch_up(tenant)
                if self.background_persist:
                    self._snapshots.discard(tenant)
                    self._saved.pop(tenant, None)
                    return "destroyed"
                self._saved.pop(tenant, None)
                return "replaced" if self.persist(tenant) else self._destroy(tenant)
            if not self._snapshots.exists(tenant):
                return "none"
            try:
                loaded = self._load(tenant, snapshot_only=True)
                if not loaded:
                    return self._destroy(tenant)
                if self._saved.get(tenant) != self._applied[tenant]:
                    self._saved.pop(tenant, None)
                    if not self.persist(tenant):
                        return self._destroy(tenant)
                return "replaced"
            finally:
                self._unload(tenant)

    def _destroy(self, tenant: str) -> str:
        self._snapshots.discard(tenant)
        self._saved.pop(tenant, None)
        return "destroyed"

    def persist_due(self) -> None:
        """What a change follower calls after each round: write the snapshot of every loaded
        tenant that has none (destroyed by an erasure) or that lags by many additions, at most
        once per :data:`RESNAPSHOT_SECONDS` per tenant."""
        now = time.monotonic()
        with self._lock:
            due = [t for t, applied in self._applied.items()
                   if now - self._last_persist.get(t, 0.0) >= RESNAPSHOT_SECONDS
                   and (t not in self._saved or applied - self._saved[t] >= RESNAPSHOT_AFTER)]
        for tenant in due:
            self._last_persist[tenant] = now
            self.persist(tenant)

    def note_damaged(self, rows: Iterable[TemplateRow]) -> None:
        with self._lock:
            for row in rows:
                self._damaged[row.template_id] = row

    # --- status ------------------------------------------------------------------------------

    def states(self) -> dict[str, TenantState]:
        with self._lock.shared():
            return {
                tenant: TenantState(
                    applied,
                    sum(len(g) for (t, _), g in self._galleries.items() if t == tenant),
                    sum(1 for row in self._damaged.values() if row.tenant == tenant))
                for tenant, applied in sorted(self._applied.items())
            }

    def lag(self) -> dict[str, int]:
        """Per loaded tenant: how many changes the store holds that this process has not
        applied (0 when caught up). Reads each head once."""
        with self._lock.shared():
            applied = dict(self._applied)
        return {tenant: max(0, self._store.change_head(tenant) - seq)
                for tenant, seq in sorted(applied.items())}

    def galleries_of(self, tenant: str) -> dict[str, Gallery]:
        with self._lock.shared():
            return {model_id: g for (t, model_id), g in self._galleries.items() if t == tenant}

    # --- snapshots and shutdown --------------------------------------------------------------

    def persist(self, tenant: str) -> bool:
        """Write the tenant's snapshot if memory holds changes not yet in one. A snapshot that
        cannot be written is logged and skipped: it is only a cache.

        Held shared: searches go on while a snapshot is written (a large one takes a while, and
        a server's follower writes one after erasures); only deltas wait."""
        with self._lock.shared():
            applied = self._applied.get(tenant)
            if applied is None or self._saved.get(tenant) == applied:
                return False
            if any(row.tenant == tenant for row in self._damaged.values()):
                return False  # a snapshot would hide the damage; the records path reports it
            try:
                self._snapshots.save(tenant, applied, self.galleries_of(tenant))
            except (OSError, FacesealError) as exc:
                log.warning("index snapshot not written: %s", exc)
                return False
            self._saved[tenant] = applied
        # An erasure may have committed between our last catch-up and the write: then the file
        # may hold the erased subject, and it must not survive (the eraser may have checked for a
        # snapshot before this one existed).
        try:
            summary = self._store.changes(tenant, applied, self._store.change_head(tenant))
        except FacesealError:
            summary = None
        if summary is None or summary.erased or not summary.complete:
            self._snapshots.discard(tenant)
            with self._lock:
                self._saved.pop(tenant, None)
            return False
        return True

    def close(self) -> None:
        """Persist what is worth it, then overwrite every gallery in memory."""
        self.wait_for_snapshots()  # before taking the lock: a writer needs it shared
        with self._lock:
            for tenant in sorted(self._applied):
                self.persist(tenant)
            for gallery in self._galleries.values():
                gallery.clear()
            self._galleries.clear()
            self._applied.clear()

    # --- loading -----------------------------------------------------------------------------

    def _gallery(self, tenant: str, spec: ModelSpec) -> Gallery:
        key = (tenant, spec.model_id)
        gallery = self._galleries.get(key)
        if gallery is None:
            gallery = self._galleries[key] = Gallery(spec.dimension, spec.metric)
        return gallery

    def _load(self, tenant: str, *, snapshot_only: bool = False) -> bool:
        """First use of a tenant in this process: from its snapshot plus the delta since, or
        from the records (unless ``snapshot_only``: then False when there is no usable
        snapshot, and nothing is loaded)."""
        started = time.perf_counter()
        head = self._store.change_head(tenant)
        snapshot = self._snapshots.load(tenant, self._models)
        if snapshot is not None and snapshot.seq <= head \
                and self._store.changes(tenant, snapshot.seq, head).complete:
            for model_id, loaded in snapshot.galleries.items():
                self._galleries[(tenant, model_id)] = loaded
            self._applied[tenant] = self._saved[tenant] = snapshot.seq
            delta = self._apply(tenant, head) if head != snapshot.seq else (0, 0)
            if tenant in self._applied:  # the delta did not force a full reload
                total = sum(len(g) for g in self.galleries_of(tenant).values())
                self.loads[tenant] = {"source": "snapshot", "templates": total,
                                      "snapshot_templates": snapshot.templates,
                                      "delta_added": delta[0], "delta_erased": delta[1],
                                      "seconds": time.perf_counter() - started}
                if delta[1]:  # the snapshot holds erased subjects: replace it now
                    self.persist(tenant)
                return True
        elif snapshot is not None:
            for gallery in snapshot.galleries.values():
                gallery.clear()  # from a future the store does not know: not trusted
        if snapshot_only:
            self._unload(tenant)
            return False
        count, here, by_helper = self._decrypt_whole(tenant, head)
        self._applied[tenant] = head
        self.loads[tenant] = {"source": "records", "templates": count,
                              "pages_opened_here": here, "pages_opened_by_helper": by_helper,
                              "seconds": time.perf_counter() - started}
        log.debug("loaded gallery: %d template(s) in %.3f s", count,
                  time.perf_counter() - started)
        if count >= DIRECT_READ_AT_LEAST:
            self._persist_soon(tenant)  # the first answer does not wait for the snapshot
        else:
            self.persist(tenant)
        return True

    def _persist_soon(self, tenant: str) -> None:
        """Write the tenant's snapshot from a thread of its own: it waits for the load's
        exclusive lock to go, then writes while searches go on (about 0.45 s at 1M templates
        that the first answer no longer waits for). :meth:`close` waits for it."""
        def write() -> None:
            try:
                self.persist(tenant)
            except Exception:  # a cache: a failure here must reach no caller
                log.warning("index snapshot not written", exc_info=True)

        writer = threading.Thread(target=write, name="faceseal-snapshot", daemon=True)
        with self._writers_lock:
            self._writers = [w for w in self._writers if w.is_alive()] + [writer]
        writer.start()

    def wait_for_snapshots(self) -> None:
        """Return once the snapshots being written in the background are written."""
        with self._writers_lock:
            writers = list(self._writers)
        for writer in writers:
            writer.join()

    def _apply(self, tenant: str, head: int,
               known: dict[str, Any] | None = None) -> tuple[int, int]:
        """Apply the changes in (applied, head]; returns (templates added, subjects erased)."""
        applied = self._applied[tenant]
        summary = self._store.changes(tenant, applied, head)
        if not summary.complete:
            log.info("the change log no longer reaches this gallery; reloading the tenant")
            self._unload(tenant)
            self._load(tenant)
            return 0, 0
        for subject_id in summary.erased:
            for (gallery_tenant, _), gallery in self._galleries.items():
                if gallery_tenant == tenant:
                    gallery.remove_subject(subject_id)
            for template_id in [t for t, row in self._damaged.items()
                                if row.tenant == tenant and row.subject_id == subject_id]:
                del self._damaged[template_id]
        added = 0
        if summary.added:
            pages = ([template_tuple(r) for r in page]
                     for page in self._store.templates_added(tenant, applied, head))
            added = self._decrypt_into(tenant, pages, known=known)
        self._applied[tenant] = head
        log.debug("applied %d change(s): %d template(s) added, %d subject(s) erased",
                  head - applied, added, len(summary.erased))
        return added, len(summary.erased)

    def _unload(self, tenant: str) -> None:
        for key in [k for k in self._galleries if k[0] == tenant]:
            self._galleries.pop(key).clear()
        self._applied.pop(tenant, None)
        self._saved.pop(tenant, None)

    def _add_known(self, tenant: str, rows: list[TemplateRow], known: dict[str, Any]) -> int:
        by_model: dict[str, list[TemplateRow]] = {}
        for row in rows:
            by_model.setdefault(row.model_id, []).append(row)
        added = 0
        for model_id, items in by_model.items():
            spec = self._models.get(model_id)
            if spec is None:
                continue
            self._gallery(tenant, spec).add_many(
                [r.subject_id for r in items], [r.template_id for r in items],
                np.stack([known[r.template_id] for r in items]))
            added += len(items)
        return added

    def _decrypt_whole(self, tenant: str, head: int) -> tuple[int, int, int]:
        """Load every template of ``tenant`` up to change ``head``, on both cores: a helper
        process reads and opens (SQLite, a large tenant) or opens pages read here. Returns
        (templates, units opened here, units opened by the helper)."""
        keys: dict[Any, Any] = {}
        count = 0

        def index(result: BulkOpened) -> None:
            nonlocal count
            count += self._index(tenant, result)

        load = ParallelLoad(self._sealer, tenant, keys, self._sealer.usable_data_keys)
        source = self._store.direct_read_source(tenant, DIRECT_READ_AT_LEAST) \
            if helper_enabled() else None
        if source is not None:
            # The helper starts, and reads the secrets itself, while this process reads them.
            load.start(self._subject_keys.direct_read_location)
            if len(self._models) == 1:  # room for every template at once
                self._gallery(tenant, next(iter(self._models.values()))).reserve(
                    source.templates)
        # The load makes millions of short-lived tuples: the cyclic collector would walk the
        # whole heap again and again (a process holding 1 GB of other objects loaded 1M
        # templates in 11 s instead of 9.5). Nothing it makes is cyclic; collection resumes after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            load.secrets = self._subject_keys.for_tenant(tenant)  # every secret, in one pass
            if source is not None:
                load.run_ranges(source, head, index)
            else:
                load.run(self._store.template_tuples_of_tenant(tenant, head), index)
            return count, load.units_here, load.units_by_helper
        finally:
            if collecting:
                gc.enable()
            load.close()
            keys.clear()

    def _decrypt_into(self, tenant: str, batches: Iterator[list[tuple[Any, ...]]], *,
                      known: dict[str, Any] | None = None) -> int:
        """Open a delta's pages (its own subjects' secrets only) into the galleries."""
        # Record keys cached across pages (pages do not follow subjects): one derivation per
        # subject and data-key version. Dropped when the load is done.
        keys: dict[Any, Any] = {}
        count = 0
        try:
            for page in batches:  # a delta asks only for its own subjects' secrets
                batch = page
                if known:
                    batch = [r for r in page if r[0] not in known]
                    count += self._add_known(
                        tenant, [TemplateRow(*r) for r in page if r[0] in known], known)
                count += self._index(tenant, self._sealer.open_bulk(tenant, batch, None, keys))
            return count
        finally:
            keys.clear()

    def _index(self, tenant: str, result: BulkOpened) -> int:
        """Put what was opened into the tenant's galleries; returns how many templates."""
        count = 0
        for row in result.damaged:
            self._damaged[row.template_id] = row
        for model_id, subject_ids, template_ids, matrix in result.opened:
            spec = self._models.get(model_id)
            if spec is None:
                log.warning("templates of unknown model %s left out of the gallery", model_id)
            elif matrix.shape[1] != spec.dimension:
                log.warning("templates of model %s with another dimension left out of the "
                            "gallery", model_id)
            else:
                self._gallery(tenant, spec).add_many(subject_ids, template_ids, matrix)
                count += len(template_ids)
            if matrix.flags.writeable:  # best effort: a decrypted copy is overwritten
                matrix.fill(0.0)
        return count
