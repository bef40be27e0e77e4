"""Tampering with the audit log, as an attacker with write access to the database file would:
drop the append-only triggers, change the rows, put the triggers back. Each attack must be found
by ``faceseal audit verify``: exit status 5 and the first broken event named.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from faceseal.audit import AUDIT_STATE_FILE
from faceseal.errors import AccessDenied

from .conftest import EncodingOf, invoke_cli, make_vault, random_encodings, vault_keys

COLUMNS = ("event_id", "occurred_at", "principal", "role", "action", "tenant", "subject_id",
           "template_ids", "outcome", "request_id", "detail", "prev_mac", "mac")


@dataclass
class LoggedVault:
    home: Path
    keys: Path
    env: dict[str, str]
    head: int  # seq of the newest event
    denied_seq: int  # seq of the one "denied" event

    @property
    def db(self) -> Path:
        return self.home / "templates.db"

    def verify(self) -> tuple[int, str]:
        done = invoke_cli("audit", "verify", env=self.env)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def logged(tmp_path: Path, encoding_of: EncodingOf) -> LoggedVault:
    """A closed vault whose log holds a dozen events of every kind, one of them a denial."""
    home, keys = tmp_path / "vault", tmp_path / "keys"
    encodings = random_encodings(3, seed=7)
    with make_vault(home, keys) as vault:
        for i, encoding in enumerate(encodings):
            vault.enroll(f"subject-{i}", [encoding])
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        vault.verify("obama", encoding_of("obama-2.jpg"))
        vault.identify(encoding_of("obama-3.jpg"))
        admin = vault.as_key(vault_keys(home).admin)
        with pytest.raises(AccessDenied):
            admin.identify(encodings[0])
        vault.erase("subject-1")
        vault.subjects()
    with sqlite3.connect(home / "templates.db") as conn:
        (head,) = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()
        denied = conn.execute("SELECT seq FROM audit_events WHERE outcome = 'denied'").fetchall()
    env = {"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": vault_keys(home).worker}
    assert head >= 11
    assert len(denied) == 1
    return LoggedVault(home, keys, env, head, denied[0][0])


def attack(db: Path, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Run SQL on the log with the append-only triggers out of the way, then restore them."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='audit_events'"
        ).fetchall()
        assert len(triggers) == 2, "the append-only triggers are expected to be in place"
        conn.execute("BEGIN")
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            conn.execute(sql, params)
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def row(db: Path, seq: int) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        values = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE seq = ?",
                              (seq,)).fetchone()
    return dict(zip(COLUMNS, values, strict=True))


def insert(seq: int, values: dict[str, object]) -> tuple[str, tuple[object, ...]]:
    return (f"INSERT INTO audit_events (seq, {', '.join(COLUMNS)}) "
            f"VALUES (?, {', '.join('?' * len(COLUMNS))})",
            (seq, *(values[c] for c in COLUMNS)))


def edit_field(v: LoggedVault) -> int:
    attack(v.db, "UPDATE audit_events SET subject_id = 'mallory' WHERE seq = 5")
    return 5


def turn_denial_into_success(v: LoggedVault) -> int:
    attack(v.db, ("UPDATE audit_events SET outcome = 'ok' WHERE seq = ?", (v.denied_seq,)))
    return v.denied_seq


def delete_one(v: LoggedVault) -> int:
    attack(v.db, "DELETE FROM audit_events WHERE seq = 5")
    return 5


def delete_and_renumber(v: LoggedVault) -> int:
    # Close the gap so that the sequence looks whole.
    attack(v.db, "DELETE FROM audit_events WHERE seq = 5",
           "UPDATE audit_events SET seq = seq + 1000000 WHERE seq > 5",
           "UPDATE audit_events SET seq = seq - 1000001 WHERE seq > 1000000")
    return 5


def swap_two(v: LoggedVault) -> int:
    first, second = row(v.db, 4), row(v.db, 7)
    sets = ", ".join(f"{c} = ?" for c in COLUMNS)
    attack(v.db, ("UPDATE audit_events SET event_id = 'swapping' WHERE seq = 4"),
           (f"UPDATE audit_events SET {sets} WHERE seq = 7",
            tuple(first[c] for c in COLUMNS)),
           (f"UPDATE audit_events SET {sets} WHERE seq = 4",
            tuple(second[c] for c in COLUMNS)))
    return 4


def swap_order_keeping_content(v: LoggedVault) -> int:
    # Renumber two events into each other's place, each keeping its own content and MAC.
    attack(v.db, "UPDATE audit_events SET seq = 1000004 WHERE seq = 4",
           "UPDATE audit_events SET seq = 4 WHERE seq = 7",
           "UPDATE audit_events SET seq = 7 WHERE seq = 1000004")
    return 4


def cut_off_newest(v: LoggedVault) -> int:
    attack(v.db, ("DELETE FROM audit_events WHERE seq > ?", (v.head - 3,)))
    return v.head - 2


def forged_append(v: LoggedVault) -> int:
    last = row(v.db, v.head)
    forged = {**last, "event_id": "f" * 32, "action": "verify", "outcome": "ok",
              "prev_mac": last["mac"], "mac": os.urandom(36)}
    attack(v.db, insert(v.head + 1, forged))
    return v.head + 1


def forged_insert_in_the_middle(v: LoggedVault) -> int:
    before, after = row(v.db, 4), row(v.db, 5)
    forged = {**after, "event_id": "e" * 32, "prev_mac": before["mac"], "mac": os.urandom(36)}
    attack(v.db, "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 5",
           "UPDATE audit_events SET seq = seq - 999999 WHERE seq > 1000000",
           insert(5, forged))
    return 5


def replay_an_old_event(v: LoggedVault) -> int:
    # A genuine event with its genuine MAC, copied to the end of the log.
    attack(v.db, insert(v.head + 1, {**row(v.db, 3), "event_id": "d" * 32}))
    return v.head + 1


def truncate_everything(v: LoggedVault) -> int:
    attack(v.db, "DELETE FROM audit_events")
    return 1


ATTACKS: list[Callable[[LoggedVault], int]] = [
    edit_field, turn_denial_into_success, delete_one, delete_and_renumber, swap_two,
    swap_order_keeping_content, cut_off_newest, forged_append, forged_insert_in_the_middle,
    replay_an_old_event, truncate_everything,
]


def test_an_untouched_log_verifies(logged: LoggedVault) -> None:
    status, output = logged.verify()
    assert status == 0, output
    assert f"{logged.head} event(s) chained and MACed" in output


@pytest.mark.parametrize("attack_on", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_tampering_is_found_and_the_event_named(logged: LoggedVault,
                                                 attack_on: Callable[[LoggedVault], int]) -> None:
    broken = attack_on(logged)
    status, output = logged.verify()
    assert status == 5, output
    assert f"Audit log BROKEN at event {broken}:" in output, output


def test_a_forged_checkpoint_is_found(logged: LoggedVault) -> None:
    with sqlite3.connect(logged.keys / AUDIT_STATE_FILE) as conn:
        conn.execute("UPDATE checkpoints SET seq = seq + 5")
    status, output = logged.verify()
    assert status == 5, output
    assert "checkpoint" in output
    assert "fails its MAC" in output


def test_removing_the_checkpoints_is_found(logged: LoggedVault) -> None:
    with sqlite3.connect(logged.keys / AUDIT_STATE_FILE) as conn:
        conn.execute("DELETE FROM checkpoints")
    status, output = logged.verify()
    assert status == 5, output
    assert "no checkpoint" in output


def test_the_report_names_the_event_in_json_too(logged: LoggedVault) -> None:
    delete_one(logged)
    done = invoke_cli("audit", "verify", "--json", env=logged.env)
    assert done.returncode == 5
    assert '"first_broken_seq": 5' in done.stdout
    assert '"ok": false' in done.stdout
