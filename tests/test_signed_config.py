"""vault.json is trusted only as signed by the key side; thresholds are bounded per model."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from faceseal.audit.state import AUDIT_STATE_FILE
from faceseal.errors import AccessDenied, IntegrityFailure, InvalidInput
from faceseal.vault import Vault
from faceseal.vault.config import VaultConfig

from .conftest import CliVault, make_vault, random_encodings, reopen_vault, vault_keys


def edit_config(home: Path, **changes: Any) -> dict[str, Any]:
    path = home / "vault.json"
    original: dict[str, Any] = json.loads(path.read_bytes())
    path.write_text(json.dumps({**original, **changes}))
    return original


def restore_config(home: Path, original: dict[str, Any]) -> None:
    (home / "vault.json").write_text(json.dumps(original))


@pytest.mark.parametrize(("changes", "named"), [
    ({"thresholds": {"dlib-resnet-v1": 100.0}}, "thresholds"),
    ({"thresholds": {"dlib-resnet-v1": 0.59}}, "thresholds"),  # even a stricter one: not signed
    ({"extra_models": [{"model_id": "any", "dimension": 128, "metric": "euclidean",
                        "threshold": 1.0}]}, "extra_models"),
    ({"store_url": "sqlite:other.db"}, "store_url"),
    ({"audit_checkpoint_every": 1000000}, "audit_checkpoint_every"),
    ({"max_encryptions_per_key": 2**40}, "max_encryptions_per_key"),
])
def test_an_edited_vault_json_is_refused_naming_what_changed(
        vault_dirs: tuple[Path, Path], changes: dict[str, Any], named: str) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    if "store_url" in changes:  # the attacker's own copy of the database, made to look right
        shutil.copy(home / "templates.db", home / "other.db")
    original = edit_config(home, **changes)
    with pytest.raises(IntegrityFailure, match=rf"vault\.json was changed outside faceseal: "
                                               rf"{named} \(signed "):
        reopen_vault(home)
    restore_config(home, original)
    reopen_vault(home).close()


def test_the_cli_reports_the_edit_and_exits_5(cli_vault: CliVault) -> None:
    edit_config(cli_vault.home, thresholds={"dlib-resnet-v1": 100.0})
    done = cli_vault.invoke("subjects")
    assert done.returncode == 5
    assert "vault.json was changed outside faceseal: thresholds" in done.stderr


def test_an_admin_saves_settings_the_vault_then_accepts(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        worker_only = vault.as_key(vault.add_principal("w", ["enroller"], tenant="t").api_key)
        with pytest.raises(AccessDenied):
            worker_only.save_config()
        admin = vault.as_key(vault_keys(home).admin)
        admin.config.thresholds["dlib-resnet-v1"] = 0.5
        admin.save_config()
        assert admin.model().threshold == 0.5
        events = [e for e in vault.audit_tail(5)
                  if e["action"] == "config.save" and e["outcome"] == "ok"]
        assert [e["detail"]["phase"] for e in events] == ["begin", "end"]
    with reopen_vault(home) as vault:
        assert vault.model().threshold == 0.5
    assert VaultConfig.load(home).thresholds == {"dlib-resnet-v1": 0.5}


@pytest.mark.parametrize("thresholds", [
    {"dlib-resnet-v1": 100.0}, {"dlib-resnet-v1": 0.61}, {"dlib-resnet-v1": 0.0},
    {"dlib-resnet-v1": float("nan")}, {"dlib-resnet-v1": True}, {"no-such-model": 0.3},
])
def test_thresholds_are_bounded_per_model(vault: Vault, thresholds: dict[str, Any]) -> None:
    admin = vault.as_key(vault_keys(vault.home).admin)
    before = (vault.home / "vault.json").read_bytes()
    admin.config.thresholds.clear()
    admin.config.thresholds.update(thresholds)
    with pytest.raises(InvalidInput, match="threshold"):
        admin.save_config()
    assert (vault.home / "vault.json").read_bytes() == before  # nothing written


@pytest.mark.parametrize(("metric", "threshold"), [("cosine", 1.5), ("euclidean", 2.0)])
def test_an_extra_model_cannot_declare_a_meaningless_threshold(
        vault: Vault, metric: str, threshold: float) -> None:
    admin = vault.as_key(vault_keys(vault.home).admin)
    admin.config.extra_models.append({"model_id": "wide", "dimension": 512, "metric": metric,
                                      "threshold": threshold})
    with pytest.raises(InvalidInput, match="threshold at most"):
        admin.save_config()


def test_a_tampered_signed_copy_is_refused(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    with sqlite3.connect(keys / AUDIT_STATE_FILE) as conn:
        (text,) = conn.execute("SELECT value FROM settings WHERE key = 'vault_config'").fetchone()
        document = json.loads(text)
        document["config"]["thresholds"] = {"dlib-resnet-v1": 100.0}
        conn.execute("UPDATE settings SET value = ? WHERE key = 'vault_config'",
                     (json.dumps(document),))
    conn.close()
    edit_config(home, thresholds={"dlib-resnet-v1": 100.0})  # both sides agree, MAC does not
    with pytest.raises(IntegrityFailure, match="fails its MAC"):
        reopen_vault(home)


def test_a_loose_threshold_in_the_file_no_longer_makes_strangers_match(
        vault_dirs: tuple[Path, Path]) -> None:
    """The attack of the issue: threshold 100 in vault.json made any face match."""
    home, keys = vault_dirs
    alice, stranger = random_encodings(2, seed=5)
    with make_vault(home, keys) as vault:
        vault.enroll("alice", [alice])
        assert not vault.verify("alice", stranger).match
    edit_config(home, thresholds={"dlib-resnet-v1": 100.0})
    with pytest.raises(IntegrityFailure):
        reopen_vault(home)


def test_an_edited_vault_json_is_refused_on_postgres_too(tmp_path: Path, pg_app_url: str) -> None:
    home = tmp_path / "v"
    make_vault(home, tmp_path / "k", store_url=pg_app_url).close()
    original = edit_config(home, thresholds={"dlib-resnet-v1": 100.0})
    with pytest.raises(IntegrityFailure, match="thresholds"):
        reopen_vault(home)
    restore_config(home, original)
    reopen_vault(home).close()


def test_a_tenant_policy_written_without_the_vaults_key_is_refused(
        vault_dirs: tuple[Path, Path]) -> None:
    """The per-tenant policy lives in the store: a copy from another tenant, or one written
    with a plausible value but no MAC, is refused; the vault's own write is accepted."""
    home, keys = vault_dirs
    probe = random_encodings(1, seed=6)[0]
    with make_vault(home, keys) as vault:
        vault.enroll("alice", [probe], tenant="a")
        vault.enroll("alice", [probe], tenant="b")
        admin = vault.as_key(vault_keys(home).admin)
        admin.set_tenant_policy("a", thresholds={"dlib-resnet-v1": 0.3})
        assert vault.verify("alice", probe, tenant="a").match
    with sqlite3.connect(home / "templates.db") as conn:
        (signed,) = conn.execute("SELECT value FROM meta WHERE key = 'tenant_policy:a'"
                                 ).fetchone()
        conn.execute("INSERT INTO meta VALUES ('tenant_policy:b', ?)", (signed,))
    conn.close()
    with reopen_vault(home) as vault:
        assert vault.verify("alice", probe, tenant="a").match
        with pytest.raises(IntegrityFailure, match="policy of tenant 'b'"):
            vault.verify("alice", probe, tenant="b")
    unsigned = json.dumps({"disclosure": "band", "thresholds": {"dlib-resnet-v1": 0.5}})
    with sqlite3.connect(home / "templates.db") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'tenant_policy:a'", (unsigned,))
    conn.close()
    with reopen_vault(home) as vault, pytest.raises(IntegrityFailure):
        vault.verify("alice", probe, tenant="a")
