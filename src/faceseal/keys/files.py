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


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parent, each 0700 whatever the umask.

    ``Path.mkdir(parents=True)`` gives the parents the umask's mode (0777 under ``umask 000``):
    another user could then rename the vault or key directory away and put their own in its
    place. Existing parents are left as they are (they are not ours to change)."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made by a concurrent process meanwhile; checked by the caller
        # mkdir's mode is masked by the umask (a umask of 0777 would give 000): set it outright.
        os.chmod(path, PRIVATE_DIR_MODE, follow_symlinks=False)


def ensure_private_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) as 0700, or tighten an existing one we own.

    Refuses (:class:`KeyringError`) a path through a symlink another user could have planted, a
    directory owned by another user, or one below a world-writable, non-sticky directory (see
    :func:`check_safe_dir`). Returns the directory with symlinks resolved."""
    make_private_dirs(check_safe_dir(directory, must_exist=False))
    resolved = check_safe_dir(directory)
    if os.name != "posix":  # no POSIX modes or O_DIRECTORY: the platform's ACLs apply
        return resolved
    fd = os.open(resolved, os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW)
    try:
        _check_owner(resolved, os.fstat(fd))
        os.fchmod(fd, PRIVATE_DIR_MODE)
    finally:
        os.close(fd)
    return resolved


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_TRUSTED_UIDS = frozenset({0})


def _trusted(uid: int) -> bool:
    """Root and this process's own user may own links and directories on a key path."""
    return uid in _TRUSTED_UIDS or uid == _euid()


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _check_owner(path: Path, info: os.stat_result) -> None:
    if hasattr(os, "geteuid") and info.st_uid != _euid():
        raise KeyringError(
            f"{path} is owned by user id {info.st_uid}, not by the user running faceseal "
            f"({_euid()}); faceseal keeps keys and vaults only in directories it owns")


def check_safe_dir(directory: Path, *, must_exist: bool = True) -> Path:
    """Check that no other user can redirect ``directory``; return it resolved.

    Walks the absolute path (without resolving it) from the root: every symbolic link on the way
    must be owned by root or by the running user (a link planted by someone else is refused: run
    as root, faceseal would otherwise write keys wherever it points); no existing directory on
    the way may be world-writable without the sticky bit (anyone could swap the next component).
    The directory itself, when it exists, must be a directory owned by the running user. On
    platforms without POSIX ownership only the link check applies."""
    absolute = Path(os.path.abspath(directory.expanduser()))
    if os.name != "posix":
        return absolute.resolve()
    _walk_checked(absolute, depth=0)
    resolved = absolute.resolve()
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        if must_exist:
            raise KeyringError(f"directory not found: {directory}") from None
        return resolved
    if not stat.S_ISDIR(info.st_mode):
        raise KeyringError(f"{directory} is not a directory")
    _check_owner(Path(directory), info)
    return resolved


_MAX_LINKS = 40  # like the kernel's MAXSYMLINKS: a loop is refused, not followed forever


def _walk_checked(absolute: Path, depth: int) -> None:
    current = Path(absolute.anchor)
    for part in absolute.parts[1:]:
        try:
            parent_info = os.stat(current)
        except FileNotFoundError:
            return  # the rest will be created by us, 0700
        except OSError as exc:
            raise KeyringError(f"cannot check {current}: {exc.strerror}") from None
        if parent_info.st_mode & stat.S_IWOTH and not parent_info.st_mode & stat.S_ISVTX:
            raise KeyringError(
                f"{current} is writable by every user (and not sticky): another user could "
                f"replace {current / part}; fix its mode (chmod o-w) or choose another directory")
        candidate = current / part
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return  # the rest will be created by us, 0700
        except OSError as exc:
            raise KeyringError(f"cannot check {candidate}: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            if not _trusted(info.st_uid):
                raise KeyringError(
                    f"{candidate} is a symbolic link owned by user id {info.st_uid}: refusing to "
                    "follow a link another user could have planted; use the real path")
            if depth >= _MAX_LINKS:
                raise KeyringError(f"too many symbolic links on the way to {absolute}")
            target = Path(os.path.join(current, os.readlink(candidate)))
            _walk_checked(Path(os.path.abspath(target)), depth + 1)
            current = target.resolve()
        else:
            current = candidate


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
