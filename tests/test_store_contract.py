"""The template store contract, run unchanged on SQLite, PostgreSQL and the file store.

Every test takes the parametrised ``backend`` fixture; PostgreSQL runs as a plain login granted
every tenant (through the SECURITY DEFINER functions), in a database of its own.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from faceseal.errors import AuditWriteFailed, Conflict, StorageUnavailable
from faceseal.storage.base import (
    FROM_START,
    AuditRecord,
    PrincipalRow,
    TemplateBatch,
    TemplateRow,
    TemplateStore,
)
from faceseal.storage.files import FileStore
from faceseal.storage.postgres import PostgresStore
from faceseal.storage.sqlite import SQLiteStore

from .pg_support import PgTestDatabase

BACKENDS = ["sqlite", "postgres", "files"]


@dataclass
class Backend:
    name: str
    open: Callable[[], TemplateStore]  # a new handle on the same, migrated store
    fresh: Callable[[], TemplateStore]  # an empty store that can migrate itself


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "templates.db"
        SQLiteStore(path, create=True).migrate()
        return Backend("sqlite", lambda: SQLiteStore(path),
                       lambda: SQLiteStore(tmp_path / "fresh.db", create=True))
    if request.param == "files":
        root = tmp_path / "store"
        FileStore(root, create=True).migrate()
        return Backend("files", lambda: FileStore(root),
                       lambda: FileStore(tmp_path / "fresh", create=True))
    db: PgTestDatabase = request.getfixturevalue("pg_schema")
    url = db.store_url(db.create_login("app"))
    fresh_url = db.superuser_store_url().replace("schema=faceseal", "schema=fresh").replace(
        f"roles={db.prefix}", f"roles={db.prefix}_f")
    return Backend("postgres", lambda: PostgresStore(url), lambda: PostgresStore(fresh_url))


@pytest.fixture
def store(backend: Backend) -> Iterator[TemplateStore]:
    opened = backend.open()
    try:
        # Every backend starts with the same two data keys, so templates may name versions 1, 2.
        assert opened.insert_data_key(1, b"wrapped-1", 1.0)
        assert opened.insert_data_key(2, b"wrapped-2", 2.0)
        yield opened
    finally:
        opened.close()


def row(tenant: str = "t1", subject: str = "alice", *, key_version: int = 1,
        created_at: float = 100.0, model: str = "dlib-resnet-v1") -> TemplateRow:
    return TemplateRow(os.urandom(16).hex(), tenant, subject, model, 128, "float64",
                       key_version, os.urandom(36 + 1024), created_at)


def event(seq: int, prev: bytes, tenant: str | None = "t1", *,
          occurred_at: float | None = None) -> AuditRecord:
    return AuditRecord(seq, os.urandom(8).hex(), time.time() if occurred_at is None
                       else occurred_at, "admin", "admin", "enroll", tenant, "alice",
                       ("a", "b"), "ok", os.urandom(4).hex(), "", prev, os.urandom(32))


def all_rows(store: TemplateStore, tenant: str | None = None) -> list[TemplateRow]:
    return [r for batch in store.gallery(tenant) for r in batch]


# --- schema ----------------------------------------------------------------------------------


def test_fresh_store_migrates_to_latest_once(backend: Backend) -> None:
    with backend.fresh() as fresh:
        assert fresh.schema_version() == 0
        assert fresh.migrate() == (0, fresh.SCHEMA_VERSION)
        assert fresh.migrate() == (fresh.SCHEMA_VERSION, fresh.SCHEMA_VERSION)
        assert fresh.schema_version() == fresh.SCHEMA_VERSION


def test_migrated_store_reports_latest_version(store: TemplateStore) -> None:
    assert store.schema_version() == store.SCHEMA_VERSION
    assert store.migrate() == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)


# --- metadata ----------------------------------------------------------------------------------


def test_meta_round_trips_and_overwrites(store: TemplateStore) -> None:
    assert store.get_meta("vault_id") is None
    store.set_meta("vault_id", "abc")
    store.set_meta("vault_id", "def")
    store.set_meta("other", "ünïcode ✓")
    assert store.get_meta("vault_id") == "def"
    assert store.get_meta("other") == "ünïcode ✓"


# --- templates and subjects --------------------------------------------------------------------


def test_templates_round_trip_exactly(store: TemplateStore) -> None:
    rows = [row(created_at=200.0), row(created_at=100.0), row(subject="bob")]
    store.add_templates(rows)
    got = store.subject_templates("t1", "alice")
    assert got == sorted(rows[:2], key=lambda r: (r.created_at, r.template_id))
    assert store.subject_templates("t1", "nobody") == []
    assert store.subject_templates("t2", "alice") == []


def test_several_subjects_read_at_once(store: TemplateStore) -> None:
    """What identify's exact re-rank reads: the same rows as one read per subject."""
    rows = [row(created_at=200.0), row(created_at=100.0), row(subject="bob"),
            row(subject="carol"), row(subject="bob", tenant="t2")]
    store.add_templates(rows)
    got = store.subjects_templates("t1", ["bob", "alice", "nobody", "bob"])
    expected = store.subject_templates("t1", "bob") + store.subject_templates("t1", "alice")
    assert sorted(got, key=lambda r: r.template_id) == sorted(expected,
                                                               key=lambda r: r.template_id)
    assert store.subjects_templates("t1", []) == []


