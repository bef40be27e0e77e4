"""The CLI's access commands: ``init`` as a user runs it (a subprocess), the rest in-process."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import numpy as np

from .conftest import CliVault, random_encodings, run_cli, vault_keys

KEY = re.compile(r"fsk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def _key_file(directory: Path, name: str, key: str, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def test_init_shows_the_first_admin_key_once(tmp_path: Path) -> None:
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k")}
    created = run_cli("init", env=env)
    assert created.returncode == 0, created.stderr
    keys = KEY.findall(created.stdout)
    assert len(keys) == 1
    assert "shown only this once" in created.stdout
    # The key works, and no later command ever prints it again.
    listed = run_cli("principals", "list", "--json", env={**env, "FACESEAL_API_KEY": keys[0]})
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)["principals"]] == ["admin"]
    assert keys[0] not in listed.stdout
    assert "key_hash" not in listed.stdout
    again = run_cli("init", env=env)
    assert again.returncode == 2
    assert not KEY.search(again.stdout + again.stderr)


def test_init_can_write_the_key_to_a_private_file_instead(tmp_path: Path) -> None:
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k")}
    target = tmp_path / "admin.key"
    created = run_cli("init", "--json", "--write-key", str(target), env=env)
    assert created.returncode == 0, created.stderr
    assert not KEY.search(created.stdout)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert KEY.fullmatch(target.read_text().strip())
    listed = run_cli("principals", "list", "--key-file", str(target), env=env)
    assert listed.returncode == 0, listed.stderr


def test_principals_add_list_revoke(cli_vault: CliVault, tmp_path: Path) -> None:
    admin = _key_file(tmp_path, "admin.key", vault_keys(cli_vault.home).admin)
    added = cli_vault.invoke("principals", "add", "frontdesk", "--role", "enroller", "--role",
                          "verifier", "--tenant", "acme", "--json", "--key-file", str(admin))
    assert added.returncode == 0, added.stderr
    document = json.loads(added.stdout)
    assert (document["name"], document["roles"], document["tenant"]) == (
        "frontdesk", ["enroller", "verifier"], "acme")
    frontdesk = document["api_key"]
    assert KEY.fullmatch(frontdesk)

    encoding = tmp_path / "probe.npy"
    np.save(encoding, random_encodings(1)[0])
    as_frontdesk = {"FACESEAL_API_KEY": frontdesk}
    enrolled = cli_vault.invoke("enroll", "--subject", "s1", "--tenant", "acme", str(encoding),
                             extra_env=as_frontdesk)
    assert enrolled.returncode == 0, enrolled.stderr
    assert cli_vault.invoke("verify", "--subject", "s1", "--tenant", "acme", str(encoding),
                         extra_env=as_frontdesk).returncode == 0
    # Another tenant, and a role it does not hold: denied (exit 3), with the reason.
    other = cli_vault.invoke("enroll", "--subject", "s1", str(encoding), extra_env=as_frontdesk)
    assert other.returncode == 3
    assert "scoped to tenant 'acme'" in other.stderr
    search = cli_vault.invoke("identify", "--tenant", "acme", str(encoding),
                           extra_env=as_frontdesk)
    assert search.returncode == 3
    assert "needs identifier" in search.stderr

    listed = cli_vault.invoke("principals", "list", "--key-file", str(admin))
    assert listed.returncode == 0
    assert re.search(r"frontdesk\s+enroller,verifier\s+tenant acme", listed.stdout)
    assert frontdesk not in listed.stdout

    revoked = cli_vault.invoke("principals", "revoke", "frontdesk", "--key-file", str(admin))
    assert revoked.returncode == 0, revoked.stderr
    refused = cli_vault.invoke("verify", "--subject", "s1", "--tenant", "acme", str(encoding),
                            extra_env=as_frontdesk)
    assert refused.returncode == 3
    assert "refused" in refused.stderr
    assert frontdesk not in refused.stderr

    tail = cli_vault.invoke("audit", "tail", "-n", "6", "--json")
    events = [(e["principal"], e["action"], e["outcome"])
              for e in json.loads(tail.stdout)["events"]]
    assert events == [
        ("frontdesk", "verify", "ok"), ("frontdesk", "enroll", "denied"),
        ("frontdesk", "identify", "denied"), ("admin", "principals.list", "ok"),
        ("admin", "principals.revoke", "ok"), ("frontdesk", "authenticate", "unauthenticated")]


def test_a_missing_or_bad_credential_is_refused_with_a_clear_message(cli_vault: CliVault,
                                                                     tmp_path: Path) -> None:
    none = cli_vault.invoke("subjects", extra_env={"FACESEAL_API_KEY": ""})
    assert none.returncode == 3
    assert "--key-file FILE or $FACESEAL_API_KEY" in none.stderr
    bad = cli_vault.invoke("subjects", extra_env={"FACESEAL_API_KEY": "hunter2"})
    assert bad.returncode == 3
    assert "hunter2" not in bad.stderr
    readable = _key_file(tmp_path, "open.key", vault_keys(cli_vault.home).worker, mode=0o644)
    loose = cli_vault.invoke("subjects", "--key-file", str(readable))
    assert loose.returncode == 2
    assert "chmod 600" in loose.stderr
    missing = cli_vault.invoke("subjects", "--key-file", str(tmp_path / "nope.key"))
    assert missing.returncode == 2
    # The key file wins over the environment.
    good = _key_file(tmp_path, "good.key", vault_keys(cli_vault.home).worker)
    assert cli_vault.invoke("subjects", "--key-file", str(good),
                         extra_env={"FACESEAL_API_KEY": "hunter2"}).returncode == 0


def test_audit_verify_tail_and_export(cli_vault: CliVault, tmp_path: Path) -> None:
    encoding = tmp_path / "e.npy"
    np.save(encoding, random_encodings(1)[0])
    assert cli_vault.invoke("enroll", "--subject", "s1", str(encoding)).returncode == 0
    verified = cli_vault.invoke("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "Audit log intact" in verified.stdout
    tail = cli_vault.invoke("audit", "tail", "-n", "3")
    assert tail.returncode == 0
    assert re.search(r"test-worker \(enroller\) enroll \[default\] subject s1 -> ok", tail.stdout)

    exported = cli_vault.invoke("audit", "export")
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert {"seq", "event_id", "time", "principal", "role", "action", "tenant", "subject_id",
            "template_ids", "outcome", "request_id", "detail", "mac", "prev_mac"} <= set(lines[0])
    future = cli_vault.invoke("audit", "export", "--since", str(time.time() + 3600))
    assert future.returncode == 0
    assert future.stdout == ""
    recent = cli_vault.invoke("audit", "export", "--since", "1h")
    assert len(recent.stdout.splitlines()) >= len(lines)
    target = tmp_path / "audit.jsonl"
    to_file = cli_vault.invoke("audit", "export", "--since", "2000-01-01", "--output", str(target))
    assert to_file.returncode == 0, to_file.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(target.read_text().splitlines()) >= len(lines)
    bad = cli_vault.invoke("audit", "export", "--since", "last tuesday")
    assert bad.returncode == 2


def test_tenants_retention_and_purge(cli_vault: CliVault, tmp_path: Path) -> None:
    encoding = tmp_path / "e.npy"
    np.save(encoding, random_encodings(1)[0])
    assert cli_vault.invoke("enroll", "--subject", "old", "--tenant", "t1",
                         str(encoding)).returncode == 0
    set_retention = cli_vault.invoke("tenants", "retention", "t1", "4y")
    assert set_retention.returncode == 0
    assert "BIPA" in set_retention.stderr
    bad = cli_vault.invoke("tenants", "retention", "t1", "forever")
    assert bad.returncode == 2
    listed = cli_vault.invoke("tenants", "list", "--json")
    assert json.loads(listed.stdout)["tenants"] == [
        {"tenant": "t1", "retention_seconds": 4 * 365 * 86400.0, "warning": None}]
    time.sleep(0.2)
    dry = cli_vault.invoke("purge", "--inactive-for", "0.1s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would erase 1 subject(s)" in dry.stdout
    assert "  old" in dry.stdout
    assert "old" in cli_vault.invoke("subjects", "--tenant", "t1").stdout
    bad_purge = cli_vault.invoke("purge", "--inactive-for", "soon")
    assert bad_purge.returncode == 2
    done = cli_vault.invoke("purge", "--inactive-for", "0.1s", "--json")
    assert json.loads(done.stdout)["erased"] == 1
    assert "0 subject(s)" in cli_vault.invoke("subjects", "--tenant", "t1").stdout
