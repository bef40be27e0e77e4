"""Sliding-window counters, the same contract in memory, in every store and in Redis (the real
server on 127.0.0.1:6379): the failed-authentication limits and budgets every replica shares."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceseal.access.counters import MemoryCounters, RedisCounters, StoreCounters, WindowCounters
from faceseal.errors import StorageUnavailable
from faceseal.storage.sqlite import SQLiteStore

REDIS_URL = os.environ.get("FACESEAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
def counters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WindowCounters]:
    if request.param == "memory":
        yield MemoryCounters()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "t.db", create=True)
        store.migrate()
        yield StoreCounters(store)
        store.close()
    else:
        redis_counters = RedisCounters(REDIS_URL, prefix=f"faceseal-test:{os.urandom(6).hex()}:")
        yield redis_counters
        redis_counters.close()


def test_take_counts_until_the_limit_then_says_when(counters: WindowCounters) -> None:
    key = "budget:verify:principal:gate"
    assert counters.retry_after(key, 3, 60) is None
    assert [counters.take(key, 3, 60) for _ in range(3)] == [None, None, None]
    wait = counters.take(key, 3, 60)
    assert wait is not None
    assert 55 < wait <= 60
    assert counters.retry_after(key, 3, 60) is not None
    assert counters.retry_after("other", 3, 60) is None
    assert counters.take(key, 10, 60, cost=7) is None  # a batch costs each probe
    assert counters.take(key, 10, 60) is not None


def test_record_counts_regardless_and_windows_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    for counters in (MemoryCounters(clock=clock), StoreCounters(store, clock=clock)):
        for _ in range(5):
            counters.record("auth:client:203.0.113.7", 60)
        assert counters.retry_after("auth:client:203.0.113.7", 5, 60) == pytest.approx(60)
        clock.now += 30
        assert counters.retry_after("auth:client:203.0.113.7", 5, 60) == pytest.approx(30)
        clock.now += 31
        assert counters.retry_after("auth:client:203.0.113.7", 5, 60) is None
    store.close()


def test_concurrent_takes_in_redis_never_pass_the_limit() -> None:
    """Eight threads, each with its own connection (as eight replicas), race for 50 slots."""
    prefix = f"faceseal-test:{os.urandom(6).hex()}:"
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        own = RedisCounters(REDIS_URL, prefix=prefix)
        for _ in range(20):
            ok = own.take("race", 50, 60) is None
            with lock:
                granted.append(ok)
        own.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 50
    assert len(granted) == 160


def test_redis_down_is_an_outage_without_the_url_in_the_message() -> None:
    counters = RedisCounters("redis://:hunter2secret@127.0.0.1:1/0")
    with pytest.raises(StorageUnavailable) as caught:
        counters.take("k", 1, 60)
    assert "hunter2secret" not in str(caught.value)
    assert "hunter2secret" not in repr(counters)


def test_a_limit_check_neither_waits_for_the_writer_nor_commits_its_batch(tmp_path: Path) -> None:
    """The service checks the failed-authentication limits before every request: with the counts
    in SQLite that check must read committed data on its own connection, not queue behind a
    transaction that is still open (a long enrolment, a batch of the group commit) nor force it
    to commit early."""
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    counters = StoreCounters(store)
    for _ in range(3):
        counters.record("auth:key:k1", 60)
    inside, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.transaction():
            store.counter_take("auth:key:k1", None, 60, 5, 1e12)  # not committed yet
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(10)
        answer: list[float | None] = []
        checker = threading.Thread(target=lambda: answer.append(
            counters.retry_after("auth:key:k1", 3, 60)))
        checker.start()
        checker.join(5)
        assert not checker.is_alive(), "the limit check waited for the open transaction"
        assert len(answer) == 1
        assert answer[0] is not None  # the three committed failures block the key
        assert counters.retry_after("auth:key:k1", 4, 60) is None  # the uncommitted 5 unseen
    finally:
        release.set()
        thread.join(10)
    assert counters.retry_after("auth:key:k1", 4, 60) is not None  # committed now
    store.close()


def _totals_and_sums(store: SQLiteStore) -> tuple[dict[str, int], dict[str, int]]:
    db = store._db  # type: ignore[attr-defined]
    totals = {k: int(t) for k, t in db.execute("SELECT key, total FROM counter_totals")
              if int(t) > 0}
    sums = {k: int(t) for k, t in db.execute(
        "SELECT key, sum(cost) FROM counter_events GROUP BY key")}
    return totals, sums


def test_sqlite_keeps_each_keys_total_equal_to_its_events(tmp_path: Path) -> None:
    """A budget is checked against a running total per key (one row read, not thousands of
    events summed): through charges, refusals, expiry and the sweep of every key, each total
    stays the sum of its key's events in the window, and the answers are the events'."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    counters = StoreCounters(store, clock=clock)
    for step in range(40):
        clock.now += 7
        counters.take("budget:principal:a", 12, 60, cost=1 + step % 3)
        counters.record("auth:client:b", 300)
        if step % 10 == 0:
            counters.take("budget:subject:c", 2, 60)
        totals, sums = _totals_and_sums(store)
        assert totals == sums
    # What the total says is what the events in the window say.
    held = sum(c for at, c in store._db.execute(  # type: ignore[attr-defined]
        "SELECT at, cost FROM counter_events WHERE key = 'budget:principal:a' AND at > ?",
        (clock.now - 60,)))
    assert held > 0
    assert counters.retry_after("budget:principal:a", held + 1, 60) is None
    assert counters.retry_after("budget:principal:a", held, 60) is not None
    # Every key's events older than any window go in the sweep, totals with them.
    clock.now += 8 * 24 * 3600
    counters.take("budget:principal:a", 12, 60)
    assert _totals_and_sums(store) == ({"budget:principal:a": 1}, {"budget:principal:a": 1})
    store.close()


def test_sqlite_migration_6_totals_the_events_already_counted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", create=True)
    store.migrate()
    for key, cost in (("budget:principal:a", 3), ("budget:principal:a", 2), ("auth:key:k", 1)):
        store.counter_take(key, None, 3600, cost, 1000.0)
    db = store._db  # type: ignore[attr-defined]
    db.execute("DROP TABLE counter_totals")  # as a vault of the release before left it
    db.execute("DELETE FROM schema_migrations WHERE version = 6")
    assert store.migrate() == (5, SQLiteStore.SCHEMA_VERSION)
    assert _totals_and_sums(store)[0] == {"budget:principal:a": 5, "auth:key:k": 1}
    assert store.counter_take("budget:principal:a", 5, 3600, 1, 1001.0) is not None  # 5 held
    store.close()