def test_add_nothing_changes_nothing(store: TemplateStore) -> None:
    store.add_templates([])
    assert store.tenants() == []


@pytest.mark.parametrize("bad", ["same id twice in the batch", "id already stored",
                                 "unknown key version"])
def test_bad_batch_is_refused_whole(store: TemplateStore, bad: str) -> None:
    stored = row()
    store.add_templates([stored])
    fine = row(subject="carol")
    if bad == "same id twice in the batch":
        batch = [fine, replace(row(subject="dave"), template_id=fine.template_id)]
    elif bad == "id already stored":
        batch = [fine, replace(row(), template_id=stored.template_id)]
    else:
        batch = [fine, row(subject="dave", key_version=99)]
    with pytest.raises(Conflict):
        store.add_templates(batch)
    assert not store.subject_exists("t1", "carol")
    assert not store.subject_exists("t1", "dave")
    assert store.key_version_counts() == {1: 1}
    assert all_rows(store) == [stored]


def test_large_batch_round_trips(store: TemplateStore) -> None:
    # Big enough to take PostgreSQL's COPY path.
    rows = [row(subject=f"s{i % 50}", created_at=float(i)) for i in range(700)]
    store.add_templates(rows)
    assert sorted(all_rows(store, "t1"), key=lambda r: r.template_id) == sorted(
        rows, key=lambda r: r.template_id)
    assert sum(s.templates for s in store.subjects("t1")) == 700


def test_gallery_streams_batches_of_one_tenant_or_all(store: TemplateStore) -> None:
    t1 = [row(subject=f"s{i}") for i in range(25)]
    t2 = [row("t2", f"s{i}") for i in range(7)]
    store.add_templates(t1 + t2)
    batches = list(store.gallery("t1", batch_size=10))
    assert all(0 < len(b) <= 10 for b in batches)
    assert sorted(r.template_id for b in batches for r in b) == sorted(r.template_id for r in t1)
    assert sorted(r.template_id for r in all_rows(store)) == sorted(
        r.template_id for r in t1 + t2)
    assert list(store.gallery("empty")) == []


def test_subjects_are_listed_with_counts_in_order(store: TemplateStore) -> None:
    store.add_templates([row(subject="bob"), row(subject="alice"), row(subject="bob"),
                         row("t2", "zed")])
    listed = store.subjects("t1")
    assert [(s.subject_id, s.templates, s.tenant) for s in listed] == [
        ("alice", 1, "t1"), ("bob", 2, "t1")]
    assert all(s.created_at <= s.last_seen_at for s in listed)
    assert store.subject_exists("t1", "bob")
    assert not store.subject_exists("t2", "bob")
    assert store.subjects("nobody") == []


def test_touch_subject_only_moves_last_seen_forward(store: TemplateStore) -> None:
    store.add_templates([row()])
    start = store.subjects("t1")[0].last_seen_at
    store.touch_subject("t1", "alice", start + 100)
    store.touch_subject("t1", "alice", start + 50)
    store.touch_subject("t1", "ghost", start + 50)  # unknown subject: nothing happens
    assert store.subjects("t1")[0].last_seen_at == start + 100
    assert not store.subject_exists("t1", "ghost")


