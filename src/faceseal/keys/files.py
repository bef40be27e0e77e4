"""Private files for key material: 0700 directories, 0600 files, atomic replacement."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from faceseal.errors import KeyringError

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) as 0700, or tighten an existing one we own."""
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(directory, PRIVATE_DIR_MODE)


def check_private(path: Path) -> None:
    """Refuse key files that others on the machine could read or write (like ssh does)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise KeyringError(f"key file not found: {path.name}") from None
    except OSError as exc:
        raise KeyringError(f"cannot read key file {path.name}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyringError(
            f"{path.name} is accessible to other users (mode {mode:o}); "
            f"run: chmod 600 {path.name} and chmod 700 on its directory"
        )


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A 0600 temp file beside ``path`` to write into; on success it is fsynced, renamed over
    ``path`` and the directory fsynced, so readers see the old file or the whole new one."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_private_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as 0600 via a temp file, fsync, rename and directory fsync."""
    with private_atomic_writer(path) as handle:
        handle.write(data)


def is_within(inner: Path, outer: Path) -> bool:
    """True when ``inner`` is ``outer`` or lies below it (after resolving links)."""
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents
