"""Keep a process that holds keys from writing them into a core dump.

A core dump of a faceseal process holds the KEK, the data keys, subject secrets, the API keys of
recent callers and decrypted templates: Python copies key bytes into its heap whenever a primitive
needs them, and those copies cannot all be kept out of a dump. So every process that holds keys
(the CLI, ``faceseal serve``, a library ``Vault.open``/``create``) calls :func:`protect_process`
first:

* ``RLIMIT_CORE`` soft limit 0: the kernel writes no core file (the hard limit is left alone, so an
  operator can still raise the soft limit for a debugging session);
* on Linux, ``prctl(PR_SET_DUMPABLE, 0)``: no core even where the limit is raised or a pipe helper
  (``systemd-coredump``, apport) ignores it, and processes of the same user cannot ``ptrace`` it
  or read its ``/proc/PID/mem``.

Set ``FACESEAL_ALLOW_CORE_DUMPS=1`` to keep dumps for a debugging session (the dump then holds
key material: treat it as a secret). Both calls are process-wide and one-way by design; a
library user who embeds faceseal accepts that by opening a vault.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Set to 1 to leave core dumps on (debugging only; a dump then holds keys).
ALLOW_CORE_DUMPS_ENV = "FACESEAL_ALLOW_CORE_DUMPS"
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


@dataclass(frozen=True)
class ProcessProtection:
    """What :func:`protect_process` achieved (reported by ``faceseal check`` and tests)."""

    core_limit_zero: bool
    #: None where the platform has no notion of dumpability (not Linux).
    non_dumpable: bool | None
    opted_out: bool
    detail: str = ""


_lock = threading.Lock()
_done: ProcessProtection | None = None


def core_dumps_allowed_by_env() -> bool:
    return os.environ.get(ALLOW_CORE_DUMPS_ENV, "").strip().lower() in ("1", "yes", "true", "on")


def protect_process() -> ProcessProtection:
    """Turn core dumps off for this process (idempotent; cheap after the first call)."""
    global _done  # noqa: PLW0603 - once per process
    with _lock:
        if _done is not None:
            return _done
        if core_dumps_allowed_by_env():
            log.warning("core dumps left on (%s): a core file of this process would hold key "
                        "material", ALLOW_CORE_DUMPS_ENV)
            _done = ProcessProtection(False, None, True, f"opted out by {ALLOW_CORE_DUMPS_ENV}")
            return _done
        problems: list[str] = []
        core_zero = _zero_core_limit(problems)
        non_dumpable = _set_not_dumpable(problems)
        if problems:
            log.warning("core dumps could not be fully disabled: %s", "; ".join(problems))
        _done = ProcessProtection(core_zero, non_dumpable, False, "; ".join(problems))
        return _done


def _zero_core_limit(problems: list[str]) -> bool:
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        problems.append("no RLIMIT_CORE on this platform")
        return False
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (OSError, ValueError) as exc:
        problems.append(f"RLIMIT_CORE: {exc}")
        return False
    return True


def _set_not_dumpable(problems: list[str]) -> bool | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        problems.append("libc not found for prctl")
        return False
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        problems.append(f"PR_SET_DUMPABLE: {os.strerror(ctypes.get_errno())}")
        return False
    return bool(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
