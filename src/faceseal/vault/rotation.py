"""Key custody operations: status, KEK rotation, data-key rotation, retirement, migration.

The :class:`~faceseal.vault.Vault` facade has one public method per operation; each calls one
function here with the vault's parts. Every step is written so that a crash (SIGKILL, power loss)
at any instant leaves a vault that opens and decrypts every record:

* ``rotate_kek``: the provider makes a new KEK version (old ones stay); each DEK is rewrapped,
  the new blob is unwrapped and compared with the key before it replaces the old one, one DEK per
  transaction. Re-running finishes the job. No record is touched.
* ``rotate_data``: a new DEK version is created and recorded as the rotation's target in the
  same transaction; records below the target are then re-encrypted in batches, each batch one
  transaction (template ids, tenants, subjects, models and creation times stay; only the key
  version and the ciphertext change). Encryptions are counted before use. Killed, it resumes at
  the next run from what is still below the target: re-running is idempotent.
* ``retire``: sets the minimum decryption version in the same transaction as a count that shows
  no record below it. Writers check that minimum in the transaction that stores their rows, so a
  slow writer holding an old key fails cleanly instead of storing a record nobody could open.
* ``migrate``: every DEK is rewrapped under the target provider and verified; the new blobs are
  staged in the store (one transaction), then ``vault.json`` is switched to the new key URI
  (atomic rename), then the staged blobs replace the old ones (one transaction). Opening a vault
  finishes a staged migration whose URI ``vault.json`` already names, and discards one it does
  not: either way every DEK opens under the configured provider.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceseal.audit.state import AuditState
from faceseal.errors import Conflict, DecryptionError, IntegrityFailure, InvalidInput
from faceseal.keys.datakeys import DataKeyManager, dek_context
from faceseal.keys.provider import KeyProvider, same_key
from faceseal.keys.registry import (
    PassphraseSource,
    check_uri,
    local_directory,
    open_or_create_provider,
)
from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.vault.config import VaultConfig
from faceseal.vault.records import RecordSealer
from faceseal.vault.results import Result

log = logging.getLogger(__name__)

META_MIN_VERSION = "min_decrypt_version"
META_ROTATION = "data_key_rotation"
META_MIGRATION = "key_migration"
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DataKeyState(Result):
    version: int
    created_at: float
    encryptions: int
    records: int
    #: The KEK version that wraps this DEK (None if the blob is not the provider's).
    kek_version: int | None
    active: bool
    retired: bool


@dataclass(frozen=True)
class KeyStatus(Result):
    key_uri: str
    provider: str
    provider_location: str
    kek_versions: list[int]
    active_kek_version: int
    provider_details: dict[str, str]
    data_keys: list[DataKeyState]
    active_data_key: int
    min_decrypt_version: int
    max_encryptions_per_key: int
    key_store_dir: str
    #: ``{"target": V, "records_remaining": N}`` while a data-key rotation is unfinished.
    rotation_in_progress: dict[str, int] | None = None


@dataclass(frozen=True)
class KekRotation(Result):
    kek_version_before: int
    kek_version: int
    data_keys_rewrapped: int
    records_reencrypted: int = 0


@dataclass(frozen=True)
class DataRotation(Result):
    target_version: int
    resumed: bool
    records_reencrypted: int
    records_remaining: int
    damaged_template_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Retirement(Result):
    min_decrypt_version_before: int
    min_decrypt_version: int


@dataclass(frozen=True)
class Migration(Result):
    from_uri: str
    to_uri: str
    data_keys_rewrapped: int


# --- helpers -------------------------------------------------------------------------------------


def min_decrypt_version(store: TemplateStore) -> int:
    value = store.get_meta(META_MIN_VERSION)
    return int(value) if value else 1


def _json_meta(store: TemplateStore, key: str) -> dict[str, Any] | None:
    value = store.get_meta(key)
    if not value:
        return None
    try:
        document = json.loads(value)
    except ValueError:
        raise IntegrityFailure(f"the store's {key} record is unreadable") from None
    return document if isinstance(document, dict) else None


def _records_below(store: TemplateStore, version: int) -> int:
    return sum(count for v, count in store.key_version_counts().items() if v < version)


def store_rows(store: TemplateStore, rows: Sequence[TemplateRow], *, replace: bool = False) -> None:
    """Store new (or re-encrypted) rows in one transaction that also checks none of them is
    sealed under a retired data key (a writer that raced ``keys retire`` fails cleanly)."""
    if not rows:
        return
    with store.transaction():
        minimum = min_decrypt_version(store)
        if any(row.key_version < minimum for row in rows):
            raise Conflict("a data key was retired while this operation ran; nothing was "
                           "stored, retry it")
        if replace:
            store.replace_records(rows)
        else:
            store.add_templates(rows)


# --- status --------------------------------------------------------------------------------------


def key_status(config: VaultConfig, provider: KeyProvider, store: TemplateStore,
               data_keys: DataKeyManager) -> KeyStatus:
    described = provider.describe()
    counts = store.key_version_counts()
    minimum = min_decrypt_version(store)
    infos = store.load_data_keys()
    active = max((i.version for i in infos), default=0)
    states = []
    for info in infos:
        try:
            kek: int | None = provider.kek_version_of(info.wrapped)
        except DecryptionError:
            kek = None
        states.append(DataKeyState(info.version, info.created_at, info.encryptions,
                                   counts.get(info.version, 0), kek, info.version == active,
                                   info.version < minimum))
    rotation = _json_meta(store, META_ROTATION)
    in_progress = None
    if rotation is not None:
        target = int(rotation["target"])
        in_progress = {"target": target, "records_remaining": _records_below(store, target)}
    return KeyStatus(
        key_uri=config.key_uri, provider=described.kind,
        provider_location=described.location, kek_versions=list(described.kek_versions),
        active_kek_version=described.active_version, provider_details=dict(described.details),
        data_keys=states, active_data_key=active, min_decrypt_version=minimum,
        max_encryptions_per_key=data_keys.max_encryptions, key_store_dir=config.key_store_dir,
        rotation_in_progress=in_progress,
    )


# --- KEK rotation --------------------------------------------------------------------------------


def rotate_kek(provider: KeyProvider, data_keys: DataKeyManager) -> KekRotation:
    before = provider.describe().active_version
    after = provider.rotate()
    rewrapped = data_keys.rewrap_all()
    log.info("KEK rotated %d -> %d; %d data key(s) rewrapped", before, after, rewrapped)
    return KekRotation(before, after, rewrapped)


def rewrap_data_keys(provider: KeyProvider, data_keys: DataKeyManager) -> KekRotation:
    active = provider.describe().active_version
    return KekRotation(active, active, data_keys.rewrap_all())


# --- data-key rotation ---------------------------------------------------------------------------


def rotate_data(store: TemplateStore, data_keys: DataKeyManager, sealer: RecordSealer, *,
                batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Progress | None = None) -> DataRotation:
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"batch size must be an integer within 1..{MAX_BATCH_SIZE}")
    state = _json_meta(store, META_ROTATION)
    resumed = state is not None
    if state is None:
        with store.transaction():  # the new version and the record of the rotation, together
            target = data_keys.create_version()
            store.set_meta(META_ROTATION, json.dumps({"target": target,
                                                      "started_at": time.time()}))
        log.info("data-key rotation to version %d started", target)
    else:
        target = int(state["target"])
        log.info("resuming data-key rotation to version %d", target)
    total = _records_below(store, target)
    done = 0
    damaged: list[str] = []
    after = ""
    if progress is not None:
        progress(0, total)
    while True:
        rows = store.templates_below_version(target, after, batch_size)
        if not rows:
            break
        after = rows[-1].template_id
        opened, bad = sealer.open(rows)
        damaged.extend(row.template_id for row in bad)
        resealed = sealer.reseal(opened)
        store_rows(store, resealed, replace=True)
        done += len(resealed)
        if progress is not None:
            progress(done + len(damaged), total)
    remaining = _records_below(store, target)
    # The pass is over: what is left below the target cannot be opened (see `faceseal check`).
    store.set_meta(META_ROTATION, "")
    log.info("data-key rotation to version %d: %d re-encrypted, %d left", target, done,
             remaining)
    return DataRotation(target, resumed, done, remaining, damaged)


# --- retirement ----------------------------------------------------------------------------------


def retire(store: TemplateStore, data_keys: DataKeyManager, below: int) -> Retirement:
    if isinstance(below, bool) or not isinstance(below, int) or below < 1:
        raise InvalidInput("the version to retire below must be a positive integer")
    with store.transaction():
        before = min_decrypt_version(store)
        active = max((i.version for i in store.load_data_keys()), default=0)
        if below > active:
            raise Conflict(f"data-key version {active} is active and cannot be retired; "
                           f"choose --below {active} or lower, or rotate first")
        if below <= before:
            return Retirement(before, before)
        needing = {v: c for v, c in store.key_version_counts().items() if v < below}
        if needing:
            listed = ", ".join(f"v{v}: {c}" for v, c in sorted(needing.items()))
            raise Conflict(f"{sum(needing.values())} record(s) still need a data key below "
                           f"version {below} ({listed}); run `faceseal keys rotate --data` "
                           "first")
        if _json_meta(store, META_ROTATION) is not None:
            raise Conflict("a data-key rotation is unfinished; run `faceseal keys rotate "
                           "--data` to finish it first")
        store.set_meta(META_MIN_VERSION, str(below))
    data_keys.forget()
    log.info("data keys below version %d retired", below)
    return Retirement(before, below)


# --- migration between providers -----------------------------------------------------------------


def check_key_dir(directory: Path, home: Path) -> None:
    from faceseal.errors import KeyringError  # noqa: PLC0415
    from faceseal.keys.files import is_within  # noqa: PLC0415

    if is_within(directory, home) or is_within(home, directory):
        raise KeyringError(
            "key material must not live in or above the vault's database directory (a copy of "
            "the database would carry it); choose another directory")


def migrate(home: Path, config: VaultConfig, provider: KeyProvider, store: TemplateStore, *,
            to_uri: str, passphrase: PassphraseSource,
            audit_state: AuditState | None = None,
            progress: Progress | None = None) -> tuple[Migration, KeyProvider]:
    """Rewrap every DEK (and the audit key) under ``to_uri`` and switch the vault to it. Returns
    the result and the open target provider (the caller closes the old one).
    ``progress(done, total)`` follows the data keys (three provider calls each)."""
    scheme = check_uri(to_uri)
    if scheme == "local":
        directory = local_directory(to_uri).resolve()
        check_key_dir(directory, home)
        to_uri = f"local:{directory}"
    if to_uri == config.key_uri:
        raise InvalidInput("the vault already uses this key URI")
    target = open_or_create_provider(to_uri, passphrase)
    from_uri = config.key_uri
    try:
        with store.transaction():  # no other writer can add a DEK while we stage
            staged: dict[str, str] = {}
            infos = store.load_data_keys()
            for done, info in enumerate(infos, start=1):
                context = dek_context(config.keyset_id, info.version)
                key = provider.unwrap(info.wrapped, context)
                blob = target.wrap(key, context)
                if not same_key(key, target.unwrap(blob, context)):
                    raise IntegrityFailure(f"the target provider returned a different data key "
                                           f"for version {info.version}; nothing was changed")
                key.wipe()
                staged[str(info.version)] = blob.hex()
                if progress is not None:
                    progress(done, len(infos))
            audit_blobs = ({} if audit_state is None else
                           audit_state.wrap_for(provider, target, config.keyset_id))
            store.set_meta(META_MIGRATION, json.dumps({
                "target_uri": to_uri, "from_uri": from_uri, "blobs": staged,
                "audit_blobs": {str(v): b.hex() for v, b in audit_blobs.items()}}))
        config.key_uri = to_uri
        try:
            config.save(home)
        except BaseException:
            config.key_uri = from_uri
            raise

        def rewrap_late(version: int, wrapped: bytes) -> bytes:
            context = dek_context(config.keyset_id, version)
            key = provider.unwrap(wrapped, context)
            blob = target.wrap(key, context)
            if not same_key(key, target.unwrap(blob, context)):
                raise IntegrityFailure("the target provider returned a different data key")
            return blob

        finish_pending_migration(store, config, rewrap_late, audit_state=audit_state)
    except BaseException:
        target.close()
        raise
    log.info("keys migrated from %s to %s provider", provider.kind, target.kind)
    return Migration(from_uri, to_uri, len(staged)), target


def finish_pending_migration(
    store: TemplateStore, config: VaultConfig,
    rewrap_late: Callable[[int, bytes], bytes] | None = None,
    *, audit_state: AuditState | None = None,
) -> bool:
    """Complete (or discard) a migration a crash interrupted; True if one was completed.

    ``rewrap_late`` rewraps a DEK that another process created after the blobs were staged (the
    migrating process passes one; on a later open there is none, and such a DEK is reported)."""
    pending = _json_meta(store, META_MIGRATION)
    if pending is None:
        return False
    with store.transaction():
        if pending.get("target_uri") != config.key_uri:
            store.set_meta(META_MIGRATION, "")  # vault.json was never switched: roll back
            log.warning("discarded an unfinished key migration")
            return False
        blobs = {int(v): bytes.fromhex(b) for v, b in dict(pending["blobs"]).items()}
        for info in store.load_data_keys():
            if info.version in blobs:
                continue
            if rewrap_late is None:
                raise IntegrityFailure(
                    f"data key version {info.version} was created during a key migration and "
                    f"is not wrapped by the new provider; migrate back to {pending['from_uri']}"
                    " and migrate again with the vault otherwise idle")
            blobs[info.version] = rewrap_late(info.version, info.wrapped)
        for version, blob in blobs.items():
            store.replace_wrapped(version, blob)
        audit_blobs = {int(v): bytes.fromhex(b)
                       for v, b in dict(pending.get("audit_blobs") or {}).items()}
        if audit_blobs and audit_state is not None:
            # Idempotent: a crash before the meta below is cleared writes the same blobs again.
            audit_state.replace_wrapped(audit_blobs)
        store.set_meta(META_MIGRATION, "")
    log.info("finished the key migration to %s", config.key_uri.partition(":")[0])
    return True