def test_erase_subject_removes_exactly_its_rows(store: TemplateStore) -> None:
    mine = [row(), row()]
    others = [row(subject="bob"), row("t2", "alice")]
    store.add_templates(mine + others)
    assert sorted(store.erase_subject("t1", "alice")) == sorted(r.template_id for r in mine)
    assert not store.subject_exists("t1", "alice")
    assert store.subject_templates("t1", "alice") == []
    assert sorted(r.template_id for r in all_rows(store)) == sorted(
        r.template_id for r in others)
    assert store.erase_subject("t1", "alice") == []
    assert store.key_version_counts() == {1: 2}


def test_replace_records_moves_key_versions(store: TemplateStore) -> None:
    rows = [row(), row(), row(subject="bob")]
    store.add_templates(rows)
    assert store.key_version_counts() == {1: 3}
    new = [replace(rows[0], record=b"\x01" * 1060, key_version=2),
           replace(rows[2], record=b"\x02" * 1060, key_version=2)]
    assert store.replace_records(new) == 2
    assert store.key_version_counts() == {1: 1, 2: 2}
    got = {r.template_id: r for r in all_rows(store)}
    assert got[rows[0].template_id].record == b"\x01" * 1060
    assert got[rows[0].template_id].key_version == 2
    assert got[rows[1].template_id] == rows[1]
    ghost = replace(row(), key_version=2)
    assert store.replace_records([ghost]) == 0


# --- data keys -----------------------------------------------------------------------------------


def test_data_keys_insert_once_and_load_in_order(store: TemplateStore) -> None:
    assert not store.insert_data_key(2, b"other", 3.0)
    assert store.insert_data_key(3, b"wrapped-3", 3.0)
    keys = store.load_data_keys()
    assert [(k.version, k.wrapped, k.encryptions) for k in keys] == [
        (1, b"wrapped-1", 0), (2, b"wrapped-2", 0), (3, b"wrapped-3", 0)]


def test_reserve_encryptions_respects_the_limit(store: TemplateStore) -> None:
    assert store.reserve_encryptions(2, 6, 10)
    assert store.reserve_encryptions(2, 4, 10)
    assert not store.reserve_encryptions(2, 1, 10)  # would pass the limit
    # Not the newest row: allowed, the vault decides which version is active (a planted newer
    # row must not block every enrolment).
    assert store.reserve_encryptions(1, 1, 10)
    assert not store.reserve_encryptions(7, 1, 10)  # no such version
    counts = {k.version: k.encryptions for k in store.load_data_keys()}
    assert counts == {1: 1, 2: 10}


def test_replace_wrapped_changes_only_that_version(store: TemplateStore) -> None:
    store.replace_wrapped(1, b"rewrapped")
    assert [k.wrapped for k in store.load_data_keys()] == [b"rewrapped", b"wrapped-2"]


# --- transactions ------------------------------------------------------------------------------


def test_transaction_rolls_back_every_kind_of_write(store: TemplateStore) -> None:
    kept = row()
    store.add_templates([kept])

    def writes_then_fails() -> None:
        with store.transaction():
            store.set_meta("vault_id", "x")
            store.add_templates([row(subject="bob")])
            store.erase_subject("t1", "alice")
            store.append_audit(event)
            store.set_retention("t1", 60.0)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        writes_then_fails()
    assert store.get_meta("vault_id") is None
    assert all_rows(store) == [kept]
    assert list(store.audit_events()) == []
    assert store.retention("t1") is None


