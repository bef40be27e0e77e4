"""The vault: the one object applications talk to.

It wires the layers together: the key provider and subject key store (keys), the template store
(storage), the encoder (encoders), and the in-memory galleries (matching). Its methods are verbs:
``enroll``, ``verify``, ``identify``, ``erase``, ``subjects``, ``check``.

Every operation goes through one choke point, :meth:`Vault._operation` (see
:mod:`faceseal.vault.guard`): the bound principal is re-checked, the permission table consulted,
and the audit event written in the same transaction as the change (or, for reads, before the
result is returned). A vault object is bound to one principal (``Vault.open(home, api_key=...)``);
:meth:`Vault.as_key` gives another view of the same open vault bound to another key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from faceseal.access.counters import MemoryCounters, WindowCounters
from faceseal.access.principals import Principal, new_principal_row
from faceseal.access.roles import (
    CHECK,
    CONFIG_SAVE,
    ENROLL,
    ERASE,
    IDENTIFY,
    IMPORT,
    KEYS_MIGRATE,
    KEYS_RETIRE,
    KEYS_ROTATE,
    KEYS_STATUS,
    PRINCIPALS_ADD,
    SUBJECTS,
    VERIFY,
    Role,
)
from faceseal.access.sealing import PrincipalSeal
from faceseal.audit.events import (
    OUTCOME_OK,
    SYSTEM,
    AuditEvent,
    DetailValue,
    check_request_id,
    new_request_id,
)
from faceseal.audit.integrity import RowAuthenticator
from faceseal.audit.log import AuditLog
from faceseal.audit.state import AUDIT_STATE_FILE, AuditState
from faceseal.crypto.legacy_cbc import KEY_BYTES as LEGACY_KEY_BYTES
from faceseal.crypto.secret import SecretBytes
from faceseal.encoders.dlib_resnet import DlibResNetEncoder, FaceChoice
from faceseal.errors import (
    Conflict,
    DecryptionError,
    IntegrityFailure,
    InvalidInput,
    KeyringError,
    NotFound,
    StorageUnavailable,
)
from faceseal.keys.datakeys import DataKeyManager
from faceseal.keys.files import check_safe_dir, ensure_private_dir, is_within
from faceseal.keys.process_guard import protect_process
from faceseal.keys.provider import KeyProvider
from faceseal.keys.registry import (
    PassphraseSource,
    check_uri,
    create_provider,
    local_directory,
    local_uri,
    open_provider,
)
from faceseal.keys.subject_keys import SubjectKeyStore
from faceseal.matching import kernels
from faceseal.matching.exact import closest_exact
from faceseal.matching.memory import lock_status
from faceseal.matching.models import DEFAULT_MODEL_ID, ModelSpec, resolve_model
from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.storage.legacy_source import open_legacy_source
from faceseal.storage.urls import (
    check_store_url,
    local_store_path,
    open_store_url,
    prepare_store,
)
from faceseal.vault import integrity, integrity_scan, rotation
from faceseal.vault.access_ops import AccessOperations
from faceseal.vault.answers import AnswerRules
from faceseal.vault.budgets import QueryBudgets
from faceseal.vault.bulk import BulkEnrollResult, check_batch, seal_and_store
from faceseal.vault.config import CONFIG_FILE, DEFAULT_TENANT, VaultConfig
from faceseal.vault.config_seal import check_config, seal_config, signed_config
from faceseal.vault.enrol_checks import subject_warnings
from faceseal.vault.exact_rank import ExactRanker
from faceseal.vault.face_choice import FaceChoices
from faceseal.vault.follower import DEFAULT_INTERVAL as DEFAULT_FOLLOW_INTERVAL
from faceseal.vault.follower import ChangeFollower
from faceseal.vault.gallery_cache import GalleryCache
from faceseal.vault.guard import Caller, Guard, Operation
from faceseal.vault.ids import check_id
from faceseal.vault.integrity import IntegrityUpgrade
from faceseal.vault.inventory import InventorySigner
from faceseal.vault.legacy_import import LegacyImportOptions, LegacyImportResult, import_table
from faceseal.vault.partition_view import (
    Owns,
    Partition,
    ShardedGalleries,
    partition_cache,
    shred_shard_snapshots,
)
from faceseal.vault.paths import default_home, default_keyring_dir
from faceseal.vault.policy_ops import PolicyOperations
from faceseal.vault.records import NewTemplate, RecordSealer
from faceseal.vault.results import (
    Candidate,
    CheckResult,
    EnrollResult,
    EraseResult,
    IdentifyResult,
    SubjectInfo,
    VerifyResult,
)
from faceseal.vault.service_ops import ServiceOperations
from faceseal.vault.snapshot import SnapshotStore
from faceseal.vault.sources import Progress, Source, SourceReader, needs_encoder

log = logging.getLogger(__name__)

MAX_TOP_K = 100
MAX_PROBES = 10_000
#: A bulk enrolment is audited in events naming up to this many subjects and all their templates.
AUDIT_SUBJECTS_PER_EVENT = 500


def _no_passphrase() -> SecretBytes | None:
    return None


def open_store(url: str, home: Path, *, create: bool = False) -> TemplateStore:
    """The template store a vault's store URL names (relative paths are inside ``home``):
    ``sqlite:PATH``, ``files:DIR`` or ``postgresql://...`` (see :mod:`faceseal.storage.urls`)."""
    return open_store_url(url, home, create=create)


def _create_store(
    url: str, home: Path, admin_url: str | None, vault_id: str
) -> tuple[TemplateStore, Callable[[], None]]:
    """Open, migrate and claim a new vault's store; returns it and a function removing what was
    created here (a new SQLite file or file-store directory; nothing on a server)."""
    path = local_store_path(url, home)
    is_dir = url.startswith("files:")
    fresh = path is not None and not path.exists()

    def remove() -> None:
        if path is None or not fresh:
            return
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(path) + suffix).unlink()

    if admin_url is not None:
        prepare_store(url, admin_url)
    store = open_store(url, home, create=True)
    try:
        store.migrate()
        if store.get_meta("vault_id") is not None:
            raise Conflict(f"the template store {store.describe()} already holds a vault")
        store.set_meta("vault_id", vault_id)
    except BaseException:
        store.close()
        remove()
        raise
    return store, remove


ApiKeyInput = str | bytes | SecretBytes


