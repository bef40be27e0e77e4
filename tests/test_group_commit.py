"""Group commit: concurrent operations share one durable commit, and fail-closed still holds.

The batching itself is shown deterministically on a real SQLite store (three transactions queued
behind one another commit once; a member that fails rolls back alone). Then the attack: many
threads run enrolments, verifies, identifies and erasures through one open vault while the audit
table starts refusing inserts mid-burst, on SQLite and on PostgreSQL. Afterwards: no operation
that started after the break returned a result; every operation that returned has its ``ok``
event in the log; every template in the store was announced by an event and every erasure too;
and the chain verifies once the table is repaired.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from faceseal.bench.runner import lift_budgets
from faceseal.errors import FacesealError
from faceseal.storage.sqlite import SQLiteStore
from faceseal.vault import Vault

from .conftest import make_vault, random_encodings, vault_keys
from .pg_support import PgTestDatabase

THREADS = 8
OPERATIONS_PER_THREAD = 24
BREAK_AFTER = 60  # operations completed before the audit table starts refusing


def _wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        time.sleep(0.001)


def test_transactions_queued_behind_one_another_share_one_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    group = store._group
    before = group.commits
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with store.transaction():
            store.set_meta("first", "1")
            inside.set()
            release.wait()

    def later(name: str) -> None:
        with store.transaction():
            store.set_meta(name, "1")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    inside.wait()
    threads += [threading.Thread(target=later, args=(n,)) for n in ("second", "third")]
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: group._queued == 2)
    release.set()
    for thread in threads:
        thread.join()
    assert group.commits - before == 1
    assert [store.get_meta(n) for n in ("first", "second", "third")] == ["1", "1", "1"]
    store.close()


def test_a_failing_member_rolls_back_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with store.transaction():
            store.set_meta("kept-1", "1")
            inside.set()
            release.wait()

    def failing() -> None:
        try:
            with store.transaction():
                store.set_meta("dropped", "1")
                raise RuntimeError("this member fails")
        except RuntimeError as exc:
            errors.append(exc)

    def last() -> None:
        with store.transaction():
            store.set_meta("kept-2", "1")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    inside.wait()
    threads.append(threading.Thread(target=failing))
    threads[1].start()
    _wait_until(lambda: store._group._queued == 1)
    threads.append(threading.Thread(target=last))
    threads[2].start()
    _wait_until(lambda: store._group._queued == 2)
    release.set()
    for thread in threads:
        thread.join()
    assert len(errors) == 1
    assert store.get_meta("kept-1") == store.get_meta("kept-2") == "1"
    assert store.get_meta("dropped") is None
    store.close()


def test_reads_see_committed_data_only_and_a_thread_s_reader_goes_with_it(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    inside, release, seen = threading.Event(), threading.Event(), []

    def writer() -> None:
        with store.transaction():
            store.set_meta("pending", "1")
            inside.set()
            release.wait()

    def reader() -> None:
        seen.append(store.get_meta("pending"))

    write = threading.Thread(target=writer)
    write.start()
    inside.wait()
    for _ in range(3):  # pool threads come and go
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()
    release.set()
    write.join()
    gc.collect()
    assert seen == [None, None, None]  # never the open transaction's write
    assert len(store._readers) == 0  # each ended thread's connection was closed
    assert store.get_meta("pending") == "1"
    store.close()


# --- the attack: the audit table starts refusing writes mid-burst ------------------------------


@dataclass
class Outcome:
    kind: str
    request_id: str
    started: float
    ok: bool
    subject: str | None = None
    template_ids: tuple[str, ...] = ()


@dataclass
class Breaker:
    """Breaks the audit table underneath the vault, and repairs it."""

    refuse: Callable[[], None]
    repair: Callable[[], None]


def _sqlite_breaker(home: Path) -> Breaker:
    def run(statement: str) -> None:
        conn = sqlite3.connect(home / "templates.db", isolation_level=None, timeout=30)
        try:
            conn.execute(statement)
        finally:
            conn.close()

    return Breaker(
        lambda: run("CREATE TRIGGER break_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"),
        lambda: run("DROP TRIGGER break_audit"))


def _pg_breaker(pg: PgTestDatabase) -> Breaker:
    def run(*statements: str) -> None:
        with psycopg.connect(pg.admin_url(), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    schema = pg.schema
    return Breaker(
        lambda: run(f"CREATE FUNCTION {schema}.refuse_audit() RETURNS trigger LANGUAGE plpgsql "
                    "AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left'; END $$",
                    f"CREATE TRIGGER break_audit BEFORE INSERT ON {schema}.audit_events "
                    f"FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_audit()"),
        lambda: run(f"DROP TRIGGER break_audit ON {schema}.audit_events",
                    f"DROP FUNCTION {schema}.refuse_audit()"))


@pytest.fixture(params=["sqlite", "postgres"])
def attacked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Vault, Breaker]]:
    home, keys = tmp_path / "vault", tmp_path / "keys"
    if request.param == "sqlite":
        vault = make_vault(home, keys)
        breaker = _sqlite_breaker(home)
    else:
        pg: PgTestDatabase = request.getfixturevalue("pg_schema")
        login = pg.create_login("group_commit")
        vault = make_vault(home, keys, store_url=pg.store_url(login))
        breaker = _pg_breaker(pg)
    with vault:
        yield vault, breaker


def test_no_operation_succeeds_once_the_audit_log_refuses_writes_under_load(
        attacked: tuple[Vault, Breaker]) -> None:
    vault, breaker = attacked
    key = vault_keys(vault.home).worker
    gallery = random_encodings(40, seed=21)
    vault.enroll_many([f"base-{i}" for i in range(len(gallery))], gallery, tenant="load")
    probes = random_encodings(THREADS * OPERATIONS_PER_THREAD, seed=22)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    completed = [0]
    broken_at: list[float] = []
    start = threading.Barrier(THREADS + 1)

    def worker(number: int) -> None:
        mine: list[str] = []
        start.wait()
        for i in range(OPERATIONS_PER_THREAD):
            request_id = f"gc-{number}-{i}-{os.urandom(3).hex()}"
            view = vault.as_key(key, request_id=request_id)
            kind = ("enrol", "verify", "identify", "erase")[i % 4]
            subject = None
            if kind == "erase" and not mine:
                kind = "identify"
            began = time.monotonic()
            outcome = Outcome(kind, request_id, began, ok=False)
            try:
                if kind == "enrol":
                    subject = f"new-{number}-{i}"
                    result = view.enroll(subject, [probes[number * OPERATIONS_PER_THREAD + i]],
                                         tenant="load")
                    outcome.template_ids = tuple(result.template_ids)
                    mine.append(subject)
                elif kind == "verify":
                    subject = f"base-{i % len(gallery)}"
                    view.verify(subject, gallery[i % len(gallery)], tenant="load")
                elif kind == "identify":
                    view.identify(probes[i], tenant="load")
                else:
                    subject = mine.pop()
                    view.erase(subject, tenant="load")
                outcome.ok = True
            except FacesealError:
                pass
            outcome.subject = subject
            with lock:
                outcomes.append(outcome)
                completed[0] += 1
                if completed[0] == BREAK_AFTER:
                    breaker.refuse()
                    broken_at.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    breaker.repair()

    assert broken_at, "the audit table was never broken"
    after = [o for o in outcomes if o.started > broken_at[0]]
    assert len(after) > THREADS * OPERATIONS_PER_THREAD // 3  # the break was mid-burst
    assert not [o for o in after if o.ok], "an operation succeeded with the audit log refusing"
    assert any(o.ok for o in outcomes)

    auditor = vault.as_key(_auditor(vault))
    events = {(e["request_id"], e["outcome"]): e for e in auditor.audit_export()}
    for outcome in outcomes:
        if outcome.ok:  # what was reported done is recorded
            assert (outcome.request_id, "ok") in events, outcome
    # Nothing in the store without its event: every template of the tenant was announced by an
    # ok enrol event, every enrolled subject that is gone by an ok erase event.
    announced = {t for e in events.values() if e["action"] == "enroll" and e["outcome"] == "ok"
                 for t in e["template_ids"]}
    erased = {e["subject_id"] for e in events.values() if e["action"] == "erase"
              and e["outcome"] == "ok"}
    present: dict[str, list[str]] = {}
    for info in vault.subjects(tenant="load"):
        rows = vault._store.subject_templates("load", info.subject_id)
        present[info.subject_id] = [r.template_id for r in rows]
    assert {t for ts in present.values() for t in ts} <= announced
    for outcome in outcomes:
        if outcome.kind == "enrol" and not outcome.ok and outcome.subject is not None:
            assert outcome.subject not in present, "a failed enrolment left templates"
        if outcome.kind == "erase" and outcome.subject is not None:
            assert (outcome.subject in erased) == (outcome.subject not in present)
    report = auditor.audit_verify()
    assert report.ok, report.problem


def _auditor(vault: Vault) -> str:
    admin = vault.as_key(vault_keys(vault.home).admin)
    return admin.add_principal(f"auditor-{os.urandom(3).hex()}", ["auditor"],
                               all_tenants=True).api_key


def test_two_replicas_batches_on_postgresql_never_deadlock(tmp_path: Path,
                                                           pg_schema: PgTestDatabase) -> None:
    """Two open vaults (two connections, as two server workers) batch verifies of one principal
    and one subject at once: each batch charges the same budget counters and appends to the same
    chain. A batch that took them in its members' order could hold what the other batch waits
    for; every batch takes the audit head first, so all of them succeed."""
    home = tmp_path / "vault"
    login = pg_schema.create_login("replicas")
    make_vault(home, tmp_path / "keys", store_url=pg_schema.store_url(login)).close()
    with Vault.open(home, api_key=vault_keys(home).admin) as admin:
        lift_budgets(admin)
    encodings = random_encodings(4, seed=51)
    replicas = [Vault.open(home) for _ in range(2)]
    key = vault_keys(home).worker
    replicas[0].as_key(key).enroll_many([f"s{i}" for i in range(4)], encodings)
    errors: list[BaseException] = []
    start = threading.Barrier(2 * THREADS)

    def worker(replica: Vault, number: int) -> None:
        view = replica.as_key(key)
        start.wait()
        for i in range(12):
            try:
                view.verify(f"s{(number + i) % 4}", encodings[(number + i) % 4])
            except FacesealError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(replicas[n % 2], n))
               for n in range(2 * THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for replica in replicas:
        replica.close()
    assert not errors, errors[:3]
