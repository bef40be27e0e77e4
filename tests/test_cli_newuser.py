"""What a new user trips over on the command line (issue #15): each defect, fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceseal.errors import NotFound
from faceseal.vault import Vault

from .bad_inputs import npy_bytes
from .conftest import CliVault, random_encodings, vault_keys


def _json(result: object) -> dict[str, object]:
    return json.loads(result.stdout)  # type: ignore[attr-defined,no-any-return]


def _enroll_some(vault: CliVault, tmp_path: Path, count: int = 5) -> None:
    gallery = tmp_path / "g.npy"
    gallery.write_bytes(npy_bytes(random_encodings(count)))
    assert vault.invoke("enroll", "--subject", "a", str(gallery)).returncode == 0


def test_rotate_kek_and_data_does_both(cli_vault: CliVault, tmp_path: Path) -> None:
    _enroll_some(cli_vault, tmp_path)
    both = cli_vault.invoke("keys", "rotate", "--kek", "--data", "--json")
    assert both.returncode == 0, both.stderr
    document = _json(both)
    assert document["kek"]["kek_version"] == 2  # type: ignore[index]
    assert document["data"]["records_reencrypted"] == 5  # type: ignore[index]
    status = _json(cli_vault.invoke("keys", "status", "--json"))
    assert status["kek_versions"] == [1, 2]
    assert status["active_data_key"] == 2
    human = cli_vault.invoke("keys", "rotate", "--data", "--kek")
    assert "KEK v2 -> v3" in human.stdout
    assert "data key v3" in human.stdout


@pytest.mark.parametrize("args", [["subjects", "--json"], ["audit", "export"],
                                  ["audit", "tail", "--json"]])
def test_closed_pipe_exits_quietly(cli_vault: CliVault, tmp_path: Path,
                                   args: list[str]) -> None:
    _enroll_some(cli_vault, tmp_path)
    # The reader is gone before the first write: what `| head -c 0` does, every time.
    process = subprocess.Popen(
        [sys.executable, "-m", "faceseal", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, **cli_vault.env})
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # as `cat file | head` leaves cat
    assert stderr == ""


def test_serve_without_the_server_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['fastapi'] = None; sys.argv = ['faceseal', 'serve']; "
            "from faceseal.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "FACESEAL_HOME": str(tmp_path)}, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert "faceseal serve needs the server extra" in result.stderr
    assert "pip install 'faceseal[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_global_options_before_the_command(cli_vault: CliVault, tmp_path: Path) -> None:
    _enroll_some(cli_vault, tmp_path)
    before = cli_vault.invoke("--json", "subjects")
    assert before.returncode == 0, before.stderr
    assert _json(before)["subjects"][0]["subject_id"] == "a"  # type: ignore[index]
    assert cli_vault.invoke("--debug", "subjects").returncode == 0
    elsewhere = {"FACESEAL_HOME": str(tmp_path / "nothing")}
    pointed = cli_vault.invoke("--vault", str(cli_vault.home), "--json", "subjects",
                               extra_env=elsewhere)
    assert pointed.returncode == 0, pointed.stderr
    assert cli_vault.invoke("subjects", extra_env=elsewhere).returncode == 4
    # The option after the command wins over the one before it.
    assert cli_vault.invoke("--vault", str(cli_vault.home), "subjects", "--vault",
                            str(tmp_path / "nothing")).returncode == 4
    assert cli_vault.invoke("--json", "keys", "status").stdout.startswith("{")


def test_verify_checks_the_subject_before_encoding(cli_vault: CliVault,
                                                   faces_dir: Path) -> None:
    def no_encoding(**_: object) -> object:
        raise AssertionError("the photo was encoded for a subject that does not exist")

    keys = vault_keys(cli_vault.home)
    with Vault.open(cli_vault.home, api_key=keys.worker,
                    encoder_factory=no_encoding) as vault, pytest.raises(NotFound, match="typo"):
        vault.verify("typo", faces_dir / "obama-1.jpg")
    typo = cli_vault.invoke("verify", "--subject", "typo", str(faces_dir / "obama-1.jpg"))
    assert typo.returncode == 4
    assert "no subject 'typo'" in typo.stderr


def test_no_api_key_message_speaks_cli(cli_vault: CliVault) -> None:
    result = cli_vault.run("subjects", extra_env={"FACESEAL_API_KEY": ""})
    assert result.returncode == 3
    assert "--key-file FILE" in result.stderr
    assert "$FACESEAL_API_KEY" in result.stderr
    assert "Vault.open" not in result.stderr
    assert "api_key=" not in result.stderr


def test_help_command(cli_vault: CliVault) -> None:
    top = cli_vault.invoke("help")
    assert top.returncode == 0
    assert "[OPTIONS] COMMAND [ARGS]..." in top.stdout  # the program name depends on the runner
    assert "faceseal: a vault for face encodings." in top.stdout
    rotate = cli_vault.invoke("help", "keys", "rotate")
    assert rotate.returncode == 0
    assert " keys rotate [OPTIONS]" in rotate.stdout
    assert "--kek" in rotate.stdout
    assert cli_vault.invoke("help", "nope").returncode == 2


@pytest.mark.parametrize("group", [[], ["keys"], ["audit"], ["db"], ["principals"]])
def test_command_descriptions_are_not_cut(cli_vault: CliVault, group: list[str]) -> None:
    listed = cli_vault.invoke(*group, "--help").stdout.split("Commands:")[1]
    cut = [line for line in listed.splitlines() if line.rstrip().endswith("...")]
    assert cut == []


def test_completion_script_as_documented(cli_vault: CliVault) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "_FACESEAL_COMPLETE=bash_source faceseal" in docs
    script = cli_vault.run(extra_env={"_FACESEAL_COMPLETE": "bash_source"})
    assert script.returncode == 0
    assert "complete -o nosort -F" in script.stdout


def test_largest_face_on_verify(cli_vault: CliVault, faces_dir: Path) -> None:
    photos = [str(faces_dir / n) for n in ("obama-1.jpg", "biden-1.jpg")]
    assert cli_vault.invoke("enroll", "--subject", "o", photos[0]).returncode == 0
    bad = cli_vault.invoke("verify", "--subject", "o", photos[0], "--face", "big")
    assert bad.returncode == 2
    assert "largest" in bad.stderr
    ok = cli_vault.invoke("verify", "--subject", "o", photos[0], "--face", "largest", "--json")
    assert ok.returncode == 0
    assert np.isclose(_json(ok)["distance"], 0.0)  # type: ignore[arg-type]


def test_check_and_purge_report_progress(vault: Vault) -> None:
    vault.enroll_many([f"s{i}" for i in range(12)], random_encodings(12))
    seen: list[tuple[int, int]] = []
    assert vault.check(progress=lambda done, total: seen.append((done, total))).records == 12
    assert seen[-1] == (12, 12)
    seen.clear()
    purged = vault.purge(0, progress=lambda done, total: seen.append((done, total)))
    assert purged.subjects == 12
    assert seen == [(i, 12) for i in range(1, 13)]


@pytest.mark.parametrize("args", [["identify", "x.npy", "--top-k", "0"],
                                  ["audit", "tail", "-n", "0"]])
def test_limits_are_worded_as_options(cli_vault: CliVault, tmp_path: Path,
                                      args: list[str]) -> None:
    (tmp_path / "x.npy").write_bytes(npy_bytes(random_encodings(1)[0]))
    result = cli_vault.invoke(*[str(tmp_path / a) if a == "x.npy" else a for a in args])
    assert result.returncode == 2
    assert "top_k" not in result.stderr
    assert ("--top-k" in result.stderr) or ("--lines" in result.stderr)


@pytest.mark.slow
def test_demo_into_head(tmp_path: Path) -> None:
    """`faceseal demo | head -3`: three lines read, then the reader is gone."""
    process = subprocess.Popen(
        [sys.executable, "-m", "faceseal", "demo", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    lines = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141
    assert all(lines)
    assert stderr == ""
    assert list(tmp_path.iterdir()) == []  # the demo still cleaned up after itself


def test_key_migration_reports_progress(tmp_path: Path) -> None:
    from .conftest import make_vault

    with make_vault(tmp_path / "vault", tmp_path / "keys", max_encryptions_per_key=15) as vault:
        vault.enroll("s", [random_encodings(40)])
        keys = len(vault.key_status().data_keys)
        assert keys >= 3
        seen: list[tuple[int, int]] = []
        vault.migrate_keys(f"local:{tmp_path / 'keys-2'}",
                           progress=lambda done, total: seen.append((done, total)))
        assert seen == [(i, keys) for i in range(1, keys + 1)]
