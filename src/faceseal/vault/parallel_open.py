"""Loading a whole gallery from its records on both cores.

The process that loads reads, opens and indexes; a helper process
(:mod:`faceseal.vault.open_worker`) opens at the same time. Python runs one thread at a time
and AES-GCM through ``cryptography`` holds the interpreter lock, so a second thread would not
help; a second process does. Work goes out in units (:class:`ParallelLoad`): a unit goes to the
helper while it has fewer than :data:`MAX_OUTSTANDING` waiting, and the loader does the others
itself, so both cores stay busy whatever their speeds.

Fail-safe rather than fail-closed: if the helper cannot start, dies, answers with an error
or goes quiet, the loader does the units it had handed over itself, and the rest too; a
record the helper could not open is tried again here, so only this process ever decides that
a record is damaged. ``FACESEAL_LOAD_HELPER=0`` turns the helper off.

The helper gets the data keys over its anonymous stdin pipe; it reads the tenant's subject
secrets itself from the subject key store (read-only) where it may, and is otherwise sent those
of the subjects in the pages it opens. It turns core dumps off before any of that and ends when
the load does (docs/performance.md, docs/threat-model.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from faceseal.crypto.record import plaintext_matrix
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError
from faceseal.keys.subject_keys import SubjectRef
from faceseal.storage.base import DirectSource
from faceseal.storage.sqlite import direct_reader
from faceseal.vault.open_worker import read_frame, write_frame
from faceseal.vault.records import BulkOpened, RecordSealer

try:
    import fcntl
except ImportError:  # not POSIX: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

HELPER_ENV = "FACESEAL_LOAD_HELPER"
#: Units handed to the helper and not yet answered (one being opened, the rest waiting: enough
#: that it never idles while the loader indexes).
MAX_OUTSTANDING = 5
#: Silence after which the helper counts as gone.
QUIET_SECONDS = 60.0
#: How the helper is started (tests replace it with helpers that misbehave).
HELPER_COMMAND = (sys.executable, "-c",
                  "import sys; from faceseal.vault.open_worker import main; sys.exit(main())")


def helper_enabled() -> bool:
    if os.environ.get(HELPER_ENV, "").strip().lower() in ("0", "no", "false", "off"):
        return False
    if not sys.executable or getattr(sys, "frozen", False):
        return False  # embedded or frozen: no interpreter to start the helper with
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return cores > 1


#: Pipe buffer asked for (Linux; the default pipe-max-size): a 10 MB page crosses in ten
#: system calls instead of 160, each of which makes the reading thread wait for the
#: interpreter lock again.
PIPE_BYTES = 1 << 20


def _widen(pipe: Any) -> None:
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if pipe is None or setsize is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setsize, PIPE_BYTES)
    except OSError:  # above this system's pipe-max-size: the default stays
        log.debug("pipe buffer not widened", exc_info=True)


class HelperGone(Exception):
    """The helper process stopped answering; the loader goes on alone."""


class OpenHelper:
    """One helper process and the two threads that feed it and read from it."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            list(HELPER_COMMAND),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True)
        for pipe in (self._process.stdin, self._process.stdout):
            _widen(pipe)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self._outbox: queue.Queue[Any] = queue.Queue()
        self.ready = False
        self._reader = threading.Thread(target=self._read, name="faceseal-open-read",
                                        daemon=True)
        self._writer = threading.Thread(target=self._write, name="faceseal-open-write",
                                        daemon=True)
        self._reader.start()
        self._writer.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        try:
            while (message := read_frame(self._process.stdout)) is not None:  # type: ignore[arg-type]
                self.inbox.put(message)
        except (OSError, ValueError, EOFError):
            pass
        self.inbox.put(("gone",))

    def _write(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while (message := self._outbox.get()) is not None:
                write_frame(stdin, message)  # type: ignore[arg-type]
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, message: Any) -> None:
        self._outbox.put(message)

    def next_message(self, *, block: bool) -> Any:
        """The helper's next message (None when none is waiting and ``block`` is False)."""
        try:
            message = self.inbox.get(block=block, timeout=QUIET_SECONDS if block else None)
        except queue.Empty:
            if block:
                raise HelperGone("the helper went quiet") from None
            return None
        if message[0] == "ready":
            self.ready = True
            return self.next_message(block=block)
        if message[0] in ("gone", "error"):
            raise HelperGone(f"the helper stopped ({message[-1]})")
        return message

    def close(self, *, kill: bool = False) -> None:
        self._outbox.put(None)
        if kill:
            self._process.kill()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._writer.join(timeout=5)
        self._reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()


