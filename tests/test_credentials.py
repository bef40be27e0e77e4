"""Credentials stay out of argv and out of a server's environment; data keys never travel to a
key server over plain HTTP off this machine unless the key URI says so on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceseal.client import FacesealClient
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput
from faceseal.keys.awskms import KmsUri
from faceseal.keys.transit import TransitUri
from faceseal.vault import Vault

from .conftest import invoke_cli, make_vault, vault_keys
from .http_server import start_server, stop_server, wait_healthy

PASSWORD = "hunter2-not-a-real-one"


@pytest.mark.parametrize("args", [
    ["init", "--store", "postgresql://app@127.0.0.1/db",
     "--admin-url", f"postgresql://admin:{PASSWORD}@127.0.0.1/db"],
    ["migrate", "--admin-url", f"postgresql://admin:{PASSWORD}@127.0.0.1/db"],
    ["db", "grant-app", "x", "--tenant", "t",
     "--admin-url", f"postgresql://admin@127.0.0.1/db?password={PASSWORD}",
     "--store", "postgresql://app@127.0.0.1/db"],
    ["import-legacy", "--source", f"postgresql://old:{PASSWORD}@127.0.0.1/legacy",
     "--legacy-key-env", "X"],
])
def test_passwords_on_the_command_line_are_refused_with_a_hint(tmp_path: Path,
                                                               args: list[str]) -> None:
    done = invoke_cli(*args, env={"FACESEAL_HOME": str(tmp_path / "v")})
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "~/.pgpass" in text
    assert PASSWORD not in text
    assert not (tmp_path / "v").exists()


def test_the_same_url_from_the_environment_is_not_refused_for_its_password(
        tmp_path: Path) -> None:
    done = invoke_cli("migrate", env={
        "FACESEAL_HOME": str(tmp_path / "none"),
        "FACESEAL_DB_ADMIN_URL": f"postgresql://admin:{PASSWORD}@127.0.0.1/db"})
    text = done.stdout + done.stderr
    assert "~/.pgpass" not in text  # it fails later, for want of a vault, not for the password
    assert PASSWORD not in text


@pytest.mark.parametrize("uri", [
    "vault-transit:http://bao.example:8200/transit/k",
    "vault-transit:http://10.0.0.5:8200/transit/k",
    "aws-kms:alias/k?region=eu-west-1&endpoint=http://kms.example",
])
def test_plain_http_to_a_remote_key_server_is_refused(uri: str) -> None:
    parse = TransitUri.parse if uri.startswith("vault-transit") else KmsUri.parse
    with pytest.raises(InvalidInput, match="insecure-http=yes"):
        parse(uri)
    separator = "&" if "?" in uri else "?"
    accepted = parse(uri + separator + "insecure-http=yes")
    assert accepted.insecure_http
    assert "insecure-http=yes" in accepted.canonical()  # kept in vault.json, shown by status


@pytest.mark.parametrize("uri", [
    "vault-transit:http://127.0.0.1:8200/transit/k",
    "vault-transit:http://localhost:8200/transit/k",
    "vault-transit:http://[::1]:8200/transit/k",
    "vault-transit:https://bao.example:8200/transit/k",
    "aws-kms:alias/k?region=eu-west-1&endpoint=http://127.0.0.1:5000",
    "aws-kms:alias/k?region=eu-west-1&endpoint=https://kms.example",
    "aws-kms:alias/k?region=eu-west-1",
])
def test_https_and_loopback_need_no_opt_in(uri: str) -> None:
    parse = TransitUri.parse if uri.startswith("vault-transit") else KmsUri.parse
    parsed = parse(uri)
    assert not parsed.insecure_http
    assert "insecure-http" not in parsed.canonical()


@pytest.mark.slow
def test_a_server_removes_the_passphrase_from_its_environment(tmp_path: Path) -> None:
    passphrase = "correct horse battery staple 42"

    def source() -> SecretBytes:
        return SecretBytes(passphrase.encode())

    home = tmp_path / "vault"
    make_vault(home, tmp_path / "keys", passphrase=source).close()
    with Vault.open(home, api_key=vault_keys(home).admin, passphrase=source) as admin:
        key = admin.add_principal("e", ["enroller"], tenant="acme").api_key
    # Dumps on, so that /proc/PID/environ stays readable to a non-root test user too.
    process, url = start_server(home, tmp_path / "serve.log",
                                env={"FACESEAL_PASSPHRASE": passphrase,
                                     "FACESEAL_ALLOW_CORE_DUMPS": "1"})
    try:
        wait_healthy(url, process)
        with FacesealClient(url, key) as enroller:
            assert enroller.subjects(tenant="acme") == []  # the sealed keyring was opened
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
    finally:
        stop_server(process)
    assert passphrase.encode() not in environ


def test_init_refuses_plain_http_to_a_remote_key_server_without_the_flag(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1: nothing answers there.
    uri = "vault-transit:http://192.0.2.1:8200/transit/k?timeout=0.5&token-source=env:BAO_T"
    env = {"FACESEAL_HOME": str(tmp_path / "v"), "BAO_T": "t"}
    refused = invoke_cli("init", "--keyring-dir", str(tmp_path / "k"), "--key-uri", uri, env=env)
    assert refused.returncode == 2
    assert "insecure-http=yes" in refused.stdout + refused.stderr
    flagged = invoke_cli("init", "--keyring-dir", str(tmp_path / "k"), "--key-uri", uri,
                         "--insecure-key-server", env=env)
    # Past the check: now it is the unreachable server that stops it.
    assert flagged.returncode == 5, flagged.stdout + flagged.stderr
    assert "unreachable" in flagged.stdout + flagged.stderr
    assert not (tmp_path / "v" / "vault.json").exists()
