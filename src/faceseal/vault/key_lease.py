"""Key operations run one at a time, across every process of a vault.

A rotation, a rewrap, a retirement and a migration each change the data keys or the records
under them; two at once (two CLI runs, a CLI run beside a server, two server replicas) would
race each other's key versions. So each takes the store's ``key-operation`` lease
(:meth:`~faceseal.storage.base.TemplateStore.lease_take`) once the vault has authorised it, and a
second one is refused with :class:`~faceseal.errors.Conflict` naming who holds it. The lease lives
in the store, so every front end (Python API, CLI, HTTP) meets the same rule.

The holder renews the lease from a background thread while its work runs; a holder killed
outright stops renewing, and the lease lapses :data:`LEASE_SECONDS` later instead of wedging the
vault. Clocks of the machines sharing a store must agree to within a fraction of that. A holder
on this machine (same boot, same process namespace) whose process is gone is known dead at once,
so a rotation killed with ``kill -9`` can be resumed straight away from the same machine.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceseal.errors import Conflict, FacesealError
from faceseal.storage.base import TemplateStore

log = logging.getLogger(__name__)

#: The store lease every key operation holds.
KEY_OPERATION_LEASE = "key-operation"
#: How long a lease outlives its holder's last renewal.
LEASE_SECONDS = 60.0
#: How often a holder renews (well inside LEASE_SECONDS, so a slow store call does not lose it).
RENEW_SECONDS = 15.0


@contextmanager
def key_operation(store: TemplateStore, action: str) -> Iterator[None]:
    """Hold the key-operation lease for ``action`` while the block runs, or raise
    :class:`Conflict` if another key operation holds it."""
    token = secrets.token_hex(16)
    holder: dict[str, str | int | float] = {
        "token": token, "action": action, "pid": os.getpid(), "host": socket.gethostname(),
        "processes": _process_space(), "since": time.time(),
    }
    other = store.lease_take(KEY_OPERATION_LEASE, holder, LEASE_SECONDS, time.time())
    if other is not None and _died_here(other):
        other = store.lease_take(KEY_OPERATION_LEASE, holder, LEASE_SECONDS, time.time(),
                                 replace=str(other.get("token")))
    if other is not None:
        raise Conflict(describe_holder(other, time.time()))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, holder, stop),
                               name="faceseal-key-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            store.lease_release(KEY_OPERATION_LEASE, token)
        except FacesealError as error:  # it lapses on its own; the work's outcome stands
            log.warning("could not release the key-operation lease (%s); it lapses in %.0f s",
                        error.code, LEASE_SECONDS)


def describe_holder(holder: dict[str, str | int | float], now: float) -> str:
    """The refusal's message: what runs, where, since when, and when its lease would lapse."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", now))))
    left = max(0.0, float(holder.get("expires", now)) - now)
    return (f"another key operation is running ({holder.get('action', '?')}, process "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {since}); try again "
            f"when it has finished (if that process died, its lock lapses within {left:.0f} s)")


def _process_space() -> str:
    """What makes a pid mean one process: this boot of this machine and its pid namespace
    ("" where that cannot be told, and then no holder is ever judged dead by its pid)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}:{namespace}"


def _died_here(holder: dict[str, str | int | float]) -> bool:
    """True if ``holder`` ran in this process space and its process no longer exists. A pid
    reused since only makes the lease wait for its expiry (never taken from a live holder)."""
    space = _process_space()
    if not space or holder.get("processes") != space:
        return False
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # alive but not ours to signal, or no pid
        return False
    return False


def _renew(store: TemplateStore, holder: dict[str, str | int | float],
           stop: threading.Event) -> None:
    while not stop.wait(RENEW_SECONDS):
        try:
            other = store.lease_take(KEY_OPERATION_LEASE, holder, LEASE_SECONDS, time.time())
        except FacesealError as error:
            log.warning("could not renew the key-operation lease (%s); retrying", error.code)
            continue
        if other is not None:  # ours lapsed (this process stalled past its expiry)
            log.error("the key-operation lease lapsed and was taken by another process; "
                      "this %s goes on, but the two may race", holder["action"])
            return
