"""Memory for key material that stays out of core dumps and, where allowed, out of swap.

:class:`~faceseal.crypto.secret.SecretBytes` keeps its bytes here rather than in the Python heap.
One anonymous ``mmap`` per size class (64 KiB "chunks") is marked ``MADV_DONTDUMP`` (Linux) and
``mlock``-ed where ``RLIMIT_MEMLOCK`` allows; small secrets take fixed-size slots carved from it,
so a million subject secrets cost a few hundred mappings, not a million (``vm.max_map_count`` is
about 65 000). A slot is overwritten with zeros when it is freed and before it is reused.

This is defence in depth. Every :meth:`SecretBytes.reveal` makes a transient ``bytes`` copy in the
ordinary heap (hashlib, OpenSSL and ``cryptography`` need one), which is why a process holding keys
also turns core dumps off (:mod:`faceseal.keys.process_guard`); docs/threat-model.md says what is
and is not covered.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import os
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Set to 0 to skip mlock of key material (and of the gallery: the same switch).
MLOCK_ENV = "FACESEAL_MLOCK"
CHUNK_BYTES = 64 * 1024
#: Key material locked at most: keys, API keys and passphrases fit many times over, while a
#: million subject secrets (32 MiB) would eat the memlock allowance the gallery needs more
#: (``RLIMIT_MEMLOCK`` is often 8 MiB). Beyond it, chunks are still kept out of core dumps.
MAX_LOCKED_BYTES = 4 * 2**20
SLOT_CLASSES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
#: The slot class for each length (a table: allocation is on the hot path of gallery loads).
_CLASS_OF = [next(k for k in SLOT_CLASSES if k >= n) for n in range(SLOT_CLASSES[-1] + 1)]

_libc: Any = None
_libc_loaded = False


def load_libc() -> Any:
    """The C library with ``mlock``/``munlock`` typed, or None where they are missing. One
    handle per process, shared with the gallery's locked memory (``matching.memory``)."""
    global _libc, _libc_loaded  # noqa: PLW0603 - one lazily loaded handle per process
    if not _libc_loaded:
        _libc_loaded = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True) if name else None
        except OSError:
            libc = None
        if libc is not None and hasattr(libc, "mlock") and hasattr(libc, "munlock"):
            for function in (libc.mlock, libc.munlock):
                function.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                function.restype = ctypes.c_int
            _libc = libc
    return _libc


def locking_wanted() -> bool:
    """Whether memory locking is on (``FACESEAL_MLOCK=0`` turns it off everywhere)."""
    return os.environ.get(MLOCK_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


@dataclass
class SecretMemoryStatus:
    """What the secret arena holds and how it is protected (for ``faceseal check``/tests)."""

    mapped_bytes: int = 0
    locked_bytes: int = 0
    dontdump: bool = False
    #: Why the last mlock was refused (None when every one succeeded).
    lock_refused: str | None = None


_status = SecretMemoryStatus()


def secret_memory_status() -> SecretMemoryStatus:
    return SecretMemoryStatus(_status.mapped_bytes, _status.locked_bytes, _status.dontdump,
                              _status.lock_refused)


def _protected_map(size: int) -> mmap.mmap:
    """An anonymous private mapping of ``size`` bytes, non-dumpable, locked where allowed."""
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    dontdump = getattr(mmap, "MADV_DONTDUMP", None)
    if dontdump is not None:
        try:
            mapping.madvise(dontdump)
            _status.dontdump = True
        except OSError:  # an old kernel: still usable, only a core dump could hold it
            log.debug("MADV_DONTDUMP refused for key material", exc_info=True)
    _status.mapped_bytes += size
    if locking_wanted() and _status.locked_bytes + size > MAX_LOCKED_BYTES:
        _status.lock_refused = f"over the {MAX_LOCKED_BYTES}-byte cap for locked key material"
    elif locking_wanted():
        libc = load_libc()
        if libc is not None:
            view = (ctypes.c_char * size).from_buffer(mapping)
            address = ctypes.addressof(view)
            del view
            if libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(size)) == 0:
                _status.locked_bytes += size
            else:
                _status.lock_refused = os.strerror(ctypes.get_errno())
    return mapping


class SecretSlot:
    """A zeroed region of protected memory holding one secret; give it back with :meth:`free`."""

    __slots__ = ("_arena", "_klass", "_map", "_offset", "_view", "length")

    def __init__(self, arena: _Arena | None, klass: int, mapping: mmap.mmap | None,  # noqa: PLR0917
                 view: memoryview, offset: int, length: int) -> None:
        self._arena = arena
        self._klass = klass
        self._map = mapping
        self._view = view
        self._offset = offset
        self.length = length

    def view(self) -> memoryview:
        """The secret's bytes (a view into protected memory: never keep it)."""
        return self._view[self._offset:self._offset + self.length]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._view[self._offset:self._offset + len(data)] = data

    def zero(self) -> None:
        end = self._offset + self._klass
        self._view[self._offset:end] = bytes(self._klass)

    def free(self) -> None:
        """Overwrite with zeros and return the slot (unmap a dedicated mapping)."""
        if self._klass == 0:
            return
        self.zero()
        klass, self._klass = self._klass, 0
        if self._arena is not None:
            self._arena.give_back(klass, self._view, self._offset)
        elif self._map is not None:
            mapping, self._map = self._map, None
            self._view.release()
            _status.mapped_bytes -= len(mapping)
            with contextlib.suppress(BufferError):
                mapping.close()


class _Arena:
    """Size-classed slots in protected chunks. list.append/pop are atomic under the GIL, so the
    free lists need no lock (a lock here could deadlock: freeing runs from ``__del__`` during any
    allocation); a lock guards only the bump pointers of the current chunks."""

    def __init__(self) -> None:
        self._free: dict[int, list[tuple[memoryview, int]]] = {k: [] for k in SLOT_CLASSES}
        self._current: dict[int, tuple[memoryview, int]] = {}
        self._chunks: list[mmap.mmap] = []
        self._lock = threading.RLock()

    def allocate(self, length: int) -> SecretSlot:
        if length > SLOT_CLASSES[-1]:  # larger than any class: a mapping of its own
            size = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            mapping = _protected_map(size)
            return SecretSlot(None, size, mapping, memoryview(mapping), 0, length)
        klass = _CLASS_OF[length]
        free = self._free[klass]
        try:
            view, offset = free.pop()
        except IndexError:
            view, offset = self._carve(klass)
        return SecretSlot(self, klass, None, view, offset, length)

    def _carve(self, klass: int) -> tuple[memoryview, int]:
        with self._lock:
            view, offset = self._current.get(klass, (memoryview(b""), CHUNK_BYTES))
            if offset + klass > CHUNK_BYTES:
                mapping = _protected_map(CHUNK_BYTES)
                self._chunks.append(mapping)  # chunks live as long as the process
                view, offset = memoryview(mapping), 0
            self._current[klass] = (view, offset + klass)
            return view, offset

    def give_back(self, klass: int, view: memoryview, offset: int) -> None:
        self._free[klass].append((view, offset))


_arena = _Arena()


def allocate_secret(data: bytes | bytearray | memoryview) -> SecretSlot:
    """Copy ``data`` into protected memory."""
    slot = _arena.allocate(len(data))
    slot._view[slot._offset:slot._offset + slot.length] = data
    return slot
