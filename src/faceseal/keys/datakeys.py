"""Data keys (DEKs): versioned, stored only wrapped, counted, cached.

Records are sealed under keys derived from a DEK; DEKs are stored in the template store only as
blobs wrapped by the provider's KEK. This module keeps the provider off the hot path: a DEK is
unwrapped once and cached (bounded size, bounded lifetime), so opening a vault costs a handful of
provider calls whatever its size.

Every encryption is counted against its DEK *before* it happens, durably, in the store. When a
reservation would pass the configured limit (default 2^30, well under the 2^32 invocations NIST
SP 800-38D allows with random 96-bit nonces) a new DEK version is created and takes over. Because
the count is committed before the key is used, a crash can only waste counts, never reuse them.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError, IntegrityFailure
from faceseal.keys.provider import KeyProvider, same_key

log = logging.getLogger(__name__)

DEFAULT_MAX_ENCRYPTIONS = 2**30
DEFAULT_CACHE_SIZE = 32
DEFAULT_CACHE_TTL_SECONDS = 3600.0


@dataclass(frozen=True)
class DataKeyInfo:
    """A data key as stored: its version, wrapped bytes and usage. No key material."""

    version: int
    wrapped: bytes
    created_at: float
    encryptions: int


class DataKeyRepository(Protocol):
    """Where wrapped DEKs and their counters live (the template store implements this)."""

    def load_data_keys(self) -> list[DataKeyInfo]: ...

    def insert_data_key(self, version: int, wrapped: bytes, created_at: float) -> bool:
        """Insert a new version; False if that version exists already (another process won)."""
        ...

    def reserve_encryptions(self, version: int, count: int, limit: int) -> bool:
        """Atomically add ``count`` to the counter if the total stays within ``limit``."""
        ...

    def replace_wrapped(self, version: int, wrapped: bytes) -> None: ...

    def get_meta(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Reservation:
    """Permission to perform ``count`` encryptions under DEK ``version``."""

    version: int
    key: SecretBytes
    count: int


#: Seconds a process trusts its copy of the minimum decryption version.
MIN_VERSION_TTL = 1.0


def dek_context(keyset_id: bytes, version: int) -> bytes:
    """What a wrapped DEK is bound to: this vault's keyset and its version."""
    return b"faceseal-dek\x00" + keyset_id + struct.pack(">I", version)


