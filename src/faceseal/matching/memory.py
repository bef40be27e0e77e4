"""Memory for decrypted templates: page-aligned, locked against swapping, wiped on release.

Decrypted encodings are biometric data in the clear; they should not reach a swap device or a
core dump. Every large array of the in-memory gallery lives in a :class:`LockedArray`: a private
anonymous ``mmap`` (page aligned, never shared with the allocator), backed by transparent huge
pages where the kernel offers them (``MADV_HUGEPAGE``, asked before locking), ``mlock``-ed where
the OS allows it, marked ``MADV_DONTDUMP`` where the platform offers it, and overwritten with
zeros before it is unmapped.

Locking is best effort and reported, never silently assumed: an unprivileged process is limited by
``RLIMIT_MEMLOCK`` (often 8 MiB), and a gallery of a million templates needs several hundred MiB.
When ``mlock`` is refused the array still works, :func:`lock_status` says so, and a warning is
logged once per process. Set ``FACESEAL_MLOCK=0`` to skip locking deliberately.

What this cannot cover, and the docs say so: short-lived temporaries made by numpy while matching
(a few candidate rows per query), plaintext buffers inside OpenSSL, and copies a caller keeps.
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

import numpy as np
import numpy.typing as npt

from faceseal.crypto.secure_memory import MLOCK_ENV, load_libc, locking_wanted

log = logging.getLogger(__name__)


_status_lock = threading.Lock()
_warned = False


@dataclass
class LockStatus:
    """How much gallery memory is locked right now, and why some is not."""

    locked_bytes: int = 0
    unlocked_bytes: int = 0
    #: Why the last refused lock was refused (None when every lock succeeded).
    reason: str | None = None

    @property
    def fully_locked(self) -> bool:
        return self.unlocked_bytes == 0

    def to_dict(self) -> dict[str, Any]:
        return {"locked_bytes": self.locked_bytes, "unlocked_bytes": self.unlocked_bytes,
                "fully_locked": self.fully_locked, "reason": self.reason}


_status = LockStatus()


def lock_status() -> LockStatus:
    """A copy of the process-wide locking figures."""
    with _status_lock:
        return LockStatus(_status.locked_bytes, _status.unlocked_bytes, _status.reason)


def memlock_limit() -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_MEMLOCK in bytes, or None where the platform has no such limit."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        return resource.getrlimit(resource.RLIMIT_MEMLOCK)
    except (ImportError, AttributeError, OSError):
        return None


def _try_lock(address: int, size: int) -> str | None:
    """mlock the range; None on success, else a short reason."""
    if not locking_wanted():
        return f"disabled by {MLOCK_ENV}=0"
    libc = load_libc()
    if libc is None:
        return "mlock is not available on this platform"
    if libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(size)) == 0:
        return None
    err = ctypes.get_errno()
    limit = memlock_limit()
    detail = os.strerror(err)
    if limit is not None:
        soft = "unlimited" if limit[0] < 0 else f"{limit[0]} bytes"
        detail += f"; RLIMIT_MEMLOCK is {soft}"
    return detail


def _record(size: int, reason: str | None) -> None:
    global _warned  # noqa: PLW0603 - warn once per process
    with _status_lock:
        if reason is None:
            _status.locked_bytes += size
        else:
            _status.unlocked_bytes += size
            _status.reason = reason
            warn = not _warned
            _warned = True
        if reason is not None and warn:
            log.warning(
                "decrypted templates could not be locked in memory (%s); they may be swapped to "
                "disk. Raise the memlock limit (ulimit -l, LimitMEMLOCK=) or grant CAP_IPC_LOCK.",
                reason,
            )


def _forget(size: int, locked: bool) -> None:
    with _status_lock:
        if locked:
            _status.locked_bytes -= size
        else:
            _status.unlocked_bytes -= size
        if _status.unlocked_bytes == 0:
            _status.reason = None


#: Arrays from this size ask for transparent huge pages.
HUGE_PAGE_BYTES = 2 * 1024 * 1024


def _private_mapping(size: int) -> mmap.mmap:
    """A private anonymous mapping (a forked child gets a copy-on-write view, never the
    parent's later writes), falling back to the default where the flags do not exist."""
    flags = getattr(mmap, "MAP_PRIVATE", None)
    anonymous = getattr(mmap, "MAP_ANONYMOUS", None)
    if flags is None or anonymous is None:
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=flags | anonymous)


class LockedArray:
    """A numpy array in its own locked, non-dumpable anonymous mapping, wiped on release."""

    __slots__ = ("_array", "_locked", "_map", "_size")

    def __init__(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = max(count * dt.itemsize, 1)
        page = mmap.PAGESIZE
        self._size = (size + page - 1) // page * page
        self._map: mmap.mmap | None = _private_mapping(self._size)
        hugepage = getattr(mmap, "MADV_HUGEPAGE", None)
        if hugepage is not None and self._size >= HUGE_PAGE_BYTES:
            # Before mlock, which faults the pages in: then they come as 2 MiB pages (fewer TLB
            # misses in the scan; Linux gives huge pages to private anonymous memory only).
            try:
                self._map.madvise(hugepage)
            except OSError:  # THP disabled: ordinary pages, same behaviour
                log.debug("MADV_HUGEPAGE refused", exc_info=True)
        dontdump = getattr(mmap, "MADV_DONTDUMP", None)
        if dontdump is not None:
            try:
                self._map.madvise(dontdump)
            except OSError:  # an old kernel: the array still works, only core dumps may hold it
                log.debug("MADV_DONTDUMP refused", exc_info=True)
        buffer = np.frombuffer(self._map, dtype=np.uint8)
        address = int(buffer.ctypes.data)
        reason = _try_lock(address, self._size)
        self._locked = reason is None
        _record(self._size, reason)
        self._array: npt.NDArray[Any] = buffer[: count * dt.itemsize].view(dt).reshape(shape)

    @property
    def array(self) -> npt.NDArray[Any]:
        return self._array

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def nbytes(self) -> int:
        return self._size

    def release(self) -> None:
        """Overwrite with zeros, unlock and unmap. Safe to call twice."""
        if self._map is None:
            return
        mapping, self._map = self._map, None
        whole = np.frombuffer(mapping, dtype=np.uint8)
        whole.fill(0)
        if self._locked:
            libc = load_libc()
            if libc is not None:
                libc.munlock(ctypes.c_void_p(int(whole.ctypes.data)), ctypes.c_size_t(self._size))
        _forget(self._size, self._locked)
        del whole
        self._array = np.zeros(0, dtype=self._array.dtype)
        try:
            mapping.close()
        except BufferError:
            # A numpy view of the mapping is still alive somewhere (a caller kept a slice);
            # the bytes are already zero, and the mapping goes when that view does.
            log.debug("gallery mapping still referenced at release")

    def __del__(self) -> None:
        # At interpreter shutdown modules may be gone; the OS reclaims the mapping anyway.
        with contextlib.suppress(Exception):
            self.release()

    def __repr__(self) -> str:
        return f"LockedArray(<{self._array.dtype} {self._array.shape}, redacted>)"

    def __reduce__(self) -> Any:
        raise TypeError("LockedArray cannot be pickled")