def test_nested_transaction_joins_the_outer_one(store: TemplateStore) -> None:
    seen_inside: list[bool] = []

    def nested_then_fails() -> None:
        with store.transaction():
            with store.transaction():
                store.add_templates([row()])
                store.set_meta("k", "v")
            seen_inside.append(store.subject_exists("t1", "alice"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        nested_then_fails()
    assert seen_inside == [True]
    assert not store.subject_exists("t1", "alice")
    assert store.get_meta("k") is None
    with store.transaction(), store.transaction():
        store.set_meta("k", "v")
    assert store.get_meta("k") == "v"


# --- audit log -----------------------------------------------------------------------------------


def test_audit_events_chain_and_filter(store: TemplateStore) -> None:
    appended = []
    for i, tenant in enumerate(["t1", "t2", None, "t1"]):
        appended.append(store.append_audit(
            lambda seq, mac, tenant=tenant, i=i: event(seq, mac, tenant, occurred_at=1000.0 + i)))
    assert [e.seq for e in appended] == [1, 2, 3, 4]
    assert appended[0].prev_mac == b""
    assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(appended))
    assert list(store.audit_events()) == appended
    assert [e.seq for e in store.audit_events(after_seq=2)] == [3, 4]
    assert [e.seq for e in store.audit_events(tenant="t1")] == [1, 4]
    assert [e.seq for e in store.audit_events(since=1002.0)] == [3, 4]
    assert [e.seq for e in store.audit_events(limit=3)] == [1, 2, 3]
    assert appended[0].template_ids == ("a", "b")


def test_audit_build_failure_writes_nothing(store: TemplateStore) -> None:
    store.append_audit(event)

    def broken(seq: int, mac: bytes) -> AuditRecord:
        raise ValueError("cannot build")

    with pytest.raises(ValueError, match="cannot build"):
        store.append_audit(broken)
    assert [e.seq for e in store.audit_events()] == [1]
    assert store.append_audit(event).seq == 2


def test_audit_refuses_an_event_that_breaks_the_chain(store: TemplateStore) -> None:
    store.append_audit(event)
    with pytest.raises(AuditWriteFailed):
        store.append_audit(lambda seq, mac: event(seq + 5, mac))
    with pytest.raises(AuditWriteFailed):
        store.append_audit(lambda seq, mac: event(seq, b"forged"))
    assert [e.seq for e in store.audit_events()] == [1]


def test_concurrent_appends_from_two_handles_stay_one_chain(store: TemplateStore,
                                                            backend: Backend) -> None:
    other = backend.open()
    errors: list[BaseException] = []

    def append(handle: TemplateStore) -> None:
        try:
            for _ in range(15):
                handle.append_audit(event)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(h,)) for h in (store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    events = list(store.audit_events())
    assert [e.seq for e in events] == list(range(1, 31))
    assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(events))


# --- principals ------------------------------------------------------------------------------


def principal(name: str, tenant: str | None = "t1") -> PrincipalRow:
    return PrincipalRow(os.urandom(8).hex(), name, "enroller", tenant, os.urandom(6).hex(),
                        os.urandom(32), 10.0, None, os.urandom(36))


def test_principals_add_find_list_revoke(store: TemplateStore) -> None:
    bob, alice = principal("bob"), principal("alice", None)
    store.add_principal(bob)
    store.add_principal(alice)
    with pytest.raises(Conflict):
        store.add_principal(principal("bob"))
    assert store.principal_by_key_id(bob.key_id) == bob
    assert store.principal_by_key_id("nope") is None
    assert [p.name for p in store.principals()] == ["alice", "bob"]
    assert store.revoke_principal("bob", 20.0, b"new-mac")
    assert not store.revoke_principal("bob", 30.0, b"other")
    assert not store.revoke_principal("nobody", 30.0)
    assert store.principal_by_key_id(bob.key_id) == replace(bob, revoked_at=20.0, mac=b"new-mac")


def test_principal_macs_are_kept_and_replaced(store: TemplateStore) -> None:
    carol = replace(principal("carol", None), mac=b"")
    store.add_principal(carol)
    assert store.principal_by_key_id(carol.key_id) == carol  # an unsigned (legacy) row
    assert store.set_principal_mac(carol.principal_id, b"signed")
    assert not store.set_principal_mac("nobody", b"signed")
    assert store.principals()[0].mac == b"signed"


# --- tenants and retention -------------------------------------------------------------------


def test_retention_tenants_and_inactive_subjects(store: TemplateStore) -> None:
    store.add_templates([row(subject="old"), row(subject="new"), row("t2", "x")])
    now = time.time()
    store.touch_subject("t1", "new", now + 1000)
    assert store.retention("t1") is None
    store.set_retention("t1", 3600.0)
    store.set_retention("t3", None)
    assert store.retention("t1") == 3600.0
    store.set_retention("t1", None)
    assert store.retention("t1") is None
    assert store.tenants() == ["t1", "t2", "t3"]
    assert store.inactive_subjects("t1", now + 500) == ["old"]
    assert store.inactive_subjects("t1", 0.0) == []


# --- durability and description ------------------------------------------------------------------