class ParallelLoad:
    """Opens one tenant's whole-gallery load, with a helper process where it can.

    Work comes in units: pages this process read (:meth:`run`: the helper is handed their
    records) or rowid ranges of a store both processes can read (:meth:`run_ranges`: the
    helper reads its ranges itself). A unit goes to the helper while it has fewer than
    :data:`MAX_OUTSTANDING` waiting; otherwise this process does it."""

    def __init__(self, sealer: RecordSealer, tenant: str, keys: dict[Any, Any],
                 deks: Callable[[], dict[int, SecretBytes]]) -> None:
        self._sealer = sealer
        self._tenant = tenant
        self._keys = keys
        self._deks = deks
        #: The tenant's subject secrets; set before :meth:`run` or :meth:`run_ranges`.
        self.secrets: dict[SubjectRef, SecretBytes] = {}
        self._helper: OpenHelper | None = None
        self._helper_failed = not helper_enabled()
        self._sent_subjects: set[str] = set()
        self._secrets_told = False
        #: Units handed to the helper and not answered: their pages, or their ranges.
        self._outstanding: dict[int, Any] = {}
        self._redo: Callable[[Any, Callable[[BulkOpened], None]], None] = self._open_here
        #: Units done by the helper and here (for tests and the load report).
        self.units_by_helper = 0
        self.units_here = 0

    def start(self, secrets_location: str | None = None) -> None:
        """Start the helper now (it starts while the caller reads the secrets). With
        ``secrets_location`` (a subject key store file), the helper reads the tenant's secrets
        from it itself, at once."""
        if self._helper is None and not self._helper_failed:
            try:
                self._helper = OpenHelper()
            except OSError as exc:
                log.info("loading without a helper process: %s", type(exc).__name__)
                self._helper_failed = True
                return
            if secrets_location is not None:
                self._introduce()
                self._helper.send(("secrets_from", secrets_location))
                self._secrets_told = True

    def run(self, pages: Iterator[list[tuple[Any, ...]]],
            index: Callable[[BulkOpened], None]) -> None:
        """Open pages read here (tuples in TemplateRow field order)."""
        try:
            for number, page in enumerate(pages):
                self._collect(index, block=False)
                if number == 1:
                    self.start()
                    self._introduce()
                if self._has_room():
                    self._ship(number, page)
                else:
                    self._open_here(page, index)
            self._finish(index)
        finally:
            self._stop()

    def run_ranges(self, source: DirectSource, upto: int,
                   index: Callable[[BulkOpened], None], rows_per_range: int = 10_000) -> None:
        """Read and open the tenant's rowid ranges of ``source``, here and in the helper (which
        reads the subject secrets itself where :meth:`start` was given their location)."""
        reader = direct_reader(source.kind, source.location)

        def read_here(unit: tuple[int, int], sink: Callable[[BulkOpened], None]) -> None:
            self._open_here(reader.read(self._tenant, upto, *unit), sink)

        self._redo = read_here
        try:
            self.start()
            if not self._secrets_told:
                self._introduce(all_secrets=True)
            for number, unit in enumerate(reader.ranges(rows_per_range)):
                self._collect(index, block=False)
                if self._has_room():
                    assert self._helper is not None
                    self._outstanding[number] = unit
                    self._helper.send(("read", number, source.kind, source.location, upto, *unit))
                else:
                    read_here(unit, index)
            self._finish(index)
        finally:
            self._stop()
            reader.close()

    # --- the helper ------------------------------------------------------------------------

    def _introduce(self, *, all_secrets: bool = False) -> None:
        """Tell the helper whose records it opens, and with which data keys."""
        helper = self._helper
        if helper is None:
            return
        try:
            helper.send(("setup", self._sealer.keyset_id, self._tenant))
            helper.send(("deks", {v: k.reveal() for v, k in self._deks().items()}))
        except DecryptionError:
            self._give_up("no data keys")
            return
        if all_secrets:
            helper.send(("secrets", {s: secret.reveal() for (t, s), secret in self.secrets.items()
                                     if t == self._tenant}))

    def _has_room(self) -> bool:
        helper = self._helper
        return helper is not None and helper.ready and len(self._outstanding) < MAX_OUTSTANDING

    def _ship(self, number: int, page: list[tuple[Any, ...]]) -> None:
        assert self._helper is not None
        columns = list(zip(*page, strict=True))
        fresh = {s for s in columns[2] if s not in self._sent_subjects}
        if fresh:
            found = {s: secret.reveal() for s in fresh
                     if (secret := self.secrets.get((self._tenant, s))) is not None}
            self._helper.send(("secrets", found))
            self._sent_subjects |= fresh
        self._outstanding[number] = page
        self._helper.send(("open", number, columns[2], columns[0], columns[3], columns[7]))

    def _collect(self, index: Callable[[BulkOpened], None], *, block: bool) -> None:
        helper = self._helper
        if helper is None:
            return
        try:
            while message := helper.next_message(block=block and bool(self._outstanding)):
                self._take(message, index)
                block = False
        except HelperGone as exc:
            self._give_up(str(exc))
            for unit in self._outstanding.values():
                self._redo(unit, index)
            self._outstanding.clear()

    def _finish(self, index: Callable[[BulkOpened], None]) -> None:
        while self._outstanding:
            self._collect(index, block=True)

    def _take(self, message: Any, index: Callable[[BulkOpened], None]) -> None:
        kind, number, failed, groups = message
        unit = self._outstanding.pop(number)
        if kind == "opened":  # a page of ours: positions into it
            opened = [(model_id, [unit[i][2] for i in positions],
                       [unit[i][0] for i in positions],
                       plaintext_matrix(dtype, dimension, joined))
                      for model_id, dtype, dimension, positions, joined in groups]
            failed_rows = [unit[i] for i in failed]
        else:  # a range it read: ids and failed rows included
            opened = [(model_id, list(subject_ids), list(template_ids),
                       plaintext_matrix(dtype, dimension, joined))
                      for model_id, dtype, dimension, subject_ids, template_ids, joined
                      in groups]
            failed_rows = [tuple(row) for row in failed]
        index(BulkOpened(opened, []))
        self.units_by_helper += 1
        if failed_rows:  # only this process decides that a record is damaged
            index(self._sealer.open_bulk(self._tenant, failed_rows, self.secrets, self._keys))

    def _open_here(self, page: list[tuple[Any, ...]], index: Callable[[BulkOpened], None]
                   ) -> None:
        index(self._sealer.open_bulk(self._tenant, page, self.secrets, self._keys))
        self.units_here += 1

    def _give_up(self, why: str) -> None:
        log.info("the load goes on without its helper: %s", why)
        self._helper_failed = True
        self._stop(kill=True)

    def close(self) -> None:
        """Stop the helper if it still runs (idempotent)."""
        self._stop()

    def _stop(self, *, kill: bool = False) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.close(kill=kill)
