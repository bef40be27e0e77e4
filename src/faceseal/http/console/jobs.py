"""Key work that can outlast a page (a data-key rotation re-encrypts every record): run in a
background thread of the server, its progress shown on the keys page. Key operations run one at
a time across every process (the vault's lease in the store); a refusal reaches the page at
once. Closing the browser does not stop it; a server restart does, and rotating again resumes
where it stopped (the rotation itself is resumable)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from faceseal.errors import FacesealError
from faceseal.http.context import Service
from faceseal.vault import Vault

log = logging.getLogger("faceseal.http.console")


@dataclass
class JobState:
    kind: str
    principal: str
    started: float
    done: int = 0
    total: int = 0
    finished: bool = False
    outcome: str = ""


class KeyJobs:
    """The console's one background key job (the latest, running or finished)."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self.current: JobState | None = None
        self._lock = threading.Lock()

    def start_data_rotation(self, view: Vault) -> JobState:
        """Start re-encrypting every record under a new data-key version. Returns once the
        rotation holds the vault's key-operation lease and has begun (or has ended); a refusal
        -- another key operation running anywhere (409), or no permission -- is raised here."""
        principal = view.principal
        state = JobState("data-key rotation", principal.name if principal else "?", time.time())
        begun = threading.Event()
        refused: list[FacesealError] = []

        def progress(done: int, total: int) -> None:
            state.done, state.total = done, total
            begun.set()

        def work() -> None:
            try:
                result = view.rotate_data_keys(progress=progress)
                state.outcome = (f"data key version {result.target_version}: "
                                 f"{result.records_reencrypted} record(s) re-encrypted, "
                                 f"{result.records_remaining} remaining")
            except FacesealError as error:
                if not begun.is_set():
                    refused.append(error)
                state.outcome = f"failed: {error}"
            except Exception:
                log.exception("console: the data-key rotation failed")
                state.outcome = "failed: internal error (see the server log)"
            finally:
                state.finished = True
                begun.set()

        threading.Thread(target=work, name="faceseal-console-rotation", daemon=True).start()
        begun.wait()
        if refused:
            raise refused[0]
        with self._lock:
            self.current = state
        return state