def test_everything_survives_reopening(store: TemplateStore, backend: Backend) -> None:
    rows = [row(), row("t2", "bob")]
    store.add_templates(rows)
    store.set_meta("vault_id", "v")
    store.append_audit(event)
    store.add_principal(principal("carol"))
    store.set_retention("t1", 5.0)
    store.close()
    with backend.open() as again:
        assert sorted(r.template_id for r in all_rows(again)) == sorted(
            r.template_id for r in rows)
        assert again.get_meta("vault_id") == "v"
        assert [e.seq for e in again.audit_events()] == [1]
        assert [p.name for p in again.principals()] == ["carol"]
        assert again.retention("t1") == 5.0
        assert [k.version for k in again.load_data_keys()] == [1, 2]


def test_closed_store_refuses_work(backend: Backend) -> None:
    handle = backend.open()
    handle.close()
    handle.close()  # closing twice is harmless
    with pytest.raises(StorageUnavailable):
        handle.get_meta("vault_id")


def test_describe_names_the_backend(store: TemplateStore, backend: Backend) -> None:
    prefix = {"sqlite": "sqlite:", "files": "files:", "postgres": "postgresql://"}[backend.name]
    assert store.describe().startswith(prefix)
    assert "wrapped" not in repr(store)


# --- the change log ----------------------------------------------------------------------------


def added(store: TemplateStore, tenant: str, after: int, upto: int) -> set[str]:
    return {r.template_id for batch in store.templates_added(tenant, after, upto, batch_size=3)
            for r in batch}


def test_every_gallery_change_is_logged_per_tenant_in_order(store: TemplateStore) -> None:
    assert store.change_head("t1") == 0
    first = [row("t1", "alice"), row("t1", "alice"), row("t1", "bob")]
    store.add_templates(first)
    assert (store.change_head("t1"), store.change_head("t2")) == (1, 0)
    store.add_templates([row("t2", "carol")])
    second = [row("t1", "dave") for _ in range(7)]
    store.add_templates(second)
    store.erase_subject("t1", "alice")
    store.erase_subject("t1", "nobody")  # erasing nothing logs nothing
    assert (store.change_head("t1"), store.change_head("t2")) == (3, 1)
    everything = store.changes("t1", 0, 3)
    assert (everything.erased, everything.added, everything.complete) == (("alice",), 10, True)
    assert store.changes("t1", 1, 2).erased == ()
    # Templates come back by the change that added them, only while they still exist.
    assert added(store, "t1", 0, 3) == {first[2].template_id} | {r.template_id for r in second}
    assert added(store, "t1", 1, 3) == {r.template_id for r in second}
    assert added(store, "t1", 0, 1) == {first[2].template_id}
    assert added(store, "t1", 2, 3) == set()
    assert added(store, "t2", FROM_START, 1) == {store_row.template_id
                                                 for store_row in all_rows(store, "t2")}


def test_a_whole_tenant_reads_as_the_same_set_as_from_the_start(store: TemplateStore) -> None:
    """template_tuples_of_tenant (the gallery-loading read, in the store's own order) is
    exactly templates_added(FROM_START, upto): the tenant's own, none added after upto, none
    erased, every field as stored."""
    store.add_templates([row("t1", f"s{i % 4}") for i in range(11)] + [row("t2", "x")])
    upto = store.change_head("t1")
    store.add_templates([row("t1", "late")])
    store.erase_subject("t1", "s1")
    whole = [TemplateRow(*r) for page in store.template_tuples_of_tenant("t1", upto, batch_size=4)
             for r in page]
    assert len({r.template_id for r in whole}) == len(whole) == 8
    assert {r.template_id for r in whole} == added(store, "t1", FROM_START, upto)
    assert sorted(whole, key=lambda r: r.template_id) == sorted(
        [r for r in all_rows(store, "t1") if r.subject_id not in ("s1", "late")],
        key=lambda r: r.template_id)
    assert list(store.template_tuples_of_tenant("empty", 5)) == []


def test_a_failed_write_logs_no_change(store: TemplateStore) -> None:
    taken = row("t1", "alice")
    store.add_templates([taken])
    with pytest.raises(Conflict):
        store.add_templates([row("t1", "bob"), taken])
    assert store.change_head("t1") == 1
    def erase_then_fail() -> None:
        with store.transaction():
            store.erase_subject("t1", "alice")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        erase_then_fail()
    assert store.change_head("t1") == 1
    assert store.changes("t1", 0, 5).erased == ()


