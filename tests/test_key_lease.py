"""Key operations run one at a time across processes (issue #16): the vault takes a lease in the
store after authorising, so the CLI, the Python API and HTTP refuse a second one alike; a holder
that died does not wedge the vault; someone without the admin role learns nothing of it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from faceseal.errors import AccessDenied, Conflict
from faceseal.vault import Vault
from faceseal.vault.key_lease import KEY_OPERATION_LEASE, _process_space, key_operation

from .conftest import CliVault, random_encodings, reopen_vault, vault_keys


def other_process_holds_the_lease(vault: Vault, *, expires_in: float) -> None:
    """Write the lease as another process would have left it (running, or killed -9)."""
    now = time.time()
    holder: dict[str, str | int | float] = {"token": "f" * 32, "action": "keys.rotate",
                                            "pid": 4242, "host": "replica-2", "since": now - 5}
    assert vault._store.lease_take(KEY_OPERATION_LEASE, holder, expires_in, now) is None


def audit_actions(vault: Vault) -> list[tuple[str, str, object]]:
    return [(e.action, e.outcome, json.loads(e.detail).get("error"))
            for e in vault._store.audit_events()][-3:]


def test_every_key_operation_is_refused_while_another_holds_the_lease(vault: Vault) -> None:
    vault.enroll_many([f"s{i}" for i in range(4)], random_encodings(4))
    other_process_holds_the_lease(vault, expires_in=60)
    for name, call in [("rotate_kek", vault.rotate_kek),
                       ("rewrap_data_keys", vault.rewrap_data_keys),
                       ("rotate_data_keys", vault.rotate_data_keys),
                       ("retire_data_keys", lambda: vault.retire_data_keys(1))]:
        with pytest.raises(Conflict) as refused:
            call()
        message = str(refused.value)
        assert "another key operation is running (keys.rotate, process 4242 on replica-2" in \
            message, name
        assert "lapses within 60 s" in message or "lapses within 59 s" in message
        # The refusal is audited as a failed key operation, after the authorisation.
        assert audit_actions(vault)[-1][1:] == ("failed", "conflict")
    assert vault.key_status().active_data_key == 1  # nothing was done
    assert vault.key_status().kek_versions == [1]


def test_a_holder_killed_outright_does_not_wedge_the_vault(vault: Vault) -> None:
    other_process_holds_the_lease(vault, expires_in=-1)  # its last renewal has lapsed
    assert vault.rotate_kek().kek_version == 2
    # Released when done, also after a failure: the next operation runs.
    with pytest.raises(Conflict):
        vault.retire_data_keys(2)  # v2 does not exist yet: refused
    assert vault.rotate_data_keys().target_version == 2


def test_a_holder_on_this_machine_whose_process_is_gone_is_replaced_at_once(
        vault: Vault) -> None:
    """`kill -9` of a rotation, then `keys rotate --data` again on the same machine: resumed
    at once, not after the lease's expiry."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time()
    holder: dict[str, str | int | float] = {"token": "d" * 32, "action": "keys.rotate",
                                            "pid": gone.pid, "processes": _process_space(),
                                            "host": "here", "since": now}
    assert vault._store.lease_take(KEY_OPERATION_LEASE, holder, 60, now) is None
    assert vault.rotate_kek().kek_version == 2
    # The same pid in another machine's (or container's) process space: not judged dead.
    holder = {**holder, "token": "e" * 32, "processes": "another-boot:1"}
    assert vault._store.lease_take(KEY_OPERATION_LEASE, holder, 60, time.time()) is None
    with pytest.raises(Conflict, match="process"):
        vault.rotate_kek()


def test_no_admin_learns_nothing_about_a_running_key_operation(vault: Vault) -> None:
    admin = vault.as_key(vault_keys(vault.home).admin)
    verifier = vault.as_key(admin.add_principal("lonely-verifier", ["verifier"]).api_key)
    tenant_admin = vault.as_key(admin.add_principal("tenant-admin", ["admin"],
                                                    tenant="acme").api_key)
    other_process_holds_the_lease(vault, expires_in=60)
    for view in (verifier, tenant_admin):
        with pytest.raises(AccessDenied):  # the vault's own refusal, not "running"
            view.rotate_kek()
    with pytest.raises(Conflict):
        admin.rotate_kek()


def test_the_lease_is_held_while_the_work_runs_and_released_after(vault: Vault) -> None:
    with key_operation(vault._store, "keys.rotate"), pytest.raises(
            Conflict, match=f"process {os.getpid()}"):
        vault.rotate_kek()  # a second one in the same process is refused too
    assert vault.rotate_kek().kek_version == 2


@pytest.mark.slow
def test_two_cli_rotations_at_once_one_runs_the_other_is_refused(cli_vault: CliVault) -> None:
    """Two `faceseal keys rotate --data` processes: the first holds the lease while it
    re-encrypts; the second is refused with a clear message and exit status 2; the first
    finishes. The first draws its progress bar on a terminal the test stops reading, so it is
    held mid-rotation (its writes block) for as long as the test needs: no timing."""
    records = 600
    with reopen_vault(cli_vault.home) as vault:
        vault.enroll_many([f"s{i}" for i in range(records)], random_encodings(records))
    terminal, their_side = pty.openpty()
    # A terminal 100 columns wide (a new one has none, and the bar would draw nothing).
    fcntl.ioctl(their_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    first = subprocess.Popen(
        [sys.executable, "-m", "faceseal", "keys", "rotate", "--data", "--batch-size", "1"],
        env={**os.environ, **cli_vault.env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=their_side)
    os.close(their_side)
    try:
        seen = b""
        while not re.search(rb"re-encrypting:\s+\d+%.*\d+/600", seen):  # it holds the lease
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the process closed the terminal (it ended)
                chunk = b""
            assert chunk, ("the first rotation ended before it drew its progress: "
                           f"{seen!r} {first.communicate()}")
            seen += chunk
        second = cli_vault.run("keys", "rotate", "--data")
        assert second.returncode == 2, second.stderr
        assert (f"another key operation is running (keys.rotate, process {first.pid} on "
                in second.stderr), second.stderr
        assert "try again when it has finished" in second.stderr
        print(second.stderr)  # shown with -s: the message an operator sees
        while True:  # let the first one go on to the end
            try:
                if not os.read(terminal, 65536):
                    break
            except OSError:  # the terminal closes with the process (EIO)
                break
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
        os.close(terminal)
    assert first.returncode == 0
    assert f"{records:,} record(s) re-encrypted, 0 still under older versions" in \
        output.decode()
    status = json.loads(cli_vault.run("keys", "status", "--json").stdout)
    assert status["active_data_key"] == 2
    assert status["rotation_in_progress"] is None
