"""Attacks on the stored data: flipped bits, truncation, records moved between subjects, and a
search of every file for plaintext."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceseal.errors import IntegrityFailure
from faceseal.vault import Vault

from .conftest import make_vault, random_encodings, reopen_vault

ENCODINGS = random_encodings(3, seed=11)


def _enrol_three(home: Path, keys: Path) -> dict[str, str]:
    """Subjects a, b, c with one template each; returns subject -> template id."""
    with make_vault(home, keys) as vault:
        return {s: vault.enroll(s, [e]).template_ids[0] for s, e in zip("abc", ENCODINGS,
                                                                        strict=True)}


def _edit_record(home: Path, template_id: str, edit: object) -> None:
    with sqlite3.connect(home / "templates.db") as db:
        (record,) = db.execute("SELECT record FROM templates WHERE template_id = ?",
                               (template_id,)).fetchone()
        db.execute("UPDATE templates SET record = ? WHERE template_id = ?",
                   (edit(bytes(record)), template_id))  # type: ignore[operator]


def _flip(position: int, bit: int = 0):  # type: ignore[no-untyped-def]
    def edit(record: bytes) -> bytes:
        damaged = bytearray(record)
        damaged[position % len(record)] ^= 1 << bit
        return bytes(damaged)
    return edit


TAMPERS = {
    "format byte": _flip(0),
    "dtype byte": _flip(1),
    "dimension": _flip(3),
    "key version": _flip(7),
    "nonce": _flip(12, 5),
    "ciphertext": _flip(500, 7),
    "tag": _flip(-1, 3),
    "truncated": lambda r: r[:-1],
    "truncated to header": lambda r: r[:20],
    "extended": lambda r: r + b"\x00",
    "emptied": lambda r: b"",
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_damaged_record_is_reported_and_the_rest_served(vault_dirs: tuple[Path, Path],
                                                        tamper: str) -> None:
    home, keys = vault_dirs
    ids = _enrol_three(home, keys)
    _edit_record(home, ids["b"], TAMPERS[tamper])
    with reopen_vault(home) as vault:
        _assert_only_b_damaged(vault, ids)


def _assert_only_b_damaged(vault: Vault, ids: dict[str, str]) -> None:
    check = vault.check()
    assert [d["template_id"] for d in check.damaged] == [ids["b"]]
    assert check.records == 3
    with pytest.raises(IntegrityFailure, match=ids["b"]):
        vault.verify("b", ENCODINGS[1])
    for subject, encoding in (("a", ENCODINGS[0]), ("c", ENCODINGS[2])):
        assert vault.verify(subject, encoding).distance == 0.0
    found = vault.identify(ENCODINGS[1], top_k=3)
    assert {c.subject_id for c in found.candidates} == {"a", "c"}
    assert found.damaged_templates == 1


def test_record_moved_onto_another_subject_fails(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    ids = _enrol_three(home, keys)
    with sqlite3.connect(home / "templates.db") as db:
        (a_record,) = db.execute("SELECT record FROM templates WHERE template_id = ?",
                                 (ids["a"],)).fetchone()
        # The attacker wants b to verify as a's face: copy a's sealed record onto b's row.
        db.execute("UPDATE templates SET record = ? WHERE template_id = ?", (a_record, ids["b"]))
    with reopen_vault(home) as vault:
        _assert_only_b_damaged(vault, ids)


def test_record_moved_with_its_row_to_another_subject_fails(vault_dirs: tuple[Path, Path]
                                                            ) -> None:
    home, keys = vault_dirs
    ids = _enrol_three(home, keys)
    with sqlite3.connect(home / "templates.db") as db:
        db.execute("UPDATE templates SET subject_id = 'c' WHERE template_id = ?", (ids["b"],))
    with reopen_vault(home) as vault:
        check = vault.check()
        assert [d["template_id"] for d in check.damaged] == [ids["b"]]
        # Both subjects' authenticated inventories say a template moved (issue 12).
        assert {m["subject_id"] for m in check.inventory_mismatches} == {"b", "c"}
        with pytest.raises(IntegrityFailure, match="authenticated inventory"):
            vault.verify("c", ENCODINGS[1])  # b's face does not become c's


def test_one_template_damaged_among_a_subjects_several(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        first, second = vault.enroll("a", list(ENCODINGS[:2])).template_ids
    _edit_record(home, first, TAMPERS["tag"])
    with reopen_vault(home) as vault:
        result = vault.verify("a", ENCODINGS[1])
        assert result.template_id == second
        assert result.distance == 0.0
        assert result.damaged_template_ids == [first]


def _windows(data: bytes, width: int = 8) -> set[bytes]:
    return {data[i:i + width] for i in range(len(data) - width + 1)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_no_plaintext_at_rest(vault_dirs: tuple[Path, Path], dtype: str) -> None:
    home, keys = vault_dirs
    encodings = random_encodings(1000, dtype=dtype, seed=5)
    vault = make_vault(home, keys)
    try:
        for start in range(0, 1000, 100):  # several transactions, so the WAL holds pages
            vault.enroll(f"s{start}", list(encodings[start:start + 100]))
        files = [p for p in (*home.iterdir(), *keys.iterdir()) if p.is_file()]
        assert home / "templates.db-wal" in files  # scanned while the WAL is still there
        on_disk: set[bytes] = set()
        for path in files:
            on_disk |= _windows(path.read_bytes())
        leaked = 0
        for encoding in encodings:
            for form in (encoding.astype("<f8").tobytes(), encoding.astype("<f4").tobytes()):
                leaked += len(_windows(form) & on_disk)
        assert leaked == 0
        # Control: the same scan over a plain-column table, the layout faceseal replaces, finds it.
        control = home.parent / "plain.db"
        with sqlite3.connect(control) as db:
            db.execute("CREATE TABLE face_encodings (id INTEGER, encoding BLOB)")
            db.execute("INSERT INTO face_encodings VALUES (1, ?)", (encodings[7].tobytes(),))
        assert _windows(encodings[7].tobytes()) & _windows(control.read_bytes())
    finally:
        vault.close()


def test_closed_vault_overwrites_its_gallery(vault: Vault) -> None:
    vault.enroll("a", [ENCODINGS[0]])
    vault.identify(ENCODINGS[0])
    gallery = next(iter(vault._cache.galleries_of("default").values()))
    # The gallery's decrypted data lives in its codes, scales, norms and errors (issue #14).
    held = [part.array for part in (gallery._codes, gallery._scale, gallery._norms,
                                    gallery._err)]
    assert any(np.any(array) for array in held)
    vault.close()
    assert len(gallery) == 0
    assert not any(np.any(array) for array in held)