def test_bulk_batches_are_logged(store: TemplateStore) -> None:
    batch = TemplateBatch("t1", "dlib-resnet-v1", 128, "float64", 1, 5.0,
                          ["a", "b", "b"], [os.urandom(16).hex() for _ in range(3)],
                          [os.urandom(100) for _ in range(3)])
    store.add_template_batch(batch)
    assert store.change_head("t1") == 1
    assert added(store, "t1", 0, 1) == set(batch.template_ids)


def test_changes_made_through_another_handle_are_seen(store: TemplateStore,
                                                      backend: Backend) -> None:
    other = backend.open()
    try:
        other.add_templates([row("t1", "zed")])
        assert store.change_head("t1") == 1
        other.erase_subject("t1", "zed")
        assert store.changes("t1", 0, store.change_head("t1")).erased == ("zed",)
    finally:
        other.close()


# --- shared counters ---------------------------------------------------------------------------


def test_counters_take_within_the_limit_and_say_when_to_retry(store: TemplateStore,
                                                              backend: Backend) -> None:
    assert store.counter_take("auth:client:x", 3, 60.0, 1, 1000.0) is None
    assert store.counter_take("auth:client:x", 3, 60.0, 2, 1010.0) is None
    assert store.counter_retry_after("auth:client:x", 3, 60.0, 1020.0) == pytest.approx(40.0)
    assert store.counter_take("auth:client:x", 3, 60.0, 1, 1020.0) == pytest.approx(40.0)
    assert store.counter_retry_after("auth:client:y", 3, 60.0, 1020.0) is None
    other = backend.open()  # another replica sees the same counts
    try:
        assert other.counter_retry_after("auth:client:x", 3, 60.0, 1030.0) == pytest.approx(30.0)
        assert other.counter_take("auth:client:x", None, 60.0, 1, 1030.0) is None  # recorded
    finally:
        other.close()
    assert store.counter_retry_after("auth:client:x", 3, 60.0, 1061.0) is not None
    assert store.counter_retry_after("auth:client:x", 3, 60.0, 1091.0) is None
    assert store.counter_take("auth:client:x", 3, 60.0, 5, 1100.0) == 60.0  # never fits


# --- leases (the key-operation lock) ----------------------------------------------------------


def test_a_lease_has_one_holder_across_handles_and_lapses_at_its_expiry(
        backend: Backend, store: TemplateStore) -> None:
    other = backend.open()
    try:
        a = {"token": "a" * 32, "action": "keys.rotate"}
        b = {"token": "b" * 32, "action": "keys.retire"}
        assert store.lease_take("key-operation", a, 60.0, 1000.0) is None
        held = other.lease_take("key-operation", b, 60.0, 1001.0)
        assert held is not None
        assert (held["action"], held["expires"]) == ("keys.rotate", 1060.0)
        assert store.lease_take("key-operation", a, 60.0, 1050.0) is None  # renewed to 1110
        assert other.lease_take("key-operation", b, 60.0, 1100.0) is not None
        other.lease_release("key-operation", b["token"])  # not its lease: nothing happens
        assert other.lease_take("key-operation", b, 60.0, 1100.0) is not None
        # The holder died without releasing: at its expiry the lease is free again.
        assert other.lease_take("key-operation", b, 60.0, 1110.5) is None
        assert store.lease_take("key-operation", a, 60.0, 1111.0) is not None
        other.lease_release("key-operation", b["token"])
        assert store.lease_take("key-operation", a, 60.0, 1112.0) is None
        assert store.lease_take("another-lease", b, 60.0, 1112.0) is None  # leases are apart
        # A holder known dead is replaced at once, only if it still holds the lease.
        assert other.lease_take("key-operation", b, 60.0, 1113.0, replace="c" * 32) is not None
        assert other.lease_take("key-operation", b, 60.0, 1113.0, replace=a["token"]) is None
    finally:
        other.close()


def test_racing_handles_never_both_take_a_lease(backend: Backend, store: TemplateStore) -> None:
    handles = [store, backend.open()]
    try:
        for round_ in range(15):
            name = f"race-{round_}"
            winners: list[int] = []
            barrier = threading.Barrier(2)

            def take(i: int, name: str = name, winners: list[int] = winners,
                     barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                if handles[i].lease_take(name, {"token": str(i) * 32}, 60.0, 1000.0) is None:
                    winners.append(i)

            threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(winners) == 1, name
    finally:
        handles[1].close()
