"""Secrets a long-running process read from its environment, removed from it afterwards.

A server started with ``FACESEAL_PASSPHRASE=...`` would otherwise keep the passphrase in its
environment for its whole life: inherited by every child process, and readable in
``/proc/PID/environ`` by root (and, without :mod:`faceseal.keys.process_guard`, by the same
user). :func:`scrub_environment` overwrites the value where the C library keeps it (for the
initial environment, the very memory ``/proc/PID/environ`` shows) and unsets the variable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: Variables faceseal reads secrets from (the names of credential *sources* a key URI points at,
#: such as ``VAULT_TOKEN``, are the operator's: a provider may read them again to log in anew).
SECRET_ENV_NAMES = ("FACESEAL_PASSPHRASE", "FACESEAL_API_KEY", "FACESEAL_TLS_KEY_PASSWORD",
                    "FACESEAL_DB_ADMIN_URL", "FACESEAL_LEGACY_SOURCE")


def scrub_environment(names: tuple[str, ...] = SECRET_ENV_NAMES) -> list[str]:
    """Overwrite and unset each variable of ``names`` that is set; returns those scrubbed."""
    scrubbed = []
    for name in names:
        if name not in os.environ:
            continue
        _overwrite_in_place(name)
        os.environ.pop(name, None)  # also unsetenv(): children no longer inherit it
        scrubbed.append(name)
    if scrubbed:
        log.debug("removed %s from the environment", ", ".join(scrubbed))
    return scrubbed


def _overwrite_in_place(name: str) -> None:
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
    except OSError:
        return
    getenv = libc.getenv
    getenv.argtypes = [ctypes.c_char_p]
    getenv.restype = ctypes.c_void_p
    address = getenv(name.encode())
    if address:
        length = len(ctypes.string_at(address))
        ctypes.memset(address, 0, length)
