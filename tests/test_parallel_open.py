"""A gallery loaded from its records opens pages in a helper process too: the answers are the
ones a load in one process gives, damaged records are found all the same, and a helper that
dies, goes quiet or cannot start only makes the load slower."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from faceseal.storage.sqlite import SQLiteStore
from faceseal.vault import Vault, parallel_open

from .conftest import make_vault, random_encodings, reopen_vault

#: Three pages and a half of 10,000 (the helper starts at the second page).
TEMPLATES = 35_000


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parallel")
    home, keys = root / "vault", root / "keys"
    encodings = random_encodings(TEMPLATES, seed=5)
    subjects = [f"s{i // 3:05d}" for i in range(TEMPLATES)]
    with make_vault(home, keys) as vault:
        vault.enroll_many(subjects, encodings)
    with sqlite3.connect(home / "templates.db") as db:
        # Damage one record in every page-sized stretch of the table.
        rows = db.execute("SELECT rowid, record FROM templates ORDER BY rowid").fetchall()
        for rowid, record in rows[5::9_000]:
            flipped = bytearray(record)
            flipped[30] ^= 0x04
            db.execute("UPDATE templates SET record = ? WHERE rowid = ?", (bytes(flipped), rowid))
    return home


def load(home: Path) -> tuple[Vault, dict[str, object]]:
    for snapshot in home.rglob("*.snap"):
        snapshot.unlink()
    vault = reopen_vault(home)
    vault.identify(random_encodings(1, seed=1)[0], top_k=3)
    return vault, vault.index_status()["tenants"]["default"]


def answers(vault: Vault) -> list[list[tuple[str, float]]]:
    probes = random_encodings(20, seed=9) * 0.3 + random_encodings(20, seed=5)[:20]
    return [[(c.subject_id, c.distance) for c in vault.identify(p, top_k=5).candidates]
            for p in probes]


def damaged(vault: Vault) -> list[str]:
    return sorted(d["template_id"] for d in vault.check().damaged)


@pytest.fixture(scope="module")
def alone(stored: Path) -> tuple[list[list[tuple[str, float]]], list[str]]:
    os.environ[parallel_open.HELPER_ENV] = "0"
    try:
        vault, status = load(stored)
    finally:
        del os.environ[parallel_open.HELPER_ENV]
    with vault:
        assert status["source"] == "records"
        assert status["pages_opened_by_helper"] == 0
        assert status["templates"] == TEMPLATES - 4
        return answers(vault), damaged(vault)


class ReadyHelper(parallel_open.OpenHelper):
    """A helper the loader waits for: in production the loader does not wait (a small load
    may finish before the helper is up), which would make these tests depend on timing."""

    def __init__(self) -> None:
        super().__init__()
        deadline = time.monotonic() + 60
        while not self.ready and time.monotonic() < deadline:
            try:
                assert self.next_message(block=False) is None
            except parallel_open.HelperGone:  # a broken helper: the loader finds out itself
                self.inbox.put(("gone",))
                return
            time.sleep(0.02)


@pytest.mark.parametrize("path", ["reads ranges itself", "is handed pages"])
def test_a_helper_opens_pages_and_the_answers_are_the_same(
        stored: Path, alone: tuple[list[list[tuple[str, float]]], list[str]],
        monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setattr(parallel_open, "OpenHelper", ReadyHelper)
    if path == "is handed pages":  # as for PostgreSQL and the file store
        monkeypatch.setattr(SQLiteStore, "direct_read_source", lambda *a: None)
    vault, status = load(stored)
    with vault:
        assert status["source"] == "records"
        assert status["pages_opened_by_helper"] >= 1
        assert status["pages_opened_by_helper"] + status["pages_opened_here"] == 4
        assert status["templates"] == TEMPLATES - 4
        assert answers(vault) == alone[0]
        assert damaged(vault) == alone[1]
        assert len(alone[1]) == 4


BROKEN_HELPERS = {
    # Says it is ready, takes a page, then dies: the pages handed over are opened here.
    "dies": ("import marshal, sys; p = marshal.dumps(('ready',), 4); "
             "sys.stdout.buffer.write(len(p).to_bytes(4, 'big') + p); sys.stdout.flush(); "
             "sys.stdin.buffer.read(1 << 20); sys.exit(3)"),
    # Writes a frame that does not parse.
    "garbles": "import sys; sys.stdout.buffer.write(b'\\x00\\x00\\x00\\x02ab'); sys.exit(0)",
    # Says it is ready, reads, never answers: counted as gone after QUIET_SECONDS.
    "quiet": ("import marshal, sys, time; p = marshal.dumps(('ready',), 4); "
              "sys.stdout.buffer.write(len(p).to_bytes(4, 'big') + p); sys.stdout.flush(); "
              "[sys.stdin.buffer.read(1 << 16) for _ in iter(int, 1)]"),
    # Answers with an error message.
    "errs": ("import marshal, sys; "
             "w = lambda m: sys.stdout.buffer.write(len(p := marshal.dumps(m, 4))"
             ".to_bytes(4, 'big') + p); w(('ready',)); w(('error', 'Boom')); sys.stdout.flush()"),
}


@pytest.mark.parametrize("kind", [*BROKEN_HELPERS, "cannot start"])
def test_a_broken_helper_only_slows_the_load(
        stored: Path, alone: tuple[list[list[tuple[str, float]]], list[str]],
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "cannot start":
        monkeypatch.setattr(parallel_open, "HELPER_COMMAND", ("/nonexistent/python",))
    else:
        monkeypatch.setattr(parallel_open, "HELPER_COMMAND",
                            (sys.executable, "-c", BROKEN_HELPERS[kind]))
    monkeypatch.setattr(parallel_open, "QUIET_SECONDS", 2.0)
    monkeypatch.setattr(parallel_open, "OpenHelper", ReadyHelper)  # it gets units to fail
    vault, status = load(stored)
    with vault:
        assert status["templates"] == TEMPLATES - 4
        assert status["pages_opened_by_helper"] == 0
        assert answers(vault) == alone[0]
        assert damaged(vault) == alone[1]


def test_the_helper_writes_no_core_dump() -> None:
    helper = parallel_open.OpenHelper()
    try:
        deadline = time.monotonic() + 60
        while not helper.ready and time.monotonic() < deadline:
            assert helper.next_message(block=False) is None
            time.sleep(0.05)
        assert helper.ready
        limits = Path(f"/proc/{helper.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4] == "0"  # the soft limit
    finally:
        helper.close()


def test_the_helper_refuses_to_work_without_setup() -> None:
    helper = parallel_open.OpenHelper()
    try:
        helper.send(("open", 0, ("a",), ("b",), ("m",), (b"x",)))
        with pytest.raises(parallel_open.HelperGone, match="ValueError"):
            helper.next_message(block=True)
    finally:
        helper.close()


def test_frames_round_trip_and_refuse_truncation(tmp_path: Path) -> None:
    from faceseal.vault.open_worker import read_frame, write_frame

    path = tmp_path / "frames"
    with path.open("wb") as out:
        write_frame(out, ("open", 3, ("s",), ("t",), ("m",), (b"\x00" * 10,)))
    with path.open("rb") as stream:
        assert read_frame(stream) == ("open", 3, ("s",), ("t",), ("m",), (b"\x00" * 10,))
        assert read_frame(stream) is None
    path.write_bytes(path.read_bytes()[:-3])
    with path.open("rb") as stream, pytest.raises(EOFError):
        read_frame(stream)


def test_a_shard_never_lets_a_helper_read_the_store_or_the_secrets_itself(stored: Path) -> None:
    """A cluster shard's views hold one partition: a helper reading the files directly would
    see every partition, so the views offer no direct source (pages are handed over, with
    only the shard's own subjects' secrets)."""
    from faceseal.vault.partition_view import PartitionStore, PartitionSubjectKeys

    with reopen_vault(stored) as vault:
        store, keys = vault._store, vault._subject_keys
        assert store.direct_read_source("default", 1) is not None
        assert keys.direct_read_location is not None
        assert PartitionStore(store, lambda t, s: True).direct_read_source("default", 1) is None
        assert PartitionSubjectKeys(keys, lambda t, s: True).direct_read_location is None


def test_a_partition_view_offers_only_what_it_filters(stored: Path) -> None:
    """The views once forwarded every other attribute to the whole store: a store method that
    returns templates (``gallery``, ``subject_templates``, ...) reached a shard unfiltered. Now
    only the filtered or harmless methods exist on the views; every other public method of the
    store and of the key store is missing, so a new one cannot slip through."""
    from faceseal.vault.partition_view import PartitionStore, PartitionSubjectKeys

    allowed_store = {"changes", "change_head", "direct_read_source", "templates_added",
                     "template_tuples_of_tenant", "take_erasures"}
    allowed_keys = {"for_tenant", "get_many", "direct_read_location"}
    with reopen_vault(stored) as vault:
        store, keys = vault._store, vault._subject_keys
        mine = {"default"}
        view = PartitionStore(store, lambda tenant, subject: subject in mine)
        key_view = PartitionSubjectKeys(keys, lambda tenant, subject: subject in mine)
        for name in dir(store):
            if not name.startswith("_") and callable(getattr(store, name, None)):
                assert hasattr(view, name) == (name in allowed_store), name
        for name in dir(keys):
            if not name.startswith("_") and name not in allowed_keys:
                assert not hasattr(key_view, name), name
        assert store.subject_templates("default", next(iter(keys.for_tenant("default")))[1])
        with pytest.raises(AttributeError):
            view.gallery  # noqa: B018 - the attribute itself is what is tested
        assert view.change_head("default") == store.change_head("default")


def test_the_helper_reads_files_whose_paths_need_escaping(tmp_path: Path) -> None:
    """Both read-only opens go through a file: URI: ?, # and % in a path must not cut it."""
    from faceseal.keys.subject_keys import SubjectKeyStore, read_tenant_secrets
    from faceseal.storage.sqlite import DirectReader

    odd = tmp_path / "a?b#c%20d"
    odd.mkdir()
    store = SQLiteStore(odd / "templates.db", create=True)
    store.migrate()
    store.close()
    reader = DirectReader(str(odd / "templates.db"))
    assert reader.ranges(10) == []
    reader.close()
    keys = SubjectKeyStore.create(odd / "keys", "vault-id")
    secret = keys.get_or_create_many([("t", "alice")])[("t", "alice")]
    assert read_tenant_secrets(keys.direct_read_location or "", "t")["alice"].reveal() == \
        secret.reveal()
