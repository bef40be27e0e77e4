"""Reads no longer queue on one lock, and stay correct while deltas land.

Searches share the gallery (a readers-writer lock): two searches hold it at once, a waiting
delta keeps new searches out until it is applied. Under load -- identify threads against a
thread enrolling and erasing through the same open vault -- an identify that starts after an
erasure returned never names the erased subject, and one that starts after an enrolment returned
finds the new subject.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from faceseal.bench.runner import lift_budgets
from faceseal.vault import Vault
from faceseal.vault.rwlock import SharedLock

from .conftest import make_vault, random_encodings, reopen_vault, vault_keys


def test_readers_share_the_lock_and_a_waiting_writer_keeps_new_readers_out() -> None:
    lock = SharedLock()
    both_in, release = threading.Barrier(3), threading.Event()
    order: list[str] = []

    def reader(name: str) -> None:
        with lock.shared():
            both_in.wait()  # only passes if both readers are inside at once
            release.wait()
            order.append(name)

    readers = [threading.Thread(target=reader, args=(n,)) for n in ("r1", "r2")]
    for thread in readers:
        thread.start()
    both_in.wait()

    def writer() -> None:
        with lock:
            order.append("writer")

    def late_reader() -> None:
        with lock.shared():
            order.append("late")

    write = threading.Thread(target=writer)
    write.start()
    while not lock._writers_waiting:
        time.sleep(0.001)
    late = threading.Thread(target=late_reader)
    late.start()
    release.set()
    for thread in [*readers, write, late]:
        thread.join()
    assert order[2:] == ["writer", "late"]


def test_the_exclusive_holder_may_read_and_re_enter() -> None:
    lock = SharedLock()
    with lock, lock, lock.shared():
        pass
    with lock.shared():
        pass  # released: a shared holder gets in


def test_identify_under_concurrent_enrolments_and_erasures(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    make_vault(home, tmp_path / "keys").close()
    with Vault.open(home, api_key=vault_keys(home).admin) as admin:
        lift_budgets(admin)  # this test asks far more than a caller may
    vault = reopen_vault(home)
    base = random_encodings(30, seed=41)
    extra = random_encodings(12, seed=42)
    vault.enroll_many([f"b{i}" for i in range(len(base))], base)
    vault.identify(base[0])  # the gallery in memory
    erased_at: dict[str, float] = {}
    failures: list[str] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        try:
            search(seed)
        except Exception as exc:  # a thread's error fails the test, it is not just printed
            failures.append(repr(exc))

    def search(seed: int) -> None:
        i = seed
        while not stop.is_set():
            started = time.monotonic()
            found = vault.identify(base[i % len(base)], top_k=3)
            for candidate in found.candidates:
                when = erased_at.get(candidate.subject_id)
                if when is not None and when < started:
                    failures.append(f"{candidate.subject_id} returned after its erasure")
            i += 1

    def writer() -> None:
        try:
            write()
        except Exception as exc:
            failures.append(repr(exc))
        finally:
            stop.set()

    def write() -> None:
        for i, encoding in enumerate(extra):
            vault.enroll(f"x{i}", [encoding])
            found = vault.identify(encoding, top_k=1)
            if [c.subject_id for c in found.candidates] != [f"x{i}"]:
                failures.append(f"x{i} not found after its enrolment returned")
            if i % 2 == 0:
                vault.erase(f"b{i}")
                erased_at[f"b{i}"] = time.monotonic()
                top = vault.identify(base[i], top_k=1).candidates
                if top and top[0].subject_id == f"b{i}":
                    failures.append(f"b{i} found after its erasure returned")

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    vault.close()
    assert not failures, failures[:5]