class DataKeyManager:
    """Hands out DEKs for sealing (counted) and for opening (cached)."""

    def __init__(
        self,
        provider: KeyProvider,
        repository: DataKeyRepository,
        keyset_id: bytes,
        *,
        max_encryptions: int = DEFAULT_MAX_ENCRYPTIONS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL_SECONDS,
    ) -> None:
        if max_encryptions < 1:
            raise ValueError("max_encryptions must be at least 1")
        self._provider = provider
        self._repository = repository
        self._keyset_id = keyset_id
        self._max_encryptions = max_encryptions
        self._cache: OrderedDict[int, tuple[SecretBytes, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._lock = threading.RLock()
        self._min_version: int | None = None
        self._min_version_read = 0.0

    @property
    def max_encryptions(self) -> int:
        return self._max_encryptions

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    def min_decrypt_version(self) -> int:
        """Versions below this are retired and refused. Re-read at most every
        :data:`MIN_VERSION_TTL` seconds (and after :meth:`forget`), so that a retirement made by
        another process (a replica, the CLI) takes effect here within that time."""
        now = time.monotonic()
        if self._min_version is None or now - self._min_version_read >= MIN_VERSION_TTL:
            value = self._repository.get_meta("min_decrypt_version")
            self._min_version = max(int(value) if value else 1, self._min_version or 1)
            self._min_version_read = now
        return self._min_version

    # --- sealing ---------------------------------------------------------------------------------

    def create_version(self) -> int:
        """Start a new DEK version (a new random key wrapped by the KEK); returns its number."""
        with self._lock:
            while True:
                keys = self._repository.load_data_keys()
                version = max((k.version for k in keys), default=0) + 1
                key, wrapped = self._provider.generate_data_key(
                    dek_context(self._keyset_id, version))
                if self._repository.insert_data_key(version, wrapped, time.time()):
                    self._remember(version, key)
                    log.info("created data key version %d", version)
                    return version

    def reserve(self, count: int) -> list[Reservation]:
        """Reserve ``count`` encryptions, spread over as many DEK versions as the limit needs."""
        if count < 0:
            raise ValueError("count must not be negative")
        reservations: list[Reservation] = []
        remaining = count
        with self._lock:
            while remaining:
                active = self._active_info()
                room = self._max_encryptions - active.encryptions
                take = min(remaining, room)
                if take <= 0:
                    self.create_version()
                    continue
                # The key first: if the provider is down, nothing has been counted or written.
                key = self.key(active.version)
                if not self._repository.reserve_encryptions(
                    active.version, take, self._max_encryptions
                ):
                    continue  # another writer used the room meanwhile; re-read and retry
                reservations.append(Reservation(active.version, key, take))
                remaining -= take
        return reservations

    def _active_info(self) -> DataKeyInfo:
        keys = self._repository.load_data_keys()
        if not keys:
            self.create_version()
            keys = self._repository.load_data_keys()
        return max(keys, key=lambda k: k.version)

    # --- opening ---------------------------------------------------------------------------------

    def key(self, version: int) -> SecretBytes:
        """The DEK of ``version`` (cached). Versions below the minimum are refused (opaque)."""
        if version < self.min_decrypt_version():
            raise DecryptionError()
        with self._lock:
            cached = self._cache.get(version)
            if cached is not None and cached[1] > time.monotonic():
                self._cache.move_to_end(version)
                return cached[0]
            info = self._info(version)
            key = self._provider.unwrap(info.wrapped, dek_context(self._keyset_id, version))
            self._remember(version, key)
            return key

    def _info(self, version: int) -> DataKeyInfo:
        for info in self._repository.load_data_keys():
            if info.version == version:
                return info
        raise DecryptionError()

    def _remember(self, version: int, key: SecretBytes) -> None:
        self._cache[version] = (key, time.monotonic() + self._cache_ttl)
        self._cache.move_to_end(version)
        while len(self._cache) > self._cache_size:
            _, (old, _) = self._cache.popitem(last=False)
            old.wipe()

    def forget(self) -> None:
        """Drop every cached DEK (wiped, best effort)."""
        with self._lock:
            for key, _ in self._cache.values():
                key.wipe()
            self._cache.clear()
            self._min_version = None

    def preload(self, versions: list[int] | None = None) -> int:
        """Unwrap the given DEK versions (default: all not retired) in one provider call where
        the provider batches; returns how many were unwrapped. Ones that fail are left for
        :meth:`key` to report."""
        minimum = self.min_decrypt_version()
        with self._lock:
            now = time.monotonic()
            infos = [i for i in self._repository.load_data_keys()
                     if i.version >= minimum and (versions is None or i.version in versions)
                     and not (i.version in self._cache and self._cache[i.version][1] > now)]
            if not infos:
                return 0
            keys = self._provider.unwrap_many(
                [(i.wrapped, dek_context(self._keyset_id, i.version)) for i in infos])
            loaded = 0
            for info, key in zip(infos, keys, strict=True):
                if key is not None:
                    self._remember(info.version, key)
                    loaded += 1
            return loaded

    def set_provider(self, provider: KeyProvider) -> None:
        """Switch to another provider (after a migration); cached keys stay valid."""
        with self._lock:
            self._provider = provider

    # --- KEK rotation ----------------------------------------------------------------------------

    def rewrap_all(self) -> int:
        """Rewrap every DEK (retired ones too) under the provider's active KEK version; returns
        how many changed. Each new blob is unwrapped and compared with the key before it
        replaces the old one, so a faulty rewrap can never lose a data key. Safe to re-run."""
        active_kek = self._provider.describe().active_version
        changed = 0
        with self._lock:
            for info in self._repository.load_data_keys():
                if self._provider.kek_version_of(info.wrapped) == active_kek:
                    continue
                context = dek_context(self._keyset_id, info.version)
                key = self._provider.unwrap(info.wrapped, context)
                rewrapped = self._provider.rewrap(info.wrapped, context)
                check = self._provider.unwrap(rewrapped, context)
                if not same_key(key, check):
                    raise IntegrityFailure(
                        f"rewrapping data key version {info.version} gave a different key; "
                        "nothing was replaced")
                self._repository.replace_wrapped(info.version, rewrapped)
                changed += 1
        log.info("rewrapped %d data key(s) under KEK version %d", changed, active_kek)
        return changed
