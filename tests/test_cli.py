"""The ``faceseal`` command as a user runs it: exit statuses, JSON, bad input changing nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from .bad_inputs import grey_jpeg, npy_bytes, png_claiming
from .conftest import CliVault, make_cli_vault, random_encodings, run_cli


def _state(vault: CliVault) -> str:
    """A digest of everything the vault stores (templates, subjects, data keys, subject keys)."""
    digest = hashlib.sha256()
    for path, query in (
        (vault.home / "templates.db",
         "SELECT template_id, subject_id, record FROM templates ORDER BY template_id"),
        (vault.home / "templates.db", "SELECT tenant, subject_id FROM subjects ORDER BY 2"),
        (vault.home / "templates.db", "SELECT version, wrapped, encryptions FROM data_keys"),
        (vault.keys / "subject-keys.db", "SELECT tenant, subject_id, secret FROM subject_secrets"),
    ):
        with sqlite3.connect(path) as db:
            for row in db.execute(query):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def _json(result: object) -> dict[str, object]:
    return json.loads(result.stdout)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.slow
def test_enroll_verify_identify_erase(cli_vault: CliVault, faces_dir: Path) -> None:
    enrolled = cli_vault.run("enroll", "--subject", "obama", str(faces_dir / "obama-1.jpg"),
                             "--json")
    assert enrolled.returncode == 0, enrolled.stderr
    assert len(_json(enrolled)["template_ids"]) == 1  # type: ignore[arg-type]

    # The rest in-process (same command, same exit statuses; the models stay loaded).
    genuine = cli_vault.invoke("verify", "--subject", "obama", str(faces_dir / "obama-2.jpg"),
                               "--json")
    assert genuine.returncode == 0, genuine.stderr
    assert _json(genuine)["match"] is True
    assert _json(genuine)["distance"] < 0.6  # type: ignore[operator]

    impostor = cli_vault.invoke("verify", "--subject", "obama", str(faces_dir / "biden-1.jpg"))
    assert impostor.returncode == 1
    assert impostor.stdout.startswith("NO MATCH")

    found = cli_vault.invoke("identify", str(faces_dir / "obama-3.jpg"), "--json")
    assert found.returncode == 0
    assert _json(found)["best"]["subject_id"] == "obama"  # type: ignore[index]

    listed = cli_vault.invoke("subjects", "--json")
    assert [s["subject_id"] for s in _json(listed)["subjects"]] == ["obama"]  # type: ignore[attr-defined]

    erased = cli_vault.invoke("erase", "--subject", "obama", "--json")
    assert erased.returncode == 0
    assert _json(erased)["key_material_destroyed"] is True
    gone = cli_vault.invoke("verify", "--subject", "obama", str(faces_dir / "obama-2.jpg"))
    assert gone.returncode == 4
    assert "no subject" in gone.stderr


def test_enroll_a_folder(cli_vault: CliVault, faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "obama"
    folder.mkdir()
    for name in ("obama-1.jpg", "obama-2.jpg"):
        shutil.copy(faces_dir / name, folder / name)
    np.save(folder / "extra.npy", random_encodings(3))
    (folder / "notes.txt").write_text("ignored")
    result = cli_vault.run("enroll", "--subject", "obama", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    assert _json(result)["sources"] == ["extra.npy"] * 3 + ["obama-1.jpg", "obama-2.jpg"]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "no face": ("grey.jpg", lambda faces: grey_jpeg(), "no face"),
    "two faces": ("two.jpg", lambda faces: (faces / "two-people.jpg").read_bytes(), "2 faces"),
    "corrupt jpeg": ("broken.jpg", lambda faces: (faces / "obama-1.jpg").read_bytes()[:5000],
                     "broken.jpg"),
    "not an image": ("text.jpg", lambda faces: b"hello, this is not a JPEG", "text.jpg"),
    "30000x30000 header": ("bomb.png", lambda faces: png_claiming(30000, 30000), "pixels"),
    "wrong dimension": ("short.npy", lambda faces: npy_bytes(random_encodings(1, dim=64)[0]),
                        "dimension"),
    "NaN": ("nan.npy", lambda faces: npy_bytes(np.full(128, np.nan)), "finite"),
    "infinite": ("inf.npy", lambda faces: npy_bytes(np.full(128, np.inf)), "finite"),
    "huge values": ("huge.npy", lambda faces: npy_bytes(np.full(128, 1e300)), "beyond"),
    "integer dtype": ("ints.npy", lambda faces: npy_bytes(np.zeros(128, dtype=np.int64)), "dtype"),
    "pickled object": ("obj.npy", lambda faces: b"\x93NUMPY\x01\x00v\x00{'descr': '|O', "
                       b"'fortran_order': False, 'shape': (1,), }" + b" " * 60 + b"\n", "obj.npy"),
    "bad json": ("enc.json", lambda faces: b"[0.1, 0.2,", "enc.json"),
}


@pytest.fixture(scope="module")
def seeded_vault(tmp_path_factory: pytest.TempPathFactory) -> CliVault:
    """One vault with one subject, shared by the bad-input cases (each checks nothing changed)."""
    root = tmp_path_factory.mktemp("bad-input")
    vault = make_cli_vault(root)
    seeded = vault.run("enroll", "--subject", "someone", str(_write(
        root, "seed.npy", npy_bytes(random_encodings(1)[0]))))
    assert seeded.returncode == 0, seeded.stderr
    return vault


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
@pytest.mark.parametrize("command", ["enroll", "verify", "identify"])
def test_bad_input_is_a_clear_error_and_changes_nothing(
    seeded_vault: CliVault, faces_dir: Path, tmp_path: Path, case: str, command: str
) -> None:
    cli_vault = seeded_vault
    name, make, expected = BAD_INPUTS[case]
    path = _write(tmp_path, name, make(faces_dir))
    before = _state(cli_vault)
    args = {"enroll": ["enroll", "--subject", "victim", str(path)],
            "verify": ["verify", "--subject", "someone", str(path)],
            "identify": ["identify", str(path)]}[command]
    result = cli_vault.invoke(*args)
    assert result.returncode >= 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("faceseal: error: ")
    assert expected.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr
    assert _state(cli_vault) == before


def test_all_or_nothing_when_one_file_of_a_folder_is_bad(cli_vault: CliVault, tmp_path: Path
                                                         ) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", random_encodings(1)[0])
    _write(folder, "b.npy", npy_bytes(np.full(128, np.nan)))
    before = _state(cli_vault)
    result = cli_vault.run("enroll", "--subject", "x", str(folder))
    assert result.returncode == 2
    assert "b.npy" in result.stderr
    assert _state(cli_vault) == before


def test_json_errors_and_debug_tracebacks(cli_vault: CliVault, tmp_path: Path) -> None:
    probe = _write(tmp_path, "p.npy", npy_bytes(random_encodings(1)[0]))
    missing = cli_vault.run("verify", "--subject", "nobody", str(probe), "--json")
    assert missing.returncode == 4
    assert _json(missing)["error"]["code"] == "not_found"  # type: ignore[index]
    debug = cli_vault.run("verify", "--subject", "nobody", str(probe), "--debug")
    assert "Traceback" in debug.stderr


def test_database_unreadable_is_an_internal_error(cli_vault: CliVault, tmp_path: Path) -> None:
    (cli_vault.home / "templates.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (cli_vault.home / f"templates.db{suffix}").unlink(missing_ok=True)
    probe = _write(tmp_path, "p.npy", npy_bytes(random_encodings(1)[0]))
    result = cli_vault.run("identify", str(probe))
    assert result.returncode == 5
    assert "SQLite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_keyring_is_a_clear_error(cli_vault: CliVault) -> None:
    (cli_vault.keys / "keyring.json").unlink()
    result = cli_vault.run("subjects")
    assert result.returncode == 5  # key custody is the deployment's (internal), not bad input
    assert "no keyring" in result.stderr


def test_no_vault_here(tmp_path: Path) -> None:
    result = run_cli("subjects", env={"FACESEAL_HOME": str(tmp_path / "nothing")})
    assert result.returncode == 4
    assert "faceseal init" in result.stderr


@pytest.mark.slow
def test_demo_runs(tmp_path: Path) -> None:
    result = run_cli("demo", "--json", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = _json(result)
    assert report["ok"] is True
    assert [s["step"] for s in report["steps"]] == [  # type: ignore[attr-defined]
        "enroll", "verify genuine", "verify impostor", "identify", "erase"]
    assert list(tmp_path.iterdir()) == []  # the temporary vault is removed afterwards
