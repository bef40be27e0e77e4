"""Bulk enrolment and batch identification through the vault facade."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceseal.crypto.aead import generate_key
from faceseal.crypto.batch import seal_batch
from faceseal.crypto.derive import new_subject_secret, record_key
from faceseal.crypto.record import RecordContext, open_record
from faceseal.errors import AccessDenied, InvalidEncoding, InvalidInput
from faceseal.vault import Vault
from tests.conftest import make_vault, random_encodings, reopen_vault


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_sealed_records_are_ordinary_v1_records(dtype: str) -> None:
    dek, keyset = generate_key(), b"k" * 16
    subjects = ["ann", "bob", "ann", "cy"]
    secrets = {s: new_subject_secret() for s in set(subjects)}
    encodings = random_encodings(4, dtype=dtype)
    ids = [f"{i:032x}" for i in range(4)]
    records = seal_batch(dek, key_version=3, keyset_id=keyset, tenant="t", model_id="m",
                         subject_ids=subjects, subject_secrets=secrets, encodings=encodings,
                         template_ids=ids)
    records = [bytes(r) for r in records]
    nonces = {r[8:20] for r in records}
    assert len(nonces) == 4
    for record, subject, template, expected in zip(records, subjects, ids, encodings,
                                                   strict=True):
        key = record_key(dek, "t", subject, secrets[subject])
        opened = open_record(key, record, RecordContext(keyset, "t", subject, template, "m"))
        assert opened.dtype == np.dtype(dtype)
        assert np.array_equal(opened, expected)
    assert np.array_equal(encodings, random_encodings(4, dtype=dtype))  # caller's data intact


def test_enroll_many_round_trips_through_the_records(vault: Vault) -> None:
    encodings = random_encodings(300, seed=1)
    subjects = [f"p{i % 100}" for i in range(300)]
    result = vault.enroll_many(subjects, encodings)
    assert np.array_equal(encodings, random_encodings(300, seed=1))  # the caller's data intact
    assert result.templates == 300
    assert result.subjects == 100
    assert len(set(result.template_ids)) == 300
    assert vault.check().damaged == []
    found = vault.identify(encodings[42], top_k=1)
    assert found.candidates[0].subject_id == "p42"
    assert found.candidates[0].template_id == result.template_ids[42]
    assert vault.verify("p7", encodings[107]).match
    assert sorted(s.subject_id for s in vault.subjects())[:2] == ["p0", "p1"]
    assert {s.templates for s in vault.subjects()} == {3}


@pytest.mark.parametrize("layout", ["big-endian", "fortran", "float32"])
def test_enroll_many_converts_without_touching_the_callers_array(vault: Vault,
                                                                 layout: str) -> None:
    base = random_encodings(6, seed=9)
    given = {"big-endian": base.astype(">f8"), "fortran": np.asfortranarray(base),
             "float32": base.astype(np.float32)}[layout]
    before = given.copy()
    vault.enroll_many(["a", "a", "b", "b", "c", "c"], given)
    assert np.array_equal(given, before)
    assert vault.identify(base[4], top_k=1).candidates[0].subject_id == "c"


def test_enroll_many_keeps_a_loaded_gallery_in_step(vault: Vault) -> None:
    encodings = random_encodings(20, seed=2)
    vault.enroll_many(["a"] * 10, encodings[:10])
    vault.identify(encodings[0])
    vault.enroll_many(["b"] * 10, encodings[10:])
    assert vault.identify(encodings[15], top_k=1).candidates[0].subject_id == "b"
    assert vault.identify(encodings[15], top_k=1).gallery_size == 20


def test_enroll_many_spans_data_key_versions(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    encodings = random_encodings(130, seed=3)
    with make_vault(home, keys, max_encryptions_per_key=50) as vault:
        vault.enroll_many([f"s{i}" for i in range(130)], encodings)
        counts = vault._store.key_version_counts()
        assert sum(counts.values()) == 130
        assert len(counts) >= 3
        assert vault.check().damaged == []
    with reopen_vault(home) as vault:
        found = vault.identify_many(encodings[[0, 60, 129]], top_k=1)
        assert [r.candidates[0].subject_id for r in found] == ["s0", "s60", "s129"]


def _db(vault: Vault) -> Path:
    return vault.home / "templates.db"


def test_a_tampered_bulk_record_is_found(vault: Vault) -> None:
    encodings = random_encodings(10, seed=5)
    vault.enroll_many([f"s{i}" for i in range(10)], encodings)
    with sqlite3.connect(_db(vault)) as db:
        (a, ra), (b, rb) = db.execute("SELECT template_id, record FROM templates LIMIT 2")
        db.execute("UPDATE templates SET record = ? WHERE template_id = ?", (rb, a))
        db.execute("UPDATE templates SET record = ? WHERE template_id = ?", (ra, b))
    damaged = {d["template_id"] for d in vault.check().damaged}
    assert damaged == {a, b}


BAD_BATCHES: dict[str, tuple[Any, Any, type[Exception]]] = {
    "wrong dimension": (["a", "b"], np.zeros((2, 64)), InvalidEncoding),
    "nan": (["a", "b"], np.full((2, 128), np.nan), InvalidEncoding),
    "inf": (["a", "b"], np.full((2, 128), np.inf), InvalidEncoding),
    "integers": (["a", "b"], np.zeros((2, 128), dtype=np.int64), InvalidEncoding),
    "one-dimensional": (["a"], np.zeros(128), InvalidEncoding),
    "a list": (["a"], [[0.0] * 128], InvalidEncoding),
    "empty": ([], np.zeros((0, 128)), InvalidInput),
    "ids do not line up": (["a"], np.zeros((2, 128)), InvalidInput),
    "ids as one string": ("ab", np.zeros((2, 128)), InvalidInput),
    "empty id": (["a", ""], np.zeros((2, 128)), InvalidInput),
    "control character": (["a", "b\n"], np.zeros((2, 128)), InvalidInput),
    "id too long": (["a", "x" * 257], np.zeros((2, 128)), InvalidInput),
    "id not a string": (["a", 7], np.zeros((2, 128)), InvalidInput),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batches_are_refused_and_change_nothing(vault: Vault, case: str) -> None:
    subjects, encodings, error = BAD_BATCHES[case]
    vault.enroll_many(["keep"], random_encodings(1))
    with pytest.raises(error):
        vault.enroll_many(subjects, encodings)
    assert [s.subject_id for s in vault.subjects()] == ["keep"]
    assert vault._subject_keys.subjects() == [("default", "keep")]


def test_identify_many_equals_identify(vault: Vault) -> None:
    encodings = random_encodings(200, seed=6)
    vault.enroll_many([f"s{i // 2}" for i in range(200)], encodings)
    probes = encodings[::17] + 0.002
    many = vault.identify_many(probes, top_k=3, threshold=0.5)
    assert [r.to_dict() for r in many] == [
        vault.identify(p, top_k=3, threshold=0.5).to_dict() for p in probes]
    as_list = vault.identify_many([list(p) for p in probes[:2]], top_k=3, threshold=0.5)
    assert [r.to_dict() for r in as_list] == [r.to_dict() for r in many[:2]]


@pytest.mark.parametrize(("probes", "options"), [
    (np.zeros((0, 128)), {}),
    ("not probes", {}),
    (np.zeros((2, 64)), {}),
    (np.zeros((2, 128)), {"top_k": 0}),
    (np.zeros((2, 128)), {"top_k": 101}),
    (np.zeros((2, 128)), {"threshold": -1.0}),
])
def test_bad_batch_probes_are_refused(vault: Vault, probes: Any,
                                      options: dict[str, Any]) -> None:
    vault.enroll_many(["a"], random_encodings(1))
    with pytest.raises((InvalidInput, InvalidEncoding)):
        vault.identify_many(probes, **options)


def test_index_status_reports_source_and_locking(vault: Vault) -> None:
    vault.enroll_many(["a", "b"], random_encodings(2))
    assert vault.index_status()["tenants"] == {}
    vault.identify(random_encodings(1)[0])
    status = vault.index_status()
    assert status["scan_backend"] in ("numba", "numpy")
    assert status["batch_scan"] in ("vnni", "int16", "numpy")
    assert status["tenants"]["default"]["source"] == "records"
    assert status["tenants"]["default"]["memory_locked"] is True
    assert status["memory"]["fully_locked"] is True


def test_bulk_operations_need_their_roles_and_change_nothing_when_denied(vault: Vault) -> None:
    encodings = random_encodings(4, seed=12)
    vault.enroll_many(["a", "b"], encodings[:2])
    verifier = vault.as_key(vault.add_principal("only-verify", ["verifier"]).api_key)
    enroller = vault.as_key(vault.add_principal("only-enrol", ["enroller"]).api_key)
    with pytest.raises(AccessDenied):
        verifier.enroll_many(["c", "d"], encodings[2:])
    with pytest.raises(AccessDenied):
        enroller.identify_many(encodings[:2])
    assert sorted(s.subject_id for s in vault.subjects()) == ["a", "b"]
    assert vault._subject_keys.subjects() == [("default", "a"), ("default", "b")]
    denied = [e for e in vault.audit_tail(10) if e["outcome"] == "denied"]
    assert {e["action"] for e in denied} >= {"enroll", "identify"}


def test_a_large_bulk_enrolment_is_audited_in_bounded_events(vault: Vault) -> None:
    subjects = [f"p{i // 2:04d}" for i in range(2400)]
    result = vault.enroll_many(subjects, random_encodings(2400, seed=14))
    enrolled = [e for e in vault.audit_tail(50) if e["action"] == "enroll"]
    assert len(enrolled) == 3  # 1200 subjects, 500 per event
    assert all(len(e["detail"]["subjects"]) <= 500 for e in enrolled)
    assert sorted(s for e in enrolled for s in e["detail"]["subjects"]) == sorted(set(subjects))
    assert sorted(t for e in enrolled for t in e["template_ids"]) == sorted(result.template_ids)


def test_bulk_operations_are_audited_with_subjects_and_per_probe(vault: Vault) -> None:
    encodings = random_encodings(6, seed=13)
    result = vault.enroll_many(["a", "a", "b", "b", "c", "c"], encodings)
    found = vault.identify_many(encodings[[0, 2, 4]], top_k=2)
    events = vault.audit_tail(20)
    enrolled = [e for e in events if e["action"] == "enroll" and e["outcome"] == "ok"]
    assert sorted(s for e in enrolled for s in e["detail"]["subjects"]) == ["a", "b", "c"]
    assert sorted(t for e in enrolled for t in e["template_ids"]) == sorted(result.template_ids)
    searched = [e for e in events if e["action"] == "identify" and e["outcome"] == "ok"]
    assert [e["subject_id"] for e in searched] == [r.best.subject_id for r in found
                                                    if r.best is not None]
    for event in events:  # no encoding value in any event
        assert str(float(encodings[0][0]))[:8] not in str(event)
