"""The gallery-loading path opens records in one loop (``open_tenant_records``): it must make
exactly the decisions ``open_record`` makes, record by record, attacks included."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from faceseal.crypto import AeadKey, RecordContext, SecretBytes, open_record, seal_record
from faceseal.crypto.record import OpenedBatch, open_tenant_records, plaintexts_to_matrix
from faceseal.errors import DecryptionError

KEYSET = os.urandom(16)
TENANT = "t1"
SUBJECTS = ["alice", "bob", "carol"]
#: Two data-key versions per subject.
KEYS = {(v, s): AeadKey(SecretBytes(os.urandom(32))) for v in (1, 2) for s in SUBJECTS}


def sealed(subject: str, *, version: int = 1, dtype: str = "float64", dimension: int = 128,
           model: str = "dlib-resnet-v1") -> tuple[str, str, str, bytes]:
    template_id = os.urandom(16).hex()
    encoding = np.random.default_rng().standard_normal(dimension).astype(dtype)
    record = seal_record(KEYS[(version, subject)], version, encoding,
                         RecordContext(KEYSET, TENANT, subject, template_id, model))
    return subject, template_id, model, record


def columns(rows: list[tuple[str, str, str, bytes]]) -> list[Any]:
    """Rows as the four columns open_tenant_records takes."""
    return [tuple(column) for column in zip(*rows, strict=True)] if rows else [(), (), (), ()]


def key_for(version: int, subject: str) -> AeadKey | None:
    return KEYS.get((version, subject))


def bulk(rows: list[tuple[str, str, str, bytes]], *, keyset: bytes = KEYSET, tenant: str = TENANT,
         key_source: Any = None) -> OpenedBatch:
    return open_tenant_records(*columns(rows), keyset_id=keyset, tenant=tenant,
                               key_for=key_source or key_for)


def one_by_one(rows: list[tuple[str, str, str, bytes]], tenant: str = TENANT
               ) -> tuple[dict[int, np.ndarray], list[int]]:
    opened, failed = {}, []
    for index, (subject, template_id, model, record) in enumerate(rows):
        version = int.from_bytes(record[4:8], "big") if len(record) >= 8 else 0
        key = key_for(version, subject)
        try:
            if key is None:
                raise DecryptionError()
            opened[index] = open_record(key, record, RecordContext(KEYSET, tenant, subject,
                                                                   template_id, model))
        except DecryptionError:
            failed.append(index)
    return opened, failed


def flip(record: bytes, at: int) -> bytes:
    return record[:at] + bytes([record[at] ^ 0x01]) + record[at + 1:]


def attacked_rows() -> list[tuple[str, str, str, bytes]]:
    good = [sealed(s, version=1 + i % 2) for i, s in enumerate(SUBJECTS * 4)]
    good += [sealed("alice", dtype="float32"), sealed("bob", dtype="float32", dimension=512,
                                                      model="arcface")]
    a, b = good[0], good[3]
    other_subject = good[1]
    attacks = [
        (a[0], a[1], a[2], flip(a[3], 40)),  # a ciphertext bit
        (a[0], a[1], a[2], flip(a[3], len(a[3]) - 1)),  # a tag bit
        (a[0], a[1], a[2], flip(a[3], 7)),  # the key version: another key, or none
        (a[0], a[1], a[2], flip(a[3], 1)),  # the dtype code
        (a[0], a[1], a[2], flip(a[3], 0)),  # the format version
        (a[0], a[1], a[2], flip(a[3], 3)),  # the dimension
        (a[0], a[1], a[2], a[3][:-1]),  # truncated
        (a[0], a[1], a[2], a[3] + b"\x00"),  # extended
        (a[0], a[1], a[2], a[3][:5]),  # shorter than a header
        (a[0], a[1], a[2], b""),
        (a[0], b[1], a[2], a[3]),  # swapped onto another template of the same subject
        (other_subject[0], a[1], a[2], a[3]),  # moved to another subject
        (a[0], a[1], "arcface", a[3]),  # relabelled as another model
        ("mallory", a[1], a[2], a[3]),  # a subject without a key (crypto-shredded)
    ]
    rows = good + attacks
    order = np.random.default_rng(3).permutation(len(rows))
    return [rows[i] for i in order]


def test_bulk_open_decides_exactly_as_open_record_does() -> None:
    rows = attacked_rows()
    expected, expected_failed = one_by_one(rows)
    batch = bulk(rows)
    assert sorted(batch.failed) == sorted(expected_failed)
    assert len(expected_failed) == 14  # every attack refused, every good record opened
    got: dict[int, np.ndarray] = {}
    for (model, dtype, dimension), (positions, plaintexts) in batch.opened.items():
        matrix = plaintexts_to_matrix(dtype, dimension, plaintexts)
        assert matrix.dtype == np.dtype(dtype)
        assert matrix.shape == (len(positions), dimension)
        for position, vector in zip(positions, matrix, strict=True):
            assert rows[position][2] == model
            got[position] = vector
    assert got.keys() == expected.keys()
    for index, vector in expected.items():
        assert got[index].dtype == vector.dtype
        assert np.array_equal(got[index], vector)


def test_bulk_open_binds_the_tenant_and_the_vault() -> None:
    rows = [sealed(s) for s in SUBJECTS]
    assert len(bulk(rows, tenant="t2").failed) == 3
    assert len(bulk(rows, keyset=os.urandom(16)).failed) == 3
    with pytest.raises(ValueError, match="16 bytes"):
        bulk(rows, keyset=b"short")


def test_bulk_open_asks_for_each_key_once() -> None:
    rows = [sealed(s, version=v) for s in SUBJECTS for v in (1, 2) for _ in range(3)]
    asked: list[tuple[int, str]] = []

    def counting(version: int, subject: str) -> AeadKey | None:
        asked.append((version, subject))
        return key_for(version, subject)

    assert bulk(rows, key_source=counting).failed == []
    assert sorted(asked) == sorted(set(asked))
    assert len(asked) == 6


def test_the_opened_batch_does_not_print_plaintext() -> None:
    batch = bulk([sealed("alice")])
    text = repr(batch)
    assert "1 opened" in text
    assert "\\x" not in text
    assert "b'" not in text


def test_columns_of_different_lengths_are_refused() -> None:
    subjects, templates, models, records = columns([sealed("alice"), sealed("bob")])
    with pytest.raises(ValueError, match="differ in length"):
        open_tenant_records(subjects, templates, models, records[:1], keyset_id=KEYSET,
                            tenant=TENANT, key_for=key_for)


@pytest.mark.parametrize("ids", [
    [os.urandom(16).hex() for _ in range(5)],
    ["A" * 32],  # uppercase
    ["ab" * 15 + " a"],  # whitespace, which bytes.fromhex skips
    ["ab" * 16, "ab" * 15],  # one short
    ["ab" * 16 + "a"],
    ["\u0661" * 32],  # digits, but not ASCII
    ["0x" + "a" * 30],
    ["g" * 32],
    [],
    ["ab" * 16, "AB" * 16],
])
def test_hex_ids_pack_exactly_when_each_matches_the_id_pattern(ids: list[str]) -> None:
    """The gallery packs vault-made ids into 16 bytes with one fromhex call: it must accept
    exactly the ids the pattern accepts."""
    import re

    from faceseal.matching.gallery import _pack_hex_ids

    expected = bool(ids) and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in ids)
    packed = _pack_hex_ids(ids)
    assert (packed is not None) == expected
    if expected:
        assert packed == b"".join(bytes.fromhex(t) for t in ids)