class Vault(AccessOperations, PolicyOperations, ServiceOperations):
    """A vault of sealed face encodings. Create with :meth:`create`, open with :meth:`open`."""

    #: The first admin's API key, set only on the object :meth:`create` returns: shown once.
    bootstrap_admin_key: str | None = None

    def __init__(
        self,
        home: Path,
        config: VaultConfig,
        provider: KeyProvider,
        subject_keys: SubjectKeyStore,
        store: TemplateStore,
        *,
        audit_state: AuditState,
        encoder_factory: Callable[..., Any] | None = None,
        verify_config: bool = True,
        counters: WindowCounters | None = None,
    ) -> None:
        self._home = home
        self._config = config
        self._subject_keys = subject_keys
        self._store = store
        self._data_keys = DataKeyManager(
            provider, store, config.keyset_id, max_encryptions=config.max_encryptions_per_key,
            floor=integrity.KeySideFloor(audit_state),
            ledger=integrity.KeySideLedger(audit_state),
        )
        self._sealer = RecordSealer(config.keyset_id, self._data_keys, subject_keys)
        self._encoder_factory: Callable[..., Any] = encoder_factory or DlibResNetEncoder
        # Key custody, configuration and closing only: operations do not take it (the store,
        # the key caches and the gallery cache are thread-safe each; see docs/performance.md).
        self._lock = threading.RLock()
        self._closed = False
        self._audit_state = audit_state
        audit_keys = audit_state.load_keys(provider, config.keyset_id)
        self._audit = AuditLog(
            store, audit_state, audit_keys,
            checkpoint_every=config.audit_checkpoint_every,
            checkpoint_seconds=config.audit_checkpoint_seconds,
        )
        self._guard = Guard(store, self._audit,
                            PrincipalSeal(RowAuthenticator(audit_keys), audit_state))
        self._inventory = InventorySigner(self._guard.seal.authenticator)
        if verify_config and self._guard.seal.current():
            # Before the settings are used: an edited file is named as such, not misread.
            check_config(config, audit_state, self._guard.seal.authenticator)
        self._models = config.models()
        self._cache = GalleryCache(
            store, self._sealer, subject_keys,
            SnapshotStore(home, Path(config.key_store_dir), self._data_keys, store,
                          vault_id=config.vault_id, keyset_id=config.keyset_id),
            self._models)
        self._follower: ChangeFollower | None = None
        #: Set by :meth:`use_shards`: identify asks these shards instead of the local gallery.
        self._shards: ShardedGalleries | None = None
        self._answers = AnswerRules(store, self._models, QueryBudgets(
            counters if counters is not None else MemoryCounters(), config.budgets()),
            self._guard.seal.authenticator)
        self._caller = Caller(None)
        self._principal: Principal | None = None
        self._root: Vault = self

    # --- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        home: Path | str | None = None,
        *,
        keyring_dir: Path | str | None = None,
        passphrase: PassphraseSource = _no_passphrase,
        allow_keyring_in_vault_dir: bool = False,
        max_encryptions_per_key: int | None = None,
        admin_name: str = "admin",
        key_uri: str | None = None,
        store_url: str | None = None,
        store_admin_url: str | None = None,
        encoder_settings: Mapping[str, Any] | None = None,
    ) -> Vault:
        """Create a new vault in ``home``.

        ``key_uri`` names where the KEK lives (``local:DIR``, ``pkcs11:...``,
        ``vault-transit:...``, ``aws-kms:...``; see docs/keys.md); by default a new local
        keyring in ``keyring_dir``. ``keyring_dir`` is the vault's *key directory*: it holds the
        per-subject key store (and the keyring of a local provider). It defaults to the local
        keyring's directory, else to the platform config dir; it must lie outside ``home``.

        The vault gets its first principal, ``admin_name`` (role admin, every tenant), and the
        returned object is bound to it; its API key is in :attr:`bootstrap_admin_key`, shown this
        once and stored only as a hash. There are no default credentials.

        ``store_url`` picks the template store (default ``sqlite:templates.db``; also
        ``files:DIR`` and ``postgresql://...``, see docs/storage.md). For PostgreSQL,
        ``store_admin_url`` (used once, never saved) lets an administrator create the schema and
        grant the store URL's login every tenant first; without it the schema must exist and the
        login be granted.

        ``encoder_settings`` (``upsample``, ``num_jitters``, ``landmarks``; default 1, 1, "5")
        are the photo encoder's for the life of the vault: every template and probe is encoded
        with them (docs/cli.md#encoder-settings).
        """
        protect_process()
        if store_url is not None:
            check_store_url(store_url)
        # Refuses links another user could have planted; resolves the rest.
        home = check_safe_dir(Path(home) if home is not None else default_home(),
                              must_exist=False)
        if (home / CONFIG_FILE).exists():
            raise InvalidInput(f"a vault already exists at {home}")
        if key_uri is not None and check_uri(key_uri) == "local":
            check_safe_dir(local_directory(key_uri), must_exist=False)
            key_uri = local_uri(local_directory(key_uri).expanduser())
            if keyring_dir is None:
                keyring_dir = local_directory(key_uri)
        vault_id = os.urandom(16).hex()
        keys_dir = Path(keyring_dir) if keyring_dir is not None else default_keyring_dir(vault_id)
        keys_dir = check_safe_dir(keys_dir, must_exist=False)
        local_keys = local_directory(key_uri).resolve() if key_uri and key_uri.startswith(
            "local:") else keys_dir
        if not allow_keyring_in_vault_dir and any(
                is_within(d, home) or is_within(home, d) for d in (keys_dir, local_keys)):
            raise KeyringError(
                "the keyring must not live in or above the vault's database directory (a copy "
                "of the database would carry its keys); choose another --keyring-dir, or pass "
                "--force-keyring-location if you really mean it"
            )
        config = VaultConfig(
            vault_id=vault_id,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            key_uri=key_uri or local_uri(keys_dir),
            key_store_dir=str(keys_dir),
        )
        config.set_encoder(encoder_settings or {})
        if max_encryptions_per_key is not None:
            config.max_encryptions_per_key = max_encryptions_per_key
        if store_url is not None:
            config.store_url = store_url
        created: list[Path] = []
        store: TemplateStore | None = None
        remove_store: Callable[[], None] = lambda: None  # noqa: E731
        ensure_private_dir(home)
        try:
            provider = create_provider(config.key_uri, passphrase)
            if config.key_uri.startswith("local:"):
                created.append(local_directory(config.key_uri) / "keyring.json")
            subject_keys = SubjectKeyStore.create(keys_dir, vault_id)
            created.append(subject_keys.path)
            store, remove_store = _create_store(config.store_url, home, store_admin_url,
                                                vault_id)
            audit_state = AuditState.create(keys_dir, vault_id, provider, config.keyset_id)
            created.append(audit_state.path)
            vault = cls(home, config, provider, subject_keys, store, audit_state=audit_state,
                        verify_config=False)  # signed below, once the vault is complete
            admin_key = vault._first_steps(admin_name)
            config.save(home)
        except BaseException:
            if store is not None:
                store.close()
            remove_store()
            for path in created:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        Path(str(path) + suffix).unlink()
            raise
        log.info("created vault %s", vault_id)
        vault._bind(admin_key)
        vault.bootstrap_admin_key = admin_key
        return vault

    @classmethod
    def open(
        cls,
        home: Path | str | None = None,
        *,
        api_key: ApiKeyInput | None = None,
        passphrase: PassphraseSource = _no_passphrase,
        encoder_factory: Callable[..., Any] | None = None,
        request_id: str | None = None,
        counters: WindowCounters | None = None,
    ) -> Vault:
        """Open an existing vault. Fails clearly, changing nothing, if its keys do not match.

        ``api_key`` binds the vault to its principal (an unknown, revoked or malformed key is
        refused with :class:`~faceseal.errors.AuthenticationFailed`, and the refusal audited).
        Without one the vault is unbound: every operation is refused until :meth:`as_key` gives a
        bound view (what a server holding one vault for many callers does). ``counters`` holds
        the query budgets' counts (default: this process's memory; pass a shared one when
        several replicas serve one vault). ``encoder_factory`` builds the photo encoder when one
        is first needed: it is called with the vault's encoder settings as keywords
        (``upsample``, ``num_jitters``, ``landmarks``: :meth:`VaultConfig.encoder_settings`), and
        an encoder whose settings change the encoding differently is refused (default
        :class:`~faceseal.encoders.DlibResNetEncoder`).
        """
        protect_process()
        home = check_safe_dir(Path(home) if home is not None else default_home(),
                              must_exist=False)
        config = VaultConfig.load(home)
        check_safe_dir(Path(config.key_store_dir))
        provider = open_provider(config.key_uri, passphrase)
        try:
            subject_keys = SubjectKeyStore.open(Path(config.key_store_dir), config.vault_id)
        except BaseException:
            provider.close()
            raise
        try:
            store = open_store(config.store_url, home)
        except BaseException:
            subject_keys.close()
            provider.close()
            raise
        audit_state: AuditState | None = None
        try:
            audit_state = _open_audit_state(config, provider, store)
            rotation.finish_pending_migration(
                store, config, audit_state=audit_state,
                known=integrity.KeySideLedger(audit_state).known())
            vault = cls(home, config, provider, subject_keys, store, audit_state=audit_state,
                        encoder_factory=encoder_factory, counters=counters)
        except BaseException:
            if audit_state is not None:
                audit_state.close()
            store.close()
            subject_keys.close()
            provider.close()
            raise
        try:
            vault._check_opens()
            if api_key is not None:
                vault._caller, vault._principal = vault._guard.bind(api_key,
                                                                    request_id=request_id)
        except BaseException:
            vault.close()
            raise
        return vault

    @classmethod
    def bootstrap_admin(
        cls,
        home: Path | str | None = None,
        *,
        name: str = "admin",
        passphrase: PassphraseSource = _no_passphrase,
    ) -> Vault:
        """Create the first admin of a vault that has no principal at all (a vault made before
        principals existed); refused with :class:`~faceseal.errors.Conflict` once any principal
        exists. Returns the vault bound to it, the key in :attr:`bootstrap_admin_key`."""
        vault = cls.open(home, passphrase=passphrase)
        try:
            key = vault._bootstrap_admin(name)
            vault._upgrade_integrity(key)  # a vault with no principal has nothing else to sign
            vault._bind(key)
            vault.bootstrap_admin_key = key
        except BaseException:
            vault.close()
            raise
        return vault

    @property
    def integrity_current(self) -> bool:
        """Whether principals and configuration are signed (False: a vault made before they
        were, which refuses every key until :meth:`upgrade_integrity`)."""
        return self._guard.seal.current()

    def upgrade_integrity(self, api_key: ApiKeyInput | None) -> IntegrityUpgrade:
        """Sign the principals and configuration of a vault made before they were signed
        (``faceseal migrate``); ``api_key`` must be an all-tenant admin's. Works on an unbound
        vault; a no-op on a signed one (see :mod:`faceseal.vault.integrity`)."""
        self._check_open()
        with self._lock:
            result = self._upgrade_integrity(api_key)
            self._check_opens()
        return result

    def _upgrade_integrity(self, api_key: ApiKeyInput | None) -> IntegrityUpgrade:
        seal = self._guard.seal
        return integrity.upgrade(store=self._store, state=self._audit_state, seal=seal,
                                 auth=seal.authenticator, audit=self._audit,
                                 config=self._config, api_key=api_key,
                                 inventory=self._inventory)

    def save_config(self) -> None:
        """Sign and write :attr:`config` as it is now (thresholds, models, tuning): the only way
        to change ``vault.json`` that the vault will accept. Needs an all-tenant admin."""
        self._check_open()
        self._config.models()  # refuses out-of-bounds thresholds before anything is written
        self._check_encoder_change()
        self._run_audited(CONFIG_SAVE, self._save_config)

    def _check_encoder_change(self) -> None:
        """Encodings made with other landmarks or jitters do not compare with the enrolled ones:
        such a change is refused once the vault holds a template."""
        settings = self._config.encoder_settings()
        signed = signed_config(self._audit_state, self._guard.seal.authenticator)
        changed = [name for name in ("num_jitters", "landmarks")
                   if signed.get(f"encoder_{name}") != settings[name]]
        if changed and sum(self._store.key_version_counts().values()):
            raise InvalidInput(
                f"the encoder's {' and '.join(changed)} cannot change in a vault that holds "
                "templates: the new encodings would not compare with the enrolled ones "
                "(create a new vault and enrol again)")

    def _save_config(self) -> None:
        with self._lock:
            self._sign_config()
            self._config.save(self._home)
            # In place: the gallery cache holds the same mapping.
            models = self._config.models()
            self._models.clear()
            self._models.update(models)

    def _first_steps(self, admin_name: str) -> str:
        """A new vault's first data key, first admin (its key returned) and signed settings."""
        self._data_keys.create_version()
        admin_key = self._bootstrap_admin(admin_name)
        self._sign_config()
        return admin_key

    def _sign_config(self, *, pending: bool = False) -> None:
        seal_config(self._config, self._audit_state, self._guard.seal.authenticator,
                    pending=pending)

    def as_key(self, api_key: ApiKeyInput | None, *, request_id: str | None = None) -> Vault:
        """Another view of this open vault, bound to the principal of ``api_key``.

        Views share the store, keys and galleries; closing a view leaves the vault open, closing
        the vault closes every view. ``request_id`` tags every audit event of the view (a
        service passes its request id; otherwise each operation gets a random one).
        A refused key raises :class:`~faceseal.errors.AuthenticationFailed` (audited).
        """
        self._check_open()
        caller, principal = self._guard.bind(api_key, request_id=request_id)
        view = Vault.__new__(Vault)
        view.__dict__.update(self.__dict__)
        view._caller, view._principal = caller, principal
        view._root, view._closed = self._root, False
        view.bootstrap_admin_key = None
        return view

    def for_request(self, request_id: str) -> Vault:
        """This view again, its audit events tagged with ``request_id``. A console session keeps
        the view its sign-in bound (its credential, never the key) and tags each page's events
        with that page's request id; the key is re-checked on every operation as usual."""
        self._check_open()
        view = Vault.__new__(Vault)
        view.__dict__.update(self.__dict__)
        view._caller = Caller(self._caller.credential, check_request_id(request_id))
        return view

    def _bind(self, api_key: str) -> None:
        self._caller, self._principal = self._guard.bind(api_key)

    def _bootstrap_admin(self, name: str) -> str:
        """The first admin (every tenant), created with its audit event; returns its key."""
        if self._store.principals():
            raise Conflict("this vault has principals already; an admin adds more with "
                           "`faceseal principals add`")
        row, issued = new_principal_row(name, frozenset({Role.ADMIN}), None)
        row = self._guard.seal.sign(row)
        event = AuditEvent(principal=SYSTEM, role="", action=PRINCIPALS_ADD, outcome=OUTCOME_OK,
                           request_id=new_request_id(),
                           detail={"target": name, "roles": ["admin"], "scope": "*",
                                   "key_id": row.key_id, "bootstrap": True})
        with self._store.transaction():
            self._store.add_principal(row)
            record = self._audit.append(event)
        self._audit.committed(record)
        self._audit.checkpoint(best_effort=True)
        return issued.reveal()

    def _operation(
        self,
        action: str,
        *,
        tenant: str | None,
        subject_id: str | None = None,
        detail: dict[str, DetailValue] | None = None,
    ) -> AbstractContextManager[Operation]:
        """THE choke point: authenticate, authorise and audit ``action`` (see ``guard``)."""
        return self._guard.operation(self._caller, action, tenant=tenant, subject_id=subject_id,
                                     detail=detail)

    def _check_opens(self) -> None:
        _check_schema(self._store)
        if self._store.get_meta("vault_id") != self._config.vault_id:
            raise KeyringError("the template store belongs to another vault")
        if self._guard.seal.current():  # a legacy vault refuses every key until it is signed
            check_config(self._config, self._audit_state, self._guard.seal.authenticator)
        # One unwrap proves the keyring is this vault's (O(1) provider calls, whatever the size).
        keys = self._data_keys.live_keys()
        if keys:
            # Every live data key in one provider call where the provider batches (transit).
            self._data_keys.preload()
            try:
                self._data_keys.key(keys[-1].version)
            except DecryptionError:
                raise KeyringError(
                    "the keyring does not match this vault: its data key does not unwrap"
                ) from None

    def close(self) -> None:
        """Overwrite decrypted templates in memory and release files and connections.

        Closing a view made by :meth:`as_key` only retires that view."""
        if self._root is not self:
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._follower is not None:
                self._follower.stop()
            self._cache.close()
            self._audit.close()
            self._audit_state.close()
            self._data_keys.forget()
            self._store.close()
            self._subject_keys.close()
            self._data_keys.provider.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self._principal.name if self._principal is not None else "unbound"
        return f"<Vault {self._config.vault_id} at {self._home} as {who}>"

    def __reduce__(self) -> Any:
        raise TypeError("a Vault cannot be pickled")

    # --- properties ------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self._home

    @property
    def config(self) -> VaultConfig:
        return self._config

    @property
    def vault_id(self) -> str:
        return self._config.vault_id

    @property
    def store_description(self) -> str:
        """Where the templates are kept (a path, or a URL without its password)."""
        return self._store.describe()

    @property
    def follower(self) -> ChangeFollower | None:
        """The background change follower, once :meth:`follow_changes` started it."""
        return self._root._follower

    def follow_changes(self, interval: float = DEFAULT_FOLLOW_INTERVAL) -> None:
        """Keep this process's loaded galleries caught up with every other process's writes in
        the background (what a long-running server replica does): erased subjects leave memory
        within about ``interval`` seconds even when no request comes (at once on PostgreSQL,
        which notifies). Answers are fresh without it; see docs/architecture.md."""
        self._check_open()
        root = self._root
        with root._lock:
            if root._follower is None:
                root._follower = ChangeFollower(root._cache, root._store.change_listener(),
                                                interval)
                root._cache.background_persist = True
                root._follower.start()

    def model(self, model_id: str | None = None) -> ModelSpec:
        return resolve_model(model_id or DEFAULT_MODEL_ID, self._models)

    # --- sharded galleries (faceseal.cluster; see docs/scale-out.md) -----------------------------

    def use_shards(self, shards: ShardedGalleries | None) -> None:
        """Answer identify from ``shards`` (every view of this vault) instead of this process's
        galleries; None goes back to the local gallery. Results are the same either way."""
        self._check_open()
        self._root._shards = shards

    @property
    def shards(self) -> ShardedGalleries | None:
        return self._root._shards

    def partition_key(self) -> SecretBytes:
        """The key of the keyed hash that assigns subjects to shards: a PRF of the vault's first
        audit key (key side, wrapped by the KEK), so every process of the vault derives the same
        key itself and it never crosses a network."""
        self._check_open()
        auth = self._guard.seal.authenticator
        for version in range(1, auth.version + 1):
            value = auth.prf(version, b"faceseal-shard-partition-v1", self._config.keyset_id)
            if value is not None:
                return SecretBytes(value)
        raise KeyringError("the vault has no audit key to derive its partition key from")

    def partition_cache(self, layout: str, owns: Owns) -> Partition:
        """A gallery cache over one partition of every tenant (what a shard holds; see
        :mod:`faceseal.vault.partition_view`). ``layout`` names its snapshot directory."""
        self._check_open()
        return partition_cache(
            home=self._home, key_dir=Path(self._config.key_store_dir), layout=layout, owns=owns,
            store=self._store, sealer=self._sealer, subject_keys=self._subject_keys,
            data_keys=self._data_keys, models=self._models, vault_id=self._config.vault_id,
            keyset_id=self._config.keyset_id)

    def _shred_shard_snapshots(self, tenant: str, subject_id: str) -> None:
        key = self.partition_key()
        try:
            shred_shard_snapshots(
                home=self._home, key_dir=Path(self._config.key_store_dir), tenant=tenant,
                subject_id=subject_id, partition_key=key, data_keys=self._data_keys,
                store=self._store, vault_id=self._config.vault_id,
                keyset_id=self._config.keyset_id)
        finally:
            key.wipe()

    def _proposals(self, tenant: str, spec: ModelSpec, probes: np.ndarray[Any, Any],
                   top_k: int) -> tuple[list[list[Any]], int, int]:
        """identify's exact answer for each probe, the gallery size and the damaged count: from
        this process's gallery, or from the shards when sharded (each ranks its partition
        exactly; their top-k merged are the whole gallery's)."""
        shards = self._root._shards
        if shards is not None:
            return shards.propose(tenant, spec, probes, top_k, self._store.change_head(tenant))
        # Every change committed by any process is applied before the gallery answers; searches
        # hold the gallery shared (side by side), a delta waits for them and they for it.
        with self._cache.answering(tenant, spec) as (gallery, damaged):
            with ExactRanker(self._store, self._sealer, tenant, spec) as ranker:
                # Bounded first pass, then every candidate it cannot exclude ranked exactly.
                if gallery is None:
                    found: list[list[Any]] = [[] for _ in probes]
                elif len(probes) == 1:
                    found = [gallery.search(probes[0], top_k, ranker.exact, ranker.prefetch)]
                else:
                    found = gallery.search_many(probes, top_k, ranker.exact, ranker.prefetch)
            size = len(gallery) if gallery else 0
        self._cache.note_damaged(ranker.damaged)  # outside: it takes the lock exclusively
        return found, size, damaged

    # --- operations ------------------------------------------------------------------------------

    def enroll(
        self,
        subject_id: str,
        sources: Sequence[Source],
        *,
        tenant: str = DEFAULT_TENANT,
        model: str | None = None,
        face_index: FaceChoice | FaceChoices = None,
        progress: Progress | None = None,
        skip_bad: bool = False,
    ) -> EnrollResult:
        """Seal the encodings of ``sources`` (photos, folders, .npy/.json files, arrays) as
        templates of ``subject_id``. All or nothing: one bad source and nothing is written
        (every bad one is named in the error); with ``skip_bad`` the good ones are enrolled and
        the bad ones listed in the result. Needs the enroller role on ``tenant``."""
        self._check_open()
        check_id("subject id", subject_id)
        check_id("tenant", tenant)
        with self._operation(ENROLL, tenant=tenant, subject_id=subject_id) as op:
            return self._enroll(op, subject_id, sources, tenant=tenant, model=model,
                                face_index=face_index, progress=progress, skip_bad=skip_bad)

    def _enroll(self, op: Operation, subject_id: str, sources: Sequence[Source], *, tenant: str,
                model: str | None, face_index: FaceChoice | FaceChoices,
                progress: Progress | None, skip_bad: bool) -> EnrollResult:
        spec = self.model(model)
        batch = self._reader(face_index).read_batch(sources, spec, progress, skip_bad=skip_bad)
        encodings = batch.encodings
        warnings = subject_warnings(self._store, self._sealer, tenant, subject_id, spec=spec,
                                    labels=[e.label for e in encodings],
                                    new=[e.encoding for e in encodings])
        items = [NewTemplate(tenant, subject_id, spec.model_id, e.encoding) for e in encodings]
        rows = self._sealer.seal(items)
        template_ids = [r.template_id for r in rows]
        # The templates, the change-log entry, the subject's last_seen_at and the audit event
        # commit together; every process's gallery picks the change up from the log.
        with op.transaction():
            rotation.store_rows(self._store, rows)
            self._inventory.record_additions(self._store, rows)
            op.record(template_ids=template_ids,
                      detail={"model": spec.model_id, "skipped": len(batch.skipped),
                              "warnings": len(warnings)})
        self._cache.after_write(tenant, dict(zip(template_ids, (i.encoding for i in items),
                                                 strict=True)))
        log.debug("enrolled %d template(s)", len(rows))
        return EnrollResult(tenant, subject_id, spec.model_id, template_ids,
                            [e.label for e in encodings],
                            [s.to_dict() for s in batch.skipped],
                            [w.to_dict() for w in warnings])

    def verify(
        self,
        subject_id: str,
        probe: Source,
        *,
        tenant: str = DEFAULT_TENANT,
        threshold: float | None = None,
        model: str | None = None,
        face_index: FaceChoice = None,
    ) -> VerifyResult:
        """1:1: compare ``probe`` with every template of ``subject_id``; the closest decides.
        Needs the verifier role on ``tenant``."""
        self._check_open()
        check_id("subject id", subject_id)
        check_id("tenant", tenant)
        with self._operation(VERIFY, tenant=tenant, subject_id=subject_id) as op:
            return self._verify(op, subject_id, probe, tenant=tenant, threshold=threshold,
                                model=model, face_index=face_index)

    def _verify(self, op: Operation, subject_id: str, probe: Source, *, tenant: str,
                threshold: float | None, model: str | None,
                face_index: FaceChoice) -> VerifyResult:
        spec = self.model(model)
        terms = self._answers.terms(op.principal, tenant, spec, threshold)
        limit = terms.threshold
        # Before a photo is encoded (seconds of dlib work): a mistyped subject fails at once.
        if needs_encoder(probe) and not self._store.subject_exists(tenant, subject_id):
            raise NotFound(f"no subject {subject_id!r} in tenant {tenant!r}")
        encoding = self._reader(face_index).read_probe(probe, spec).encoding
        self._answers.admit(op, spec, [encoding])
        # Always from the subject's records, in float64: exact, and independent of the
        # reduced-precision gallery that serves 1:N (docs/performance.md). No vault lock: the
        # store's reads are thread-safe and see committed data only.
        best, damaged, exists = self._verify_from_store(tenant, subject_id, spec, encoding)
        if not exists:
            raise NotFound(f"no subject {subject_id!r} in tenant {tenant!r}")
        if best is None:
            if damaged:
                raise IntegrityFailure(
                    f"every template of subject {subject_id!r} failed its integrity check: "
                    f"{', '.join(damaged)}"
                )
            raise NotFound(f"subject {subject_id!r} has no templates of model {spec.model_id}")
        template_id, distance = best
        result = VerifyResult(tenant, subject_id, distance <= limit, distance, limit,
                              spec.model_id, template_id, damaged)
        with op.transaction():
            # The subject's budget is charged in the event's transaction (one commit for both
            # when the counts live in the store); over budget, both roll back.
            shown = self._answers.reveal_verify(result, terms)
            if result.match:  # limit <= the configured threshold: a genuine match
                self._store.touch_subject(tenant, subject_id, time.time())
            op.record(template_ids=(template_id,),
                      detail={"match": result.match, "threshold": limit, "model": spec.model_id,
                              "damaged": len(damaged), "disclosure": terms.disclosure})
        return shown

    def _verify_from_store(
        self, tenant: str, subject_id: str, spec: ModelSpec, probe: np.ndarray[Any, Any]
    ) -> tuple[tuple[str, float] | None, list[str], bool]:
        rows = self._store.subject_templates(tenant, subject_id)
        if not rows and not self._store.subject_exists(tenant, subject_id):
            return None, [], False
        blob = self._store.inventories(tenant, [subject_id]).get(subject_id, b"")
        if not self._inventory.matches(tenant, subject_id, blob, [r.template_id for r in rows]):
            raise IntegrityFailure(
                f"the templates of subject {subject_id!r} do not match its authenticated "
                "inventory: templates were deleted, added or moved outside the vault (see "
                "`faceseal check`)")
        opened, damaged = self._sealer.open(rows)
        self._cache.note_damaged(damaged)
        usable = [o for o in opened if o.row.model_id == spec.model_id]
        best = closest_exact([o.encoding for o in usable], [o.row.template_id for o in usable],
                             probe, spec.metric)
        for item in opened:
            item.encoding.fill(0)
        return best, [r.template_id for r in damaged], True

    def identify(
        self,
        probe: Source,
        *,
        tenant: str = DEFAULT_TENANT,
        top_k: int = 5,
        threshold: float | None = None,
        model: str | None = None,
        face_index: FaceChoice = None,
    ) -> IdentifyResult:
        """1:N: the ``top_k`` subjects of ``tenant`` closest to ``probe``, closest first.
        Needs the identifier role on ``tenant``."""
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(IDENTIFY, tenant=tenant) as op:
            return self._identify(op, probe, tenant=tenant, top_k=top_k, threshold=threshold,
                                  model=model, face_index=face_index)

    def _identify(self, op: Operation, probe: Source, *, tenant: str, top_k: int,
                  threshold: float | None, model: str | None,
                  face_index: FaceChoice) -> IdentifyResult:
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer within 1..{MAX_TOP_K}")
        spec = self.model(model)
        terms = self._answers.terms(op.principal, tenant, spec, threshold)
        limit = terms.threshold
        encoding = self._reader(face_index).read_probe(probe, spec).encoding
        self._answers.admit(op, spec, [encoding])
        found, size, damaged = self._proposals(tenant, spec, encoding[None, :], top_k)
        matches = found[0]
        candidates = [Candidate(m.subject_id, m.distance, m.distance <= limit, m.template_id)
                      for m in matches]
        result = IdentifyResult(tenant, spec.model_id, limit, top_k, candidates, size, damaged)
        with op.transaction():
            shown = self._answers.reveal_identify([result], terms)[0]
            now = time.time()
            for candidate in candidates:
                if candidate.match:
                    self._store.touch_subject(tenant, candidate.subject_id, now)
            best = result.best
            op.record(subject_id=best.subject_id if best else None,
                      template_ids=[c.template_id for c in candidates],
                      detail={"subjects": [c.subject_id for c in candidates],
                              "matches": sum(1 for c in candidates if c.match), "top_k": top_k,
                              "threshold": limit, "model": spec.model_id, "gallery_size": size,
                              "disclosure": terms.disclosure,
                              "shown": len(shown.candidates)})
        return shown

    def enroll_many(
        self,
        subject_ids: Sequence[str],
        encodings: np.ndarray[Any, Any],
        *,
        tenant: str = DEFAULT_TENANT,
        model: str | None = None,
    ) -> BulkEnrollResult:
        """Bulk enrolment: row ``i`` of ``encodings`` (a 2-D float32/float64 array) becomes a
        template of ``subject_ids[i]``. Validated first, then stored in one transaction with its
        audit events (each names up to 500 subjects and all their templates): all or nothing.
        Much faster per template than :meth:`enroll` (see docs/performance.md). Needs the
        enroller role on ``tenant``."""
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(ENROLL, tenant=tenant) as op:
            return self._enroll_many(op, subject_ids, encodings, tenant=tenant, model=model)

    def _enroll_many(self, op: Operation, subject_ids: Sequence[str],
                     encodings: np.ndarray[Any, Any], *, tenant: str,
                     model: str | None) -> BulkEnrollResult:
        spec = self.model(model)
        ids, matrix = check_batch(subject_ids, encodings, spec, check_id)
        try:
            with op.transaction():
                template_ids = seal_and_store(
                    keyset_id=self._config.keyset_id, data_keys=self._data_keys,
                    subject_keys=self._subject_keys, store=self._store, tenant=tenant,
                    spec=spec, subject_ids=ids, encodings=matrix,
                )
                by_subject: dict[str, list[str]] = {}
                for subject, template_id in zip(ids, template_ids, strict=True):
                    by_subject.setdefault(subject, []).append(template_id)
                self._inventory.record(self._store, tenant, by_subject)
                names = list(by_subject)
                for lo in range(0, len(names), AUDIT_SUBJECTS_PER_EVENT):
                    chunk = names[lo:lo + AUDIT_SUBJECTS_PER_EVENT]
                    op.record(subject_id=chunk[0] if len(chunk) == 1 else None,
                              template_ids=[t for name in chunk for t in by_subject[name]],
                              detail={"model": spec.model_id, "bulk": True,
                                      "subjects": chunk})
            self._cache.after_write(tenant, dict(zip(template_ids, matrix, strict=True)))
        finally:
            if not np.shares_memory(matrix, encodings):
                matrix.fill(0.0)  # our converted copy; never the caller's array
        log.debug("bulk-enrolled %d template(s)", len(template_ids))
        return BulkEnrollResult(tenant, spec.model_id, len(template_ids), len(by_subject),
                                template_ids)

    def identify_many(
        self,
        probes: Sequence[Source] | np.ndarray[Any, Any],
        *,
        tenant: str = DEFAULT_TENANT,
        top_k: int = 5,
        threshold: float | None = None,
        model: str | None = None,
        face_index: FaceChoice = None,
    ) -> list[IdentifyResult]:
        """1:N for many probes at once (a 2-D array of encodings, or a list of photos, encoding
        files or encodings): one scan of the gallery serves the whole batch. Results are in probe
        order and identical to calling :meth:`identify` for each probe; one audit event per
        probe. Needs the identifier role on ``tenant``."""
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(IDENTIFY, tenant=tenant) as op:
            return self._identify_many(op, probes, tenant=tenant, top_k=top_k,
                                       threshold=threshold, model=model, face_index=face_index)

    def _identify_many(self, op: Operation, probes: Sequence[Source] | np.ndarray[Any, Any], *,
                       tenant: str, top_k: int, threshold: float | None, model: str | None,
                       face_index: FaceChoice) -> list[IdentifyResult]:
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer within 1..{MAX_TOP_K}")
        spec = self.model(model)
        terms = self._answers.terms(op.principal, tenant, spec, threshold)
        limit = terms.threshold
        if isinstance(probes, np.ndarray) and probes.ndim == 2:
            items: list[Any] = list(probes)
        elif isinstance(probes, (str, bytes, os.PathLike)) or not isinstance(probes, Sequence):
            raise InvalidInput("probes must be a list of probes or a 2-D array of encodings")
        else:
            items = list(probes)
        if not 1 <= len(items) <= MAX_PROBES:
            raise InvalidInput(f"give between 1 and {MAX_PROBES} probes")
        reader = self._reader(face_index)
        matrix = np.stack([reader.read_probe(item, spec).encoding.astype(np.float64)
                           for item in items])
        try:
            self._answers.admit(op, spec, matrix)
            found, size, damaged = self._proposals(tenant, spec, matrix, top_k)
        finally:
            matrix.fill(0.0)
        results = [
            IdentifyResult(tenant, spec.model_id, limit, top_k,
                           [Candidate(m.subject_id, m.distance, m.distance <= limit,
                                      m.template_id) for m in matches], size, damaged)
            for matches in found
        ]
        with op.transaction():
            shown = self._answers.reveal_identify(results, terms)
            now = time.time()
            for number, result in enumerate(results):
                for candidate in result.candidates:
                    if candidate.match:
                        self._store.touch_subject(tenant, candidate.subject_id, now)
                best = result.best
                op.record(subject_id=best.subject_id if best else None,
                          template_ids=[c.template_id for c in result.candidates],
                          detail={"subjects": [c.subject_id for c in result.candidates],
                                  "matches": sum(1 for c in result.candidates if c.match),
                                  "top_k": top_k, "threshold": limit, "model": spec.model_id,
                                  "gallery_size": size, "batch": len(results),
                                  "probe": number, "disclosure": terms.disclosure,
                                  "shown": len(shown[number].candidates)})
        return shown

    def index_status(self) -> dict[str, Any]:
        """How the in-memory galleries were loaded and whether their memory is locked.
        Holds no biometric data (counts, timings and flags only)."""
        states = self._cache.states()
        tenants = {
            tenant: {
                **self._cache.loads.get(tenant, {}),
                # What the gallery holds now (the load's own count is templates_at_load).
                "templates_at_load": self._cache.loads.get(tenant, {}).get("templates"),
                "templates": state.templates,
                "damaged_templates": state.damaged,
                "applied_change": state.applied,
                "memory_locked": all(g.memory_locked
                                     for g in self._cache.galleries_of(tenant).values()),
            }
            for tenant, state in states.items()
        }
        return {"scan_backend": kernels.backend_name(),
                "batch_scan": kernels.batch_backend_name(), "memory": lock_status().to_dict(),
                "tenants": tenants}

    def erase(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> EraseResult:
        """Delete a subject's templates and destroy its key material (crypto-shredding).
        Needs the enroller role on ``tenant``."""
        self._check_open()
        check_id("subject id", subject_id)
        check_id("tenant", tenant)
        with self._operation(ERASE, tenant=tenant, subject_id=subject_id) as op:
            erased, destroyed = self._erase_in(op, tenant, subject_id)
            return EraseResult(tenant, subject_id, erased, destroyed)

    def _erase_in(self, op: Operation, tenant: str, subject_id: str, *,
                  shred_snapshot: bool = True) -> tuple[int, bool]:
        """Erase one subject under ``op``: rows, change-log entry and event commit together;
        then the tenant's snapshot is replaced without the subject (unless the caller does that
        once for many erasures: ``shred_snapshot=False``) and the subject's secret destroyed.
        If that fails the rows are gone but the secret stays, and the error propagates; erasing
        again finishes the job."""
        with op.transaction():
            template_ids = self._store.erase_subject(tenant, subject_id)
            has_secret = bool(self._subject_keys.get_many([(tenant, subject_id)]))
            if not template_ids and not has_secret:
                raise NotFound(f"no subject {subject_id!r} in tenant {tenant!r}")
            op.record(subject_id=subject_id, template_ids=template_ids,
                      detail={"templates": len(template_ids)})
        self._cache.after_erase(tenant, subject_id, template_ids)
        if shred_snapshot:
            self._cache.shred_snapshot(tenant)
        self._shred_shard_snapshots(tenant, subject_id)
        shards = self._root._shards
        if shards is not None:  # the owning shard drops it from memory now
            shards.erased(tenant, subject_id, template_ids)
        destroyed = self._subject_keys.destroy(tenant, subject_id)
        log.debug("erased a subject: %d template(s)", len(template_ids))
        return len(template_ids), destroyed

    def subjects(self, *, tenant: str = DEFAULT_TENANT) -> list[SubjectInfo]:
        """The subjects of a tenant and how many templates each has (enroller role)."""
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(SUBJECTS, tenant=tenant) as op:
            found = [SubjectInfo(s.tenant, s.subject_id, s.templates, s.created_at,
                                 s.last_seen_at) for s in self._store.subjects(tenant)]
            self._record(op, subjects=len(found))
            return found

    def import_legacy(
        self,
        source: str,
        key: SecretBytes,
        *,
        tenant: str = DEFAULT_TENANT,
        model: str | None = None,
        options: LegacyImportOptions | None = None,
        progress: Progress | None = None,
    ) -> LegacyImportResult:
        """Re-seal a legacy AES-256-CBC ``face_encodings`` table (``sqlite:PATH`` or
        ``postgresql://...``) into this vault: one template per row, subject ``str(user_id)``.
        Needs the enroller role on ``tenant``.

        ``key`` is the old 32-byte key (see :func:`~faceseal.vault.legacy_import.read_legacy_key`);
        it is used in memory only. Rows that fail to decrypt or are not valid encodings are
        reported in the result, not imported, and do not stop the rest. Each batch commits with
        its audit event. See docs/legacy-import.md.
        """
        self._check_open()
        check_id("tenant", tenant)
        with self._operation(IMPORT, tenant=tenant) as op:
            return self._import_legacy(op, source, key, tenant=tenant, model=model,
                                       options=options or LegacyImportOptions(),
                                       progress=progress)

    def check(self, *, progress: Progress | None = None) -> CheckResult:
        """Open every record once and report those that fail (an integrity scan). Needs an
        admin scoped to every tenant. ``progress(done, total)`` follows the records."""
        self._check_open()
        with self._operation(CHECK, tenant=None) as op:
            result = integrity_scan.scan(self._store, self._sealer, self._subject_keys,
                                         self._inventory, self._guard.seal,
                                         progress=progress)
            self._record(op, records=result.records, damaged=len(result.damaged),
                         orphan_subject_keys=result.orphan_subject_keys,
                         inventory_mismatches=len(result.inventory_mismatches),
                         unverified_principals=len(result.unverified_principals))
            return result

    # --- key custody (the logic lives in faceseal.vault.rotation) --------------------------------

    def key_status(self) -> rotation.KeyStatus:
        """KEK versions, data keys (records and encryptions each), retirement, rotation state."""
        self._check_open()
        return self._run_audited(KEYS_STATUS, self._key_status)

    def _key_status(self) -> rotation.KeyStatus:
        return rotation.key_status(self._config, self._data_keys.provider, self._store,
                                   self._data_keys)

    def rotate_kek(self) -> rotation.KekRotation:
        """New KEK version in the provider; every data key and the audit key rewrapped; no
        record re-encrypted."""
        self._check_open()
        return self._run_audited(KEYS_ROTATE, self._rotate_kek, key_operation=True,
                                 describe=lambda r: {"kind": "kek", "kek_version": r.kek_version,
                                                     "rewrapped": r.data_keys_rewrapped})

    def _rotate_kek(self) -> rotation.KekRotation:
        with self._lock:
            result = rotation.rotate_kek(self._data_keys.provider, self._data_keys)
            self._rewrap_audit_key()
            return result

    def rewrap_data_keys(self) -> rotation.KekRotation:
        """Rewrap data keys (and the audit key) still under an older KEK version (finishes an
        interrupted ``rotate_kek``)."""
        self._check_open()
        return self._run_audited(KEYS_ROTATE, self._rewrap_data_keys, key_operation=True,
                                 describe=lambda r: {"kind": "rewrap",
                                                     "rewrapped": r.data_keys_rewrapped})

    def _rewrap_data_keys(self) -> rotation.KekRotation:
        with self._lock:
            result = rotation.rewrap_data_keys(self._data_keys.provider, self._data_keys)
            self._rewrap_audit_key()
            return result

    def _rewrap_audit_key(self) -> None:
        provider = self._data_keys.provider
        self._audit_state.rewrap(provider, provider, self._config.keyset_id)

    def rotate_data_keys(self, *, batch_size: int = rotation.DEFAULT_BATCH_SIZE,
                         progress: Progress | None = None) -> rotation.DataRotation:
        """New data-key version; every record re-encrypted under it in batches (resumable,
        idempotent, safe to kill)."""
        self._check_open()
        return self._run_audited(
            KEYS_ROTATE, lambda: self._rotate_data_keys(batch_size, progress), key_operation=True,
            describe=lambda r: {"kind": "data", "data_key_version": r.target_version,
                                "reencrypted": r.records_reencrypted,
                                "remaining": r.records_remaining})

    def _rotate_data_keys(self, batch_size: int,
                          progress: Progress | None) -> rotation.DataRotation:
        return rotation.rotate_data(self._store, self._data_keys, self._sealer,
                                    batch_size=batch_size, progress=progress)

    def retire_data_keys(self, below: int) -> rotation.Retirement:
        """Refuse data-key versions below ``below`` from now on, once no record needs them."""
        self._check_open()
        return self._run_audited(KEYS_RETIRE, lambda: self._retire_data_keys(below),
                                 key_operation=True,
                                 describe=lambda r: {"min_decrypt_version": r.min_decrypt_version})

    def _retire_data_keys(self, below: int) -> rotation.Retirement:
        return rotation.retire(self._store, self._data_keys, below)

    def migrate_keys(self, to_uri: str, *, passphrase: PassphraseSource = _no_passphrase,
                     progress: Progress | None = None) -> rotation.Migration:
        """Rewrap every data key and the audit key under the provider ``to_uri`` names and switch
        to it."""
        self._check_open()
        return self._run_audited(KEYS_MIGRATE,
                                 lambda: self._migrate_keys(to_uri, passphrase, progress),
                                 key_operation=True, describe=lambda r: {"to": check_uri(r.to_uri)})

    def _migrate_keys(self, to_uri: str, passphrase: PassphraseSource,
                      progress: Progress | None) -> rotation.Migration:
        with self._lock:
            old = self._data_keys.provider
            result, target = rotation.migrate(self._home, self._config, old, self._store,
                                              to_uri=to_uri, passphrase=passphrase,
                                              audit_state=self._audit_state,
                                              sign_config=lambda pending: self._sign_config(
                                                  pending=pending),
                                              data_keys=self._data_keys,
                                              progress=progress)
            self._data_keys.set_provider(target)
            old.close()
        return result

    # --- internals -------------------------------------------------------------------------------

    def _import_legacy(self, op: Operation, source: str, key: SecretBytes, *, tenant: str,
                       model: str | None, options: LegacyImportOptions,
                       progress: Progress | None) -> LegacyImportResult:
        spec = self.model(model)
        options.check()
        if not isinstance(key, SecretBytes) or len(key) != LEGACY_KEY_BYTES:
            raise InvalidInput("the legacy key must be 32 bytes (AES-256), given as SecretBytes")

        def save(rows: list[TemplateRow], encodings: list[Any], marker: str, marker_value: str,
                 detail: dict[str, Any]) -> None:
            # The rows, their change-log entry, the progress marker and the batch's audit event
            # commit together.
            with op.transaction():
                self._store.add_templates(rows)
                self._inventory.record_additions(self._store, rows)
                self._store.set_meta(marker, marker_value)
                op.record(template_ids=[r.template_id for r in rows], detail=detail)
            self._cache.after_write(tenant, dict(zip([r.template_id for r in rows], encodings,
                                                     strict=True)))

        with open_legacy_source(source, options.table) as table:
            result = import_table(table, key, store=self._store, sealer=self._sealer,
                                  tenant=tenant, spec=spec, options=options, save=save,
                                  progress=progress)
        log.info("legacy import: %d row(s) imported, %d failed", result.imported,
                 len(result.failed))
        return result

    def _check_open(self) -> None:
        if self._closed or self._root._closed:
            raise InvalidInput("the vault is closed")

    def _reader(self, face_index: FaceChoice | FaceChoices) -> SourceReader:
        return SourceReader(self._models, self._photo_encoder, face_index=face_index)

    def _photo_encoder(self) -> DlibResNetEncoder:
        settings = self._config.encoder_settings()
        encoder: DlibResNetEncoder = self._encoder_factory(**settings)
        expected = {name: settings[name] for name in ("num_jitters", "landmarks")}
        if encoder.encoding_settings != expected:
            raise InvalidInput(
                f"the photo encoder was built with {encoder.encoding_settings}, the vault's "
                f"photos are encoded with {expected}: its encodings would not compare with the "
                "enrolled templates")
        return encoder


def _check_schema(store: TemplateStore) -> None:
    version = store.schema_version()
    if version < store.SCHEMA_VERSION:
        raise StorageUnavailable(
            f"the template store is at schema version {version}, this faceseal needs "
            f"{store.SCHEMA_VERSION}: run `faceseal migrate`"
        )
    if version > store.SCHEMA_VERSION:
        raise StorageUnavailable(
            f"the template store is at schema version {version}, newer than this faceseal "
            f"understands ({store.SCHEMA_VERSION}); upgrade faceseal"
        )


def _open_audit_state(config: VaultConfig, provider: KeyProvider,
                      store: TemplateStore) -> AuditState:
    """The vault's audit state from its key directory. A vault made before audit keys existed
    (no state file, an empty log) gets one now; a missing file beside a non-empty log is an
    error, never silently replaced."""
    directory = Path(config.key_store_dir)
    if AuditState.exists(directory):
        return AuditState.open(directory, config.vault_id)
    _check_schema(store)
    if next(iter(store.audit_events(limit=1)), None) is not None:
        return AuditState.open(directory, config.vault_id)  # raises: the audit key is missing
    log.warning("vault %s has no %s yet; creating its audit key", config.vault_id,
                AUDIT_STATE_FILE)
    return AuditState.create(directory, config.vault_id, provider, config.keyset_id,
                             signed=False)


def remove_vault_files(home: Path, config: VaultConfig) -> None:
    """Delete a vault's database directory and key directory (used by the demo's temp vaults)."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(config.key_store_dir, ignore_errors=True)

