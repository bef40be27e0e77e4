"""Fail-closed: when the audit event cannot be written, the operation fails and changes nothing.

The audit table is broken underneath an open vault, the way a full disk or a damaged table would
break it, while the rest of the store keeps working. Then 100 mixed operations (writes, reads,
matches, erasures, principal and retention changes, a real purge) must all fail with
``AuditWriteFailed``, return nothing, and leave the store, the key material, the in-memory
galleries and the audit chain exactly as they were.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faceseal.errors import AuditWriteFailed, FacesealError
from faceseal.keys.subject_keys import SUBJECT_KEYS_FILE
from faceseal.vault import Vault

from .conftest import EncodingOf, make_vault, random_encodings

BREAKS = {
    # A trigger refusing every insert, as a full disk or a failing device would.
    "inserts refused": (
        "CREATE TRIGGER break_audit BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        "DROP TRIGGER break_audit",
    ),
    # The table gone from under the vault.
    "table missing": (
        "ALTER TABLE audit_events RENAME TO audit_events_elsewhere",
        "ALTER TABLE audit_events_elsewhere RENAME TO audit_events",
    ),
}


def _execute(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def _store_state(home: Path, keys: Path) -> dict[str, object]:
    """Everything that must not change, read from the files themselves."""
    with sqlite3.connect(f"file:{home / 'templates.db'}?mode=ro", uri=True) as conn:
        state: dict[str, object] = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("subjects", "templates", "principals", "tenants", "audit_events")
        }
        # Encryption counters are reserved before sealing, on purpose (a crash may waste counts,
        # never reuse them); the keys themselves must not change.
        state["data_keys"] = conn.execute(
            "SELECT version, wrapped, created_at FROM data_keys ORDER BY 1").fetchall()
    with sqlite3.connect(f"file:{keys / SUBJECT_KEYS_FILE}?mode=ro", uri=True) as conn:
        state["subject_secrets"] = conn.execute(
            "SELECT tenant, subject_id, secret FROM subject_secrets ORDER BY 1, 2").fetchall()
    return state


@pytest.fixture
def setting(tmp_path: Path, encoding_of: EncodingOf) -> Iterator[tuple[Vault, Path, Path]]:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    with make_vault(home, keys) as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
        for i, encoding in enumerate(random_encodings(20, seed=3)):
            vault.enroll(f"person-{i}", [encoding], tenant="default" if i % 2 else "other")
        vault.add_principal("temp", ["verifier"])
        vault.set_retention("other", 86400.0)
        vault.identify(encoding_of("obama-2.jpg"))  # the default tenant's gallery in memory
        yield vault, home, keys


def _operations(vault: Vault, encoding_of: EncodingOf) -> list[Callable[[], object]]:
    probe, other = encoding_of("obama-2.jpg"), encoding_of("biden-2.jpg")
    fresh = iter(random_encodings(100, seed=11))
    names = (f"new-{i}" for i in itertools.count())
    return [
        lambda: vault.enroll(next(names), [next(fresh)]),
        lambda: vault.enroll("obama", [next(fresh)]),
        lambda: vault.verify("obama", probe),
        lambda: vault.verify("biden", probe),
        lambda: vault.identify(other, top_k=3),
        lambda: vault.erase("person-1"),
        lambda: vault.erase("obama"),
        lambda: vault.purge(0.0),  # would erase every subject of every tenant
        lambda: vault.add_principal(next(names), ["enroller"]),
        lambda: vault.revoke_principal("temp"),
        lambda: vault.set_retention("default", 3600.0),
        lambda: vault.subjects(tenant="other"),
        lambda: vault.audit_tail(5),
        lambda: list(vault.audit_export()),
        vault.check,
        vault.tenants,
    ]


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_100_operations_with_the_audit_log_unwritable_succeed_0_times_and_change_nothing(
    setting: tuple[Vault, Path, Path], encoding_of: EncodingOf, how: str
) -> None:
    vault, home, keys = setting
    before = _store_state(home, keys)
    ranking = [(c.subject_id, c.distance) for c in vault.identify(encoding_of("obama-3.jpg"),
                                                                  top_k=5).candidates]
    before = _store_state(home, keys)  # (identify above wrote its own event)
    operations = _operations(vault, encoding_of)
    break_sql, repair_sql = BREAKS[how]
    _execute(home / "templates.db", break_sql)

    results, errors = [], []
    for operation in itertools.islice(itertools.cycle(operations), 100):
        try:
            results.append(operation())
        except FacesealError as error:
            errors.append(error)
    assert results == []
    assert len(errors) == 100
    assert {type(e) for e in errors} == {AuditWriteFailed}

    _execute(home / "templates.db", repair_sql)
    after = _store_state(home, keys)
    for part, value in before.items():
        if part == "subject_secrets":
            # Every subject keeps its key material. A failed first enrolment may leave a secret
            # for a subject that was never stored: it seals nothing, and `check` reports it.
            assert set(before[part]) <= set(after[part])  # type: ignore[arg-type]
            stored = {(r[0], r[1]) for r in after["subjects"]}  # type: ignore[attr-defined]
            extra = set(after[part]) - set(before[part])  # type: ignore[arg-type]
            assert all((t, s) not in stored for t, s, _ in extra)
        else:
            assert after[part] == value, f"{part} changed while the audit log was unwritable"
    # The in-memory gallery did not move either, and the chain has no hole.
    assert [(c.subject_id, c.distance) for c in vault.identify(
        encoding_of("obama-3.jpg"), top_k=5).candidates] == ranking
    assert vault.verify("obama", encoding_of("obama-2.jpg")).match
    assert vault.audit_verify().ok


def test_a_refused_key_is_still_refused_when_the_refusal_cannot_be_recorded(
    setting: tuple[Vault, Path, Path],
) -> None:
    vault, home, _ = setting
    _execute(home / "templates.db", BREAKS["inserts refused"][0])
    with pytest.raises(AuditWriteFailed):
        vault.as_key("fsk_0123456789abcdef_" + "A" * 43)
