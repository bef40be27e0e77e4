"""The file store: for deployments without a database.

One private directory (0700) of private files (0600), every file written atomically: a temp file
in the same directory, fsync, rename over the old one, fsync of the directory. Layout (described in
docs/storage.md)::

    <root>/
      store.json                       format marker and schema version
      meta.json                        small metadata (vault id, ...)
      data_keys.json                   wrapped data keys and their encryption counters
      principals.json                  principals and API-key hashes
      audit.jsonl                      the audit log, one JSON event per line, append-only
      counters.json                    shared failed-authentication counters (no secrets)
      tenants/<sha256(tenant)>/
        tenant.json                    the tenant's name and retention setting
        .changes.json                  the tenant's change log: head, newest entries
        <sha256(subject)>.json         one subject: its metadata and sealed templates
      undo.jsonl                       present only while a transaction runs (or after a crash)
      .lock                            flock(2) target serialising processes

File names hash tenant and subject ids, so ids of any length and alphabet map to safe, fixed-size
names and a directory listing does not spell out who is enrolled.

Transactions: before a transaction first changes a file it appends the file's previous content
(or its absence, or the audit log's length) to ``undo.jsonl`` and fsyncs it. Committing deletes
the undo log (and fsyncs the directory); that unlink is the commit point. A rollback -- or the
next process to take the lock after a crash -- puts every saved pre-image back and truncates the
audit log. Every operation holds an exclusive ``flock`` on ``.lock`` for its duration, so other
processes never see a transaction half-done; threads share the store object under a lock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faceseal.errors import (
    AuditWriteFailed,
    Conflict,
    InvalidInput,
    StorageMisconfigured,
    StorageUnavailable,
)
from faceseal.keys.datakeys import DataKeyInfo
from faceseal.keys.files import (
    PRIVATE_FILE_MODE,
    ensure_private_dir,
    fsync_dir,
    make_private_dirs,
    write_private_atomic,
)
from faceseal.storage.base import (
    FROM_START,
    MAX_COUNTER_WINDOW,
    AuditRecord,
    ChangeSummary,
    PrincipalRow,
    SubjectRow,
    TemplateRow,
    TemplateStore,
    window_wait,
)

log = logging.getLogger(__name__)

FORMAT = "faceseal-files"
STORE_FILE = "store.json"
META_FILE = "meta.json"
DATA_KEYS_FILE = "data_keys.json"
PRINCIPALS_FILE = "principals.json"
AUDIT_FILE = "audit.jsonl"
UNDO_FILE = "undo.jsonl"
LOCK_FILE = ".lock"
TENANTS_DIR = "tenants"
TENANT_FILE = "tenant.json"
CHANGES_FILE = ".changes.json"
COUNTERS_FILE = "counters.json"
#: Change-log entries kept per tenant; a gallery further behind than this reloads the tenant.
CHANGES_KEPT = 4096
_AUDIT_CHUNK = 1 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _name_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _create_layout(root: Path) -> None:
    make_private_dirs(root / TENANTS_DIR)
    fsync_dir(root)


def _change_log_layout(root: Path) -> None:
    """Version 2: per-tenant change logs (created on first change) and shared counters. Nothing
    to move; the version tells older faceseal releases, which would not log changes, to stop."""


def _signed_principals(root: Path) -> None:
    """Version 3: principals carry a MAC and subjects an inventory (``principals.json`` entries
    gain ``mac``, subject files ``inventory``; older ones read as unsigned until `faceseal
    migrate` signs them). Nothing to rewrite here."""
    del root


#: Versioned migrations of the directory layout. Append only; a version missing from the list
#: is no obstacle (``store.json`` records which steps were applied).
MIGRATIONS: list[tuple[int, Callable[[Path], None]]] = [
    (1, _create_layout),
    (2, _change_log_layout),
    (3, _signed_principals),
]


class FileStore(TemplateStore):
    """Template store in one private directory of atomically replaced files."""

    SCHEMA_VERSION = max(version for version, _ in MIGRATIONS)

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self._root = root
        try:
            if create:
                ensure_private_dir(root)
            elif not root.is_dir():
                raise StorageUnavailable(f"no file store at {root}")
            mode = stat.S_IMODE(root.stat().st_mode)
            if mode & 0o077:
                raise StorageMisconfigured(
                    f"the file store {root} is accessible to other users (mode {mode:o}); "
                    f"run: chmod 700 {root}"
                )
            self._lock_fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open the file store {root}: {exc.strerror}") from None
        self._lock = threading.RLock()
        self._held = 0  # nesting depth of _locked() in this process
        self._txn = 0  # nesting depth of transaction()
        self._saved: set[str] = set()  # files whose pre-image this transaction saved
        self._audit_saved = False
        self._closed = False

    # --- locking and transactions ----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise StorageUnavailable("the file store is closed")
            if self._held == 0:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                except OSError as exc:
                    raise StorageUnavailable(f"cannot lock the file store: {exc.strerror}") \
                        from None
                try:
                    if self._txn == 0 and (self._root / UNDO_FILE).exists():
                        log.warning("rolling back a file-store transaction left by a crash")
                        self._rollback()
                except BaseException:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    raise
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
                if self._held == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._locked():
            if self._txn:
                self._txn += 1
                try:
                    yield
                finally:
                    self._txn -= 1
                return
            self._txn = 1
            try:
                yield
            except BaseException:
                self._txn = 0
                self._rollback()
                raise
            self._txn = 0
            self._commit()

    def _commit(self) -> None:
        self._saved.clear()
        self._audit_saved = False
        undo = self._root / UNDO_FILE
        try:
            if undo.exists():
                undo.unlink()
                fsync_dir(self._root)
        except OSError as exc:
            raise StorageUnavailable(f"file store commit failed: {exc.strerror}") from None

    def _rollback(self) -> None:
        self._saved.clear()
        self._audit_saved = False
        undo = self._root / UNDO_FILE
        try:
            lines = undo.read_bytes().split(b"\n") if undo.exists() else []
            entries = []
            for line in lines:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    break  # a torn last line: its changes never started
            for entry in reversed(entries):
                if "audit_len" in entry:
                    with open(self._root / AUDIT_FILE, "r+b") as handle:
                        handle.truncate(int(entry["audit_len"]))
                        os.fsync(handle.fileno())
                    continue
                for rel, content in reversed(entry["files"]):
                    path = self._root / rel
                    if content is None:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            fsync_dir(path.parent)
                    else:
                        make_private_dirs(path.parent)
                        write_private_atomic(path, _unb64(content))
            if undo.exists():
                undo.unlink()
                fsync_dir(self._root)
        except (OSError, ValueError, KeyError) as exc:
            raise StorageUnavailable(f"file store rollback failed: {exc}") from None

    def _append_undo(self, entry: dict[str, Any]) -> None:
        """Append one undo entry and make it durable before the change it undoes happens."""
        data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        path = self._root / UNDO_FILE
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self._root)

    def _save_pre_images(self, paths: Sequence[Path]) -> None:
        """Record what ``paths`` hold now, once per transaction, before they change."""
        todo: list[list[str | None]] = []
        for path in paths:
            rel = path.relative_to(self._root).as_posix()
            if rel in self._saved:
                continue
            try:
                todo.append([rel, _b64(path.read_bytes())])
            except FileNotFoundError:
                todo.append([rel, None])
            self._saved.add(rel)
        if todo:
            self._append_undo({"files": todo})

    def _write(self, path: Path, document: Any) -> None:
        self._save_pre_images([path])
        if not path.parent.is_dir():
            make_private_dirs(path.parent)
            fsync_dir(path.parent.parent)
        write_private_atomic(path, json.dumps(document, separators=(",", ":")).encode())

    def _delete(self, path: Path) -> None:
        self._save_pre_images([path])
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    @contextmanager
    def _writing(self, operation: str) -> Iterator[None]:
        try:
            with self.transaction():
                yield
        except OSError as exc:
            raise StorageUnavailable(f"file store {operation} failed: {exc.strerror}") from None

    def _read(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise StorageUnavailable(f"file store read failed: {exc.strerror}") from None
        except ValueError:
            raise StorageUnavailable(
                f"file store file {path.relative_to(self._root)} is damaged") from None

    # --- paths -----------------------------------------------------------------------------------

    def _tenant_dir(self, tenant: str) -> Path:
        return self._root / TENANTS_DIR / _name_hash(tenant)

    def _subject_path(self, tenant: str, subject_id: str) -> Path:
        return self._tenant_dir(tenant) / f"{_name_hash(subject_id)}.json"

    def _subject_files(self, tenant: str | None) -> list[Path]:
        base = self._root / TENANTS_DIR
        dirs = [self._tenant_dir(tenant)] if tenant is not None else (
            sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else [])
        files: list[Path] = []
        for directory in dirs:
            if directory.is_dir():
                files.extend(sorted(p for p in directory.iterdir()
                                    if p.suffix == ".json" and p.name != TENANT_FILE
                                    and not p.name.startswith(".")))
        return files

    # --- schema ----------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._locked():
            document = self._read(self._root / STORE_FILE, None)
        if document is None:
            return 0
        if document.get("format") != FORMAT:
            raise StorageUnavailable(f"{self._root} is not a faceseal file store")
        return int(document["schema_version"])

    def migrate(self) -> tuple[int, int]:
        with self._writing("migration"):
            before = self.schema_version()
            document = self._read(self._root / STORE_FILE, None) or {}
            # Stores written before "applied" was kept had every step up to their version.
            applied = set(document.get("applied", range(1, before + 1)))
            for version, step in MIGRATIONS:
                if version in applied:
                    continue
                step(self._root)
                applied.add(version)
                self._write(self._root / STORE_FILE,
                            {"format": FORMAT, "schema_version": max(applied),
                             "applied": sorted(applied)})
                log.info("applied file-store migration %d", version)
            return before, self.schema_version()

    # --- metadata --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._locked():
            value = self._read(self._root / META_FILE, {}).get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self._writing("metadata write"):
            meta = self._read(self._root / META_FILE, {})
            meta[key] = value
            self._write(self._root / META_FILE, meta)

    # --- templates and subjects ------------------------------------------------------------------

    def add_templates(self, rows: Sequence[TemplateRow]) -> None:
        if not rows:
            return
        now = time.time()
        by_subject: dict[tuple[str, str], list[TemplateRow]] = {}
        for row in rows:
            by_subject.setdefault((row.tenant, row.subject_id), []).append(row)
        ids = [r.template_id for r in rows]
        if len(set(ids)) != len(ids):
            raise Conflict("the batch holds the same template id twice")
        with self._writing("enrolment"):
            versions = {k["version"] for k in self._read(self._root / DATA_KEYS_FILE, [])}
            unknown = sorted({r.key_version for r in rows} - versions)
            if unknown:
                raise Conflict(f"no data key of version {unknown[0]}")
            updates: list[tuple[Path, dict[str, Any]]] = []
            seqs = {tenant: self._log_change(tenant, "add",
                                             sorted({r.subject_id for r in rows
                                                     if r.tenant == tenant}),
                                             sum(1 for r in rows if r.tenant == tenant), now)
                    for tenant in sorted({r.tenant for r in rows})}
            for (tenant, subject_id), items in by_subject.items():
                path = self._subject_path(tenant, subject_id)
                document = self._read(path, None) or {
                    "tenant": tenant, "subject_id": subject_id, "created_at": now,
                    "last_seen_at": now, "templates": []}
                taken = {t["template_id"] for t in document["templates"]}
                if taken & {r.template_id for r in items}:
                    raise Conflict("a template with that id exists already")
                document["last_seen_at"] = now
                document["templates"].extend(_template_json(r, seqs[tenant]) for r in items)
                updates.append((path, document))
            self._save_pre_images([path for path, _ in updates])
            for path, document in updates:
                self._write(path, document)

    def subject_templates(self, tenant: str, subject_id: str) -> list[TemplateRow]:
        with self._locked():
            document = self._read(self._subject_path(tenant, subject_id), None)
        if document is None:
            return []
        rows = _rows_of(document)
        return sorted(rows, key=lambda r: (r.created_at, r.template_id))

    def gallery(self, tenant: str | None, batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size must be a positive integer")
        with self._locked():
            files = self._subject_files(tenant)
        yield from self._stream_rows(files, batch_size, lambda seq: True)

    def _stream_rows(self, files: Sequence[Path], batch_size: int,
                     wanted: Callable[[int], bool]) -> Iterator[list[TemplateRow]]:
        """The templates in ``files`` whose change number is ``wanted``, in batches; 64 files
        are read per hold of the lock, so other processes are not held up."""
        batch: list[TemplateRow] = []
        for start in range(0, len(files), 64):
            with self._locked():
                documents = [self._read(path, None) for path in files[start:start + 64]]
            for document in documents:
                if document is None:
                    continue  # erased meanwhile
                batch.extend(row for row, seq in _rows_and_changes(document) if wanted(seq))
                while len(batch) >= batch_size:
                    yield batch[:batch_size]
                    batch = batch[batch_size:]
        if batch:
            yield batch

    def subjects(self, tenant: str) -> list[SubjectRow]:
        with self._locked():
            documents = [self._read(path, None) for path in self._subject_files(tenant)]
        found = [SubjectRow(d["tenant"], d["subject_id"], float(d["created_at"]),
                            float(d["last_seen_at"]), len(d["templates"]),
                            _unb64(d.get("inventory", "")))
                 for d in documents if d is not None]
        return sorted(found, key=lambda s: s.subject_id)

    def subject_exists(self, tenant: str, subject_id: str) -> bool:
        with self._locked():
            return self._subject_path(tenant, subject_id).exists()

    def inventories(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._locked():
            for subject in dict.fromkeys(subject_ids):
                document = self._read(self._subject_path(tenant, subject), None)
                if document is not None:
                    found[subject] = _unb64(document.get("inventory", ""))
        return found

    def set_inventories(self, tenant: str, inventories: dict[str, bytes]) -> None:
        with self._writing("inventory write"):
            for subject, blob in inventories.items():
                path = self._subject_path(tenant, subject)
                document = self._read(path, None)
                if document is not None:
                    document["inventory"] = _b64(blob)
                    self._write(path, document)

    def touch_subject(self, tenant: str, subject_id: str, when: float) -> None:
        with self._writing("touch"):
            path = self._subject_path(tenant, subject_id)
            document = self._read(path, None)
            if document is not None and when > document["last_seen_at"]:
                document["last_seen_at"] = when
                self._write(path, document)

    def erase_subject(self, tenant: str, subject_id: str) -> list[str]:
        with self._writing("erasure"):
            path = self._subject_path(tenant, subject_id)
            document = self._read(path, None)
            if document is None:
                return []
            self._delete(path)
            self._log_change(tenant, "erase", [subject_id], len(document["templates"]),
                             time.time())
            return sorted(t["template_id"] for t in document["templates"])

    # --- the change log --------------------------------------------------------------------------

    def _log_change(self, tenant: str, kind: str, subjects: Sequence[str], templates: int,
                    now: float) -> int:
        """Append one change to the tenant's log (inside the write transaction)."""
        path = self._tenant_dir(tenant) / CHANGES_FILE
        log_doc = self._read(path, None) or {"head": 0, "floor": 0, "log": []}
        seq = int(log_doc["head"]) + 1
        entries = log_doc["log"]
        entries.append([seq, kind, list(subjects), templates, now])
        if len(entries) > CHANGES_KEPT:
            dropped = entries[:len(entries) - CHANGES_KEPT]
            log_doc["floor"] = int(dropped[-1][0])
            entries = entries[len(entries) - CHANGES_KEPT:]
        self._write(path, {"head": seq, "floor": log_doc["floor"], "log": entries})
        return seq

    def _change_log(self, tenant: str) -> dict[str, Any]:
        with self._locked():
            document: dict[str, Any] = self._read(self._tenant_dir(tenant) / CHANGES_FILE,
                                                  None) or {"head": 0, "floor": 0, "log": []}
        return document

    def change_head(self, tenant: str) -> int:
        return int(self._change_log(tenant)["head"])

    def changes(self, tenant: str, after: int, upto: int) -> ChangeSummary:
        document = self._change_log(tenant)
        entries = [e for e in document["log"] if after < int(e[0]) <= upto]
        return ChangeSummary(
            tenant, after, upto,
            erased=tuple(str(e[2][0]) for e in entries if e[1] == "erase"),
            added=sum(int(e[3]) for e in entries if e[1] == "add"),
            complete=after >= int(document["floor"]),
        )

    def templates_added(self, tenant: str, after: int, upto: int,
                        batch_size: int = 10_000) -> Iterator[list[TemplateRow]]:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size must be a positive integer")
        document = self._change_log(tenant)
        if after == FROM_START or after < int(document["floor"]):
            files = None
        else:
            files = sorted({self._subject_path(tenant, name) for e in document["log"]
                            if after < int(e[0]) <= upto and e[1] == "add" for name in e[2]})
        if files is None:
            with self._locked():
                files = self._subject_files(tenant)
        yield from self._stream_rows(files, batch_size, lambda seq: after < seq <= upto)

    # --- shared counters -------------------------------------------------------------------------

    def counter_take(self, key: str, limit: int | None, window: float, cost: int,
                     now: float) -> float | None:
        with self._writing("counter write"):
            path = self._root / COUNTERS_FILE
            counters: dict[str, list[list[float]]] = self._read(path, {})
            for name in list(counters):
                horizon = now - (window if name == key else MAX_COUNTER_WINDOW)
                kept = [e for e in counters[name] if e[0] > horizon]
                if kept:
                    counters[name] = kept
                else:
                    del counters[name]
            events = [(float(at), int(c)) for at, c in counters.get(key, [])]
            if limit is not None:
                wait = window_wait(events, limit, cost, window, now)
                if wait is not None:
                    return wait
            counters.setdefault(key, []).append([now, cost])
            self._write(path, counters)
            return None

    def counter_retry_after(self, key: str, limit: int, window: float,
                            now: float) -> float | None:
        with self._locked():
            counters = self._read(self._root / COUNTERS_FILE, {})
        events = [(float(at), int(c)) for at, c in counters.get(key, []) if at > now - window]
        return window_wait(events, limit, 1, window, now)

    def replace_records(self, rows: Sequence[TemplateRow]) -> int:
        changed = 0
        by_subject: dict[tuple[str, str], dict[str, TemplateRow]] = {}
        for row in rows:
            by_subject.setdefault((row.tenant, row.subject_id), {})[row.template_id] = row
        with self._writing("re-encryption"):
            for (tenant, subject_id), new in by_subject.items():
                path = self._subject_path(tenant, subject_id)
                document = self._read(path, None)
                if document is None:
                    continue
                hit = 0
                for template in document["templates"]:
                    replacement = new.get(template["template_id"])
                    if replacement is not None:
                        template["record"] = _b64(replacement.record)
                        template["key_version"] = replacement.key_version
                        hit += 1
                if hit:
                    self._write(path, document)
                    changed += hit
        return changed

    def key_version_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        with self._locked():
            for path in self._subject_files(None):
                document = self._read(path, None)
                for template in (document or {}).get("templates", []):
                    version = int(template["key_version"])
                    counts[version] = counts.get(version, 0) + 1
        return counts

    # --- data keys -------------------------------------------------------------------------------

    def load_data_keys(self) -> list[DataKeyInfo]:
        with self._locked():
            keys = self._read(self._root / DATA_KEYS_FILE, [])
        return sorted((DataKeyInfo(int(k["version"]), _unb64(k["wrapped"]),
                                   float(k["created_at"]), int(k["encryptions"])) for k in keys),
                      key=lambda k: k.version)

    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool:
        if version < 1:
            raise InvalidInput("data key versions start at 1")
        with self._writing("data key write"):
            keys = self._read(self._root / DATA_KEYS_FILE, [])
            if any(k["version"] == version for k in keys):
                return False
            keys.append({"version": version, "wrapped": _b64(wrapped),
                         "created_at": created_at, "encryptions": 0})
            self._write(self._root / DATA_KEYS_FILE, keys)
            return True

    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool:
        with self._writing("encryption count"):
            keys = self._read(self._root / DATA_KEYS_FILE, [])
            key = next((k for k in keys if k["version"] == version), None)
            if key is None:
                return False
            if key["encryptions"] + count > limit:
                return False
            key["encryptions"] += count
            self._write(self._root / DATA_KEYS_FILE, keys)
            return True

    def replace_wrapped(self, version: int, wrapped: bytes) -> None:
        with self._writing("data key rewrap"):
            keys = self._read(self._root / DATA_KEYS_FILE, [])
            for key in keys:
                if key["version"] == version:
                    key["wrapped"] = _b64(wrapped)
            self._write(self._root / DATA_KEYS_FILE, keys)

    # --- audit log -------------------------------------------------------------------------------

    def _audit_head(self) -> tuple[int, bytes]:
        path = self._root / AUDIT_FILE
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return 0, b""
                step = 4096
                while True:
                    start = max(0, size - step)
                    handle.seek(start)
                    tail = handle.read(size - start)
                    lines = tail.rstrip(b"\n").split(b"\n")
                    if len(lines) > 1 or start == 0:
                        last = json.loads(lines[-1])
                        return int(last["seq"]), _unb64(last["mac"])
                    step *= 4
        except FileNotFoundError:
            return 0, b""
        except (OSError, ValueError, KeyError):
            raise StorageUnavailable("the audit log's last line is unreadable") from None

    def append_audit(self, build: Callable[[int, bytes], AuditRecord]) -> AuditRecord:
        try:
            with self._writing("audit append"):
                seq, mac = self._audit_head()
                record = build(seq + 1, mac)
                if record.seq != seq + 1 or record.prev_mac != mac:
                    raise Conflict("the audit event does not continue the chain")
                path = self._root / AUDIT_FILE
                if not self._audit_saved:
                    length = path.stat().st_size if path.exists() else 0
                    self._append_undo({"audit_len": length})
                    self._audit_saved = True
                line = json.dumps(_audit_json(record), separators=(",", ":")).encode() + b"\n"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
                    try:
                        os.write(fd, line)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    raise StorageUnavailable(f"audit log write failed: {exc.strerror}") from None
                return record
        except (StorageUnavailable, Conflict) as exc:
            raise AuditWriteFailed(f"the audit event could not be written: {exc}") from None

    def audit_events(
        self, *, after_seq: int = 0, tenant: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        path = self._root / AUDIT_FILE
        offset, remaining = 0, limit
        while remaining is None or remaining > 0:
            with self._locked():
                try:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(_AUDIT_CHUNK)
                except FileNotFoundError:
                    return
                except OSError as exc:
                    raise StorageUnavailable(f"audit log read failed: {exc.strerror}") from None
            if not chunk:
                return
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                if len(chunk) < _AUDIT_CHUNK:
                    return
                raise StorageUnavailable("the audit log holds an oversized line")
            offset += end
            for line in chunk[:end].splitlines():
                record = _audit_record(json.loads(line))
                if record.seq <= after_seq:
                    continue
                if tenant is not None and record.tenant != tenant:
                    continue
                if since is not None and record.occurred_at < since:
                    continue
                yield record
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return

    # --- principals ------------------------------------------------------------------------------

    def add_principal(self, row: PrincipalRow) -> None:
        with self._writing("principal write"):
            principals = self._read(self._root / PRINCIPALS_FILE, [])
            if any(p["name"] == row.name for p in principals):
                raise Conflict(f"a principal named {row.name!r} exists already")
            if any(p["key_id"] == row.key_id or p["principal_id"] == row.principal_id
                   for p in principals):
                raise Conflict("a principal with that key id exists already")
            principals.append(_principal_json(row))
            self._write(self._root / PRINCIPALS_FILE, principals)

    def principal_by_key_id(self, key_id: str) -> PrincipalRow | None:
        for row in self.principals():
            if row.key_id == key_id:
                return row
        return None

    def principals(self) -> list[PrincipalRow]:
        with self._locked():
            principals = self._read(self._root / PRINCIPALS_FILE, [])
        return sorted((_principal_row(p) for p in principals), key=lambda p: p.name)

    def revoke_principal(self, name: str, when: float, mac: bytes = b"") -> bool:
        with self._writing("principal revocation"):
            principals = self._read(self._root / PRINCIPALS_FILE, [])
            for principal in principals:
                if principal["name"] == name and principal["revoked_at"] is None:
                    principal["revoked_at"] = when
                    principal["mac"] = _b64(mac)
                    self._write(self._root / PRINCIPALS_FILE, principals)
                    return True
            return False

    def set_principal_mac(self, principal_id: str, mac: bytes) -> bool:
        with self._writing("principal signing"):
            principals = self._read(self._root / PRINCIPALS_FILE, [])
            for principal in principals:
                if principal["principal_id"] == principal_id:
                    principal["mac"] = _b64(mac)
                    self._write(self._root / PRINCIPALS_FILE, principals)
                    return True
            return False

    # --- tenants and retention -------------------------------------------------------------------

    def set_retention(self, tenant: str, seconds: float | None) -> None:
        with self._writing("retention write"):
            self._write(self._tenant_dir(tenant) / TENANT_FILE,
                        {"tenant": tenant, "retention_seconds": seconds})

    def retention(self, tenant: str) -> float | None:
        with self._locked():
            document = self._read(self._tenant_dir(tenant) / TENANT_FILE, {})
        value = document.get("retention_seconds")
        return None if value is None else float(value)

    def tenants(self) -> list[str]:
        names: set[str] = set()
        base = self._root / TENANTS_DIR
        with self._locked():
            for directory in sorted(base.iterdir()) if base.is_dir() else []:
                settings = self._read(directory / TENANT_FILE, None)
                if settings is not None:
                    names.add(settings["tenant"])
                    continue
                for path in sorted(directory.glob("*.json")):
                    if path.name.startswith("."):
                        continue  # the change log, not a subject
                    document = self._read(path, None)
                    if document is not None:
                        names.add(document["tenant"])
                        break
        return sorted(names)

    def inactive_subjects(self, tenant: str, before: float) -> list[str]:
        return [s.subject_id for s in self.subjects(tenant) if s.last_seen_at < before]

    # --- life cycle ------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self._root

    def describe(self) -> str:
        return f"files:{self._root}"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def __repr__(self) -> str:
        return f"<FileStore {self._root.name}>"


def _template_json(row: TemplateRow, change_seq: int) -> dict[str, Any]:
    return {"template_id": row.template_id, "model_id": row.model_id,
            "dimension": row.dimension, "dtype": row.dtype, "key_version": row.key_version,
            "record": _b64(row.record), "created_at": row.created_at, "change_seq": change_seq}


def _rows_and_changes(document: dict[str, Any]) -> list[tuple[TemplateRow, int]]:
    return list(zip(_rows_of(document),
                    (int(t.get("change_seq", 0)) for t in document["templates"]), strict=True))


def _rows_of(document: dict[str, Any]) -> list[TemplateRow]:
    return [TemplateRow(t["template_id"], document["tenant"], document["subject_id"],
                        t["model_id"], int(t["dimension"]), t["dtype"], int(t["key_version"]),
                        _unb64(t["record"]), float(t["created_at"]))
            for t in document["templates"]]


def _audit_json(record: AuditRecord) -> dict[str, Any]:
    return {"seq": record.seq, "event_id": record.event_id, "occurred_at": record.occurred_at,
            "principal": record.principal, "role": record.role, "action": record.action,
            "tenant": record.tenant, "subject_id": record.subject_id,
            "template_ids": list(record.template_ids), "outcome": record.outcome,
            "request_id": record.request_id, "detail": record.detail,
            "prev_mac": _b64(record.prev_mac), "mac": _b64(record.mac)}


def _audit_record(data: dict[str, Any]) -> AuditRecord:
    return AuditRecord(int(data["seq"]), data["event_id"], float(data["occurred_at"]),
                       data["principal"], data["role"], data["action"], data["tenant"],
                       data["subject_id"], tuple(data["template_ids"]), data["outcome"],
                       data["request_id"], data["detail"], _unb64(data["prev_mac"]),
                       _unb64(data["mac"]))


def _principal_json(row: PrincipalRow) -> dict[str, Any]:
    return {"principal_id": row.principal_id, "name": row.name, "role": row.role,
            "tenant": row.tenant, "key_id": row.key_id, "key_hash": _b64(row.key_hash),
            "created_at": row.created_at, "revoked_at": row.revoked_at, "mac": _b64(row.mac)}


def _principal_row(data: dict[str, Any]) -> PrincipalRow:
    return PrincipalRow(data["principal_id"], data["name"], data["role"], data["tenant"],
                        data["key_id"], _unb64(data["key_hash"]), float(data["created_at"]),
                        None if data["revoked_at"] is None else float(data["revoked_at"]),
                        _unb64(data.get("mac", "")))
