"""The key-provider contract, run on every provider: the local keyring, a SoftHSM2 token, an
OpenBao transit engine and the moto KMS emulator (all real, on loopback, started by fixtures).

Failures must be the right ones: a blob that does not open is the opaque DecryptionError; a
provider that cannot be reached is KeyProviderUnavailable; a credential the operator can fix is
KeyringError. Never one for the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faceseal.crypto.aead import generate_key
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import (
    DecryptionError,
    FacesealError,
    InvalidInput,
    KeyProviderUnavailable,
    KeyringError,
)
from faceseal.keys.datakeys import dek_context
from faceseal.keys.provider import KeyProvider
from faceseal.keys.registry import create_provider, open_provider

from .keyservers import (
    BAO_TOKEN_ENV,
    PIN_ENV,
    SOFTHSM_MODULE,
    HsmSetup,
    KeyBackend,
    MotoKms,
    OpenBao,
    free_port,
    unique,
)

KEYSET = bytes(range(16))
CONTEXT = dek_context(KEYSET, 1)


@pytest.fixture
def uri(key_backend: KeyBackend) -> str:
    return key_backend.new_uri()


@pytest.fixture
def provider(uri: str) -> Iterator[KeyProvider]:
    created = create_provider(uri)
    yield created
    created.close()


def test_wrap_unwrap_round_trip(provider: KeyProvider) -> None:
    key = generate_key()
    blob = provider.wrap(key, CONTEXT)
    assert key.reveal() not in blob
    assert provider.unwrap(blob, CONTEXT) == key
    fresh, fresh_blob = provider.generate_data_key(CONTEXT)
    assert len(fresh) == 32
    assert provider.unwrap(fresh_blob, CONTEXT) == fresh


@pytest.mark.parametrize("context", [
    dek_context(KEYSET, 2),                 # another data-key version
    dek_context(bytes(16), 1),              # another vault
    b"",
    CONTEXT + b"\x00",
], ids=["other-version", "other-vault", "empty", "extended"])
def test_wrong_context_is_the_opaque_error(provider: KeyProvider, context: bytes) -> None:
    blob = provider.wrap(generate_key(), CONTEXT)
    with pytest.raises(DecryptionError) as caught:
        provider.unwrap(blob, context)
    assert str(caught.value) == DecryptionError.MESSAGE


def _flip(index: int) -> Callable[[bytes], bytes]:
    def tamper(blob: bytes) -> bytes:
        position = index % len(blob)
        return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1:]
    return tamper


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "magic": _flip(0),
    "kek-version": _flip(5),
    "body-early": _flip(12),
    "body-middle": lambda blob: _flip(len(blob) // 2)(blob),
    "last-byte": _flip(-1),
    "truncated-by-one": lambda blob: blob[:-1],
    "truncated-to-half": lambda blob: blob[: len(blob) // 2],
    "header-only": lambda blob: blob[:6],
    "extended": lambda blob: blob + b"A",
    "empty": lambda blob: b"",
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS), ids=list(TAMPERINGS))
def test_tampered_blob_is_the_opaque_error(provider: KeyProvider, tampering: str) -> None:
    blob = provider.wrap(generate_key(), CONTEXT)
    tampered = TAMPERINGS[tampering](blob)
    assert tampered != blob
    with pytest.raises(DecryptionError) as caught:
        provider.unwrap(tampered, CONTEXT)
    assert str(caught.value) == DecryptionError.MESSAGE


def test_rotate_keeps_old_blobs_readable(provider: KeyProvider, uri: str) -> None:
    key = generate_key()
    old_blob = provider.wrap(key, CONTEXT)
    old_version = provider.kek_version_of(old_blob)
    assert old_version == provider.describe().active_version
    new_version = provider.rotate()
    assert new_version > old_version
    status = provider.describe()
    assert status.active_version == new_version
    assert {old_version, new_version} <= set(status.kek_versions)
    new_blob = provider.wrap(key, CONTEXT)
    assert provider.kek_version_of(new_blob) == new_version
    assert provider.unwrap(old_blob, CONTEXT) == key
    rewrapped = provider.rewrap(old_blob, CONTEXT)
    assert provider.kek_version_of(rewrapped) == new_version
    assert provider.unwrap(rewrapped, CONTEXT) == key
    # A fresh connection (another process, say) reads every version too.
    again = open_provider(uri)
    try:
        assert again.unwrap(old_blob, CONTEXT) == key
        assert again.unwrap(new_blob, CONTEXT) == key
    finally:
        again.close()


def test_unwrap_many_answers_each_item(provider: KeyProvider) -> None:
    keys = [generate_key() for _ in range(3)]
    blobs = [provider.wrap(k, dek_context(KEYSET, i)) for i, k in enumerate(keys)]
    results = provider.unwrap_many([
        (blobs[0], dek_context(KEYSET, 0)),
        (blobs[1], dek_context(KEYSET, 99)),      # wrong context
        (blobs[2], dek_context(KEYSET, 2)),
        (blobs[2][:-1], dek_context(KEYSET, 2)),  # truncated
    ])
    assert results[0] == keys[0]
    assert results[1] is None
    assert results[2] == keys[2]
    assert results[3] is None


def test_nothing_secret_in_repr_or_status(provider: KeyProvider, key_backend: KeyBackend) -> None:
    shown = repr(provider) + repr(provider.describe())
    for name, value in key_backend.env.items():
        if "PIN" in name or "TOKEN" in name or "SECRET" in name:
            assert value not in shown


# --- provider unavailable, credentials wrong -----------------------------------------------------


def _closed_port_uri(kind: str, tmp_path: Path) -> str:
    port = free_port()  # nothing listens there
    if kind == "local":
        return f"local:{tmp_path / 'no-such-keyring'}"
    if kind == "pkcs11":
        return (f"pkcs11:token={unique('absent-token')};object=k?module-path={SOFTHSM_MODULE}"
                f"&pin-source=env:{PIN_ENV}")
    if kind == "vault-transit":
        return f"vault-transit:http://127.0.0.1:{port}/transit/k?token-source=env:{BAO_TOKEN_ENV}"
    return f"aws-kms:alias/k?region=us-east-1&endpoint=http://127.0.0.1:{port}&timeout=2"


def test_unreachable_provider_is_unavailable_not_a_bad_key(
    key_backend: KeyBackend, tmp_path: Path
) -> None:
    uri = _closed_port_uri(key_backend.kind, tmp_path)
    expected: type[FacesealError] = (KeyringError if key_backend.kind == "local"
                                     else KeyProviderUnavailable)
    with pytest.raises(expected) as caught:
        open_provider(uri)
    assert not isinstance(caught.value, DecryptionError)


def test_missing_pkcs11_module_is_unavailable(softhsm: HsmSetup) -> None:
    uri = (f"pkcs11:token={softhsm.token};object=k?module-path=/nonexistent/libpkcs11.so"
           f"&pin-source=env:{PIN_ENV}")
    with pytest.raises(KeyProviderUnavailable, match="module not found"):
        open_provider(uri)


def test_wrong_pin_is_a_keyring_error(softhsm: HsmSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    # The lonely token: no session of this process is logged in to it, so the token itself
    # checks the PIN.
    monkeypatch.setenv("FS_WRONG_PIN", "not-the-pin")
    uri = softhsm.hsm.uri(softhsm.lonely_token, unique("k"), pin_env="FS_WRONG_PIN")
    with pytest.raises(KeyringError, match="wrong PIN") as caught:
        create_provider(uri)
    assert "not-the-pin" not in str(caught.value)


def test_wrong_pin_refused_while_another_session_is_logged_in(
    softhsm: HsmSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    label = unique("k")
    first = create_provider(softhsm.hsm.uri(softhsm.token, label))
    try:
        monkeypatch.setenv("FS_WRONG_PIN", "not-the-pin")
        with pytest.raises(KeyringError, match="wrong PIN"):
            open_provider(softhsm.hsm.uri(softhsm.token, label, pin_env="FS_WRONG_PIN"))
    finally:
        first.close()


def test_missing_pin_variable_is_a_keyring_error(softhsm: HsmSetup) -> None:
    uri = softhsm.hsm.uri(softhsm.token, "k", pin_env=unique("UNSET_PIN_VAR").replace("-", "_"))
    with pytest.raises(KeyringError, match="not set"):
        open_provider(uri)


def test_wrong_transit_token_is_a_keyring_error(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_WRONG_TOKEN", "s.not-a-token")
    with pytest.raises(KeyringError, match="refused the token") as caught:
        create_provider(openbao.uri(unique("k"), token_env="FS_WRONG_TOKEN"))
    assert "s.not-a-token" not in str(caught.value)


def test_pin_file_source(softhsm: HsmSetup, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    uri = softhsm.hsm.uri(softhsm.token, unique("k")).replace(
        f"pin-source=env:{PIN_ENV}", f"pin-source=file:{pin_file}")
    provider = create_provider(uri)
    provider.close()
    pin_file.chmod(0o644)  # readable by others: refused, like ssh refuses a loose key
    with pytest.raises(KeyringError, match="accessible to other users"):
        open_provider(uri)


@pytest.mark.parametrize("uri", [
    "pkcs11:token=t;object=k;pin-value=1234?module-path=/x.so",
    "pkcs11:token=t;object=k?module-path=/x.so&pin-value=1234",
    "vault-transit:http://127.0.0.1:1/transit/k?token=s.abc",
    "vault-transit:http://user:pass@127.0.0.1:1/transit/k",
    "aws-kms:alias/k?aws_secret_access_key=abc",
], ids=["pkcs11-pin-attr", "pkcs11-pin-query", "transit-token", "transit-userinfo",
        "aws-secret"])
def test_credentials_in_a_uri_are_refused(uri: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        open_provider(uri)
    for secret in ("1234", "s.abc", "pass", "abc"):
        assert f"={secret}" not in str(caught.value)


@pytest.mark.parametrize(("uri", "message"), [
    ("gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k", "Google Cloud KMS is not supported"),
    ("azure-kv:https://v.vault.azure.net/keys/k", "Azure Key Vault is not supported"),
    ("rot13:whatever", "unsupported key provider scheme"),
    ("no-scheme", "not a key URI"),
    ("pkcs11:object=k?module-path=/x.so", "needs token="),
    ("vault-transit:ftp://h/transit/k", "looks like"),
    ("vault-transit:http://h:1/k", "needs /<mount>/<key name>"),
    ("aws-kms:alias/k?endpoint=file:///x", "http"),
    ("pkcs11:token=t;object=k?module-path=/x.so&pin-source=ask:me", "credential source"),
    ("aws-kms:alias/k?timeout=-1", "timeout"),
    ("aws-kms:alias/k?colour=blue", "unknown key URI parameter"),
], ids=["gcp", "azure", "unknown", "no-scheme", "pkcs11-no-token", "transit-scheme",
        "transit-no-mount", "aws-endpoint", "pin-source", "timeout", "unknown-param"])
def test_bad_uris_get_a_clear_error(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_provider(uri)


# --- an outage after the provider was opened ------------------------------------------------------


@pytest.fixture
def own_server(
    request: pytest.FixtureRequest, aws_env: dict[str, str]
) -> Iterator[OpenBao | MotoKms]:
    server: OpenBao | MotoKms = OpenBao() if request.param == "vault-transit" else MotoKms()
    yield server
    server.stop()


@pytest.mark.parametrize("own_server", ["vault-transit", "aws-kms"], indirect=True)
def test_outage_after_open_is_unavailable_then_recovers(
    own_server: OpenBao | MotoKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(own_server, OpenBao):
        monkeypatch.setenv("FS_OWN_TOKEN", own_server.token)
        uri = own_server.uri(unique("k"), token_env="FS_OWN_TOKEN", timeout=1)
    else:
        uri = own_server.uri(unique("k"), timeout=1)
    provider = create_provider(uri)
    key = generate_key()
    blob = provider.wrap(key, CONTEXT)
    with own_server.frozen():  # stopped: the port is open, nothing answers
        for attempt in (lambda: provider.unwrap(blob, CONTEXT),
                        lambda: provider.wrap(key, CONTEXT),
                        provider.rotate):
            with pytest.raises(KeyProviderUnavailable):
                attempt()
    assert provider.unwrap(blob, CONTEXT) == key  # back, and nothing was lost
    own_server.stop()  # gone: connection refused
    with pytest.raises(KeyProviderUnavailable):
        provider.unwrap(blob, CONTEXT)
    provider.close()


def test_key_material_type(provider: KeyProvider) -> None:
    key, _ = provider.generate_data_key(CONTEXT)
    assert isinstance(key, SecretBytes)
    assert "redacted" in repr(key)
