"""API keys: shown once, stored as a hash, compared in constant time; refusals audited."""

from __future__ import annotations

import base64
import hmac
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceseal.access import apikeys
from faceseal.access.apikeys import generate_api_key, parse_api_key
from faceseal.audit.chain import AuditKey
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from faceseal.vault import Vault

from .conftest import TEST_ROLES, make_vault, random_encodings, reopen_vault, vault_keys

KEY_FORMAT = re.compile(r"\Afsk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\Z")


@pytest.fixture
def vault(vault_dirs: tuple[Path, Path]) -> Vault:
    home, keys = vault_dirs
    created = make_vault(home, keys)
    created.enroll("alice", [random_encodings(1)[0]])
    return created


def _last_events(vault: Vault, count: int) -> list[dict[str, object]]:
    # Read with the test principal (an all-tenant auditor); its own read comes after these.
    return vault.audit_tail(count)


def test_keys_are_high_entropy_self_identifying_and_distinct() -> None:
    issued = [generate_api_key() for _ in range(2000)]
    texts = [k.reveal() for k in issued]
    assert all(KEY_FORMAT.match(t) for t in texts)
    assert len(set(texts)) == len(texts)
    assert len({k.key_id for k in issued}) == len(issued)
    secrets = [base64.urlsafe_b64decode(t.split("_", 2)[2] + "=") for t in texts]
    assert all(len(s) == 32 for s in secrets)  # 256 bits from the CSPRNG
    # A crude look at the randomness: every byte value appears, roughly uniformly.
    counts = np.bincount(np.frombuffer(b"".join(secrets), dtype=np.uint8), minlength=256)
    assert counts.min() > 0.6 * counts.mean()
    assert counts.max() < 1.4 * counts.mean()


def test_keys_never_print_themselves() -> None:
    issued = generate_api_key()
    text = issued.reveal()
    parsed = parse_api_key(text)
    assert parsed is not None
    for shown in (repr(issued), str(issued), repr(parsed), str(parsed)):
        assert text.split("_", 2)[2] not in shown
    with pytest.raises(TypeError):
        pickle.dumps(parsed.secret)


def test_the_stored_hash_does_not_reveal_the_key(vault: Vault, vault_dirs: tuple[Path, Path]
                                                 ) -> None:
    home, keys = vault_dirs
    created = vault.add_principal("door", ["verifier"])
    secret = created.api_key.split("_", 2)[2]
    with sqlite3.connect(home / "templates.db") as conn:
        stored = conn.execute("SELECT key_id, key_hash FROM principals WHERE name = 'door'"
                              ).fetchone()
    assert stored[0] == created.principal.key_id
    assert len(stored[1]) == 32  # a SHA-256 digest, not the 32-byte secret itself
    raw_secret = base64.urlsafe_b64decode(secret + "=")
    assert stored[1] != raw_secret
    # The key appears nowhere in any file of the vault or its key directory, in any encoding.
    forms = [created.api_key.encode(), secret.encode(), raw_secret, raw_secret.hex().encode(),
             base64.b64encode(raw_secret).rstrip(b"=")]
    for path in [*home.rglob("*"), *keys.rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            assert not any(form in content for form in forms), path.name
    # And the hash is no credential: presenting it (in any form) is refused.
    as_secret = base64.urlsafe_b64encode(stored[1]).decode().rstrip("=")
    for fake in (stored[1].hex(), f"fsk_{stored[0]}_{as_secret}"):
        with pytest.raises(AuthenticationFailed):
            vault.as_key(fake)


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch, vault: Vault) -> None:
    """Known id with a wrong secret, and an unknown id, both end in one compare_digest of two
    32-byte hashes: no early exit that a timing attack could measure."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    good = vault.add_principal("door", ["verifier"])
    wrong_secret = good.api_key[:-4] + ("AAAA" if not good.api_key.endswith("AAAA") else "BBBB")
    unknown_id = "fsk_" + "0" * 16 + "_" + good.api_key.split("_", 2)[2]
    for key in (wrong_secret, unknown_id):
        calls.clear()
        with pytest.raises(AuthenticationFailed):
            vault.as_key(key)
        assert calls == [(32, 32)]
    calls.clear()
    vault.as_key(good.api_key)
    # The hash, then (only for a matching key) the row's 4+32-byte MAC.
    assert calls == [(32, 32), (36, 36)]


MALFORMED = {
    "empty": "",
    "spaces": "   ",
    "garbage": "let me in",
    "prefix only": "fsk_",
    "short secret": "fsk_0123456789abcdef_" + "A" * 42,
    "long secret": "fsk_0123456789abcdef_" + "A" * 44,
    "upper-case id": "fsk_0123456789ABCDEF_" + "A" * 43,
    "other prefix": "sk_0123456789abcdef_" + "A" * 43,
    "bad character": "fsk_0123456789abcdef_" + "A" * 42 + "!",
    "newline inside": "fsk_0123456789abcdef\n_" + "A" * 43,
}


@pytest.mark.parametrize("key", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_keys_are_refused_and_audited(vault: Vault, key: str) -> None:
    with pytest.raises(AuthenticationFailed) as refused:
        vault.as_key(key)
    assert key.strip() == "" or key not in str(refused.value)
    event = _last_events(vault, 1)[-1]
    assert (event["action"], event["outcome"], event["principal"]) == (
        "authenticate", "unauthenticated", "-")
    assert event["detail"]["reason"] in ("malformed key", "no key")
    assert "key_id" not in event["detail"]  # nothing of a malformed key is recorded


def test_an_unknown_key_is_refused_and_audited_with_its_public_id_only(vault: Vault) -> None:
    stranger = generate_api_key().reveal()
    with pytest.raises(AuthenticationFailed):
        Vault.open(vault.home, api_key=stranger)
    event = _last_events(vault, 1)[-1]
    key_id, secret = stranger.split("_")[1], stranger.split("_", 2)[2]
    assert (event["action"], event["outcome"]) == ("authenticate", "unauthenticated")
    assert event["detail"] == {"reason": "unknown key", "key_id": key_id}
    assert secret not in str(vault.audit_tail(10))


def test_a_revoked_key_is_refused_at_once_everywhere_and_audited(vault: Vault) -> None:
    door = vault.add_principal("door", ["verifier"])
    view = vault.as_key(door.api_key)
    probe = random_encodings(1)[0]
    assert view.verify("alice", probe).match
    revoked = vault.revoke_principal("door")
    assert revoked.revoked_at is not None
    # The view bound before the revocation is refused on its next call ...
    with pytest.raises(AuthenticationFailed):
        view.verify("alice", probe)
    event = _last_events(vault, 1)[-1]
    assert (event["principal"], event["action"], event["outcome"], event["subject_id"]) == (
        "door", "verify", "unauthenticated", "alice")
    assert event["detail"]["reason"] == "revoked key"
    # ... and so are new bindings, through the API and on opening.
    with pytest.raises(AuthenticationFailed):
        vault.as_key(door.api_key)
    with pytest.raises(AuthenticationFailed):
        reopen_vault(vault.home, api_key=door.api_key)
    assert [e["detail"]["reason"] for e in _last_events(vault, 2)] == ["revoked key"] * 2
    listed = {p.name: p for p in vault.principals()}
    assert not listed["door"].active


def test_no_key_means_every_operation_is_refused_and_audited(vault: Vault) -> None:
    with Vault.open(vault.home) as unbound:
        assert unbound.principal is None
        with pytest.raises(AuthenticationFailed, match="--key-file"):
            unbound.verify("alice", random_encodings(1)[0])
        with pytest.raises(AuthenticationFailed):
            unbound.subjects()
    events = _last_events(vault, 2)
    assert [(e["action"], e["outcome"], e["detail"]["reason"]) for e in events] == [
        ("verify", "unauthenticated", "no key"), ("subjects", "unauthenticated", "no key")]


def test_the_bootstrap_admin_key_is_shown_once(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with Vault.create(home, keyring_dir=keys) as created:
        key = created.bootstrap_admin_key
        assert key is not None
        assert KEY_FORMAT.match(key)
        assert created.principal is not None
        assert created.principal.name == "admin"
        assert created.principal.tenant is None
    with Vault.open(home, api_key=key) as reopened:
        assert reopened.bootstrap_admin_key is None
        assert reopened.as_key(key).bootstrap_admin_key is None
        assert [p.name for p in reopened.principals()] == ["admin"]
        # There is exactly one way in: this key. Bootstrapping again is refused.
        with pytest.raises(Conflict):
            Vault.bootstrap_admin(home)


def test_views_share_the_vault_but_not_the_principal(vault: Vault) -> None:
    door = vault.as_key(vault.add_principal("door", ["verifier"]).api_key, request_id="req-42")
    assert door.principal is not None
    assert door.principal.name == "door"
    assert vault.principal is not None
    assert vault.principal.name == "test-worker"
    door.verify("alice", random_encodings(1)[0])
    event = _last_events(vault, 1)[-1]
    assert (event["principal"], event["request_id"]) == ("door", "req-42")
    door.close()  # closing a view leaves the vault open
    assert vault.subjects()
    vault.close()  # closing the vault closes its views
    with pytest.raises(InvalidInput, match="closed"):
        door.subjects()


PRINCIPAL_INPUTS = {
    "empty name": ("", ["verifier"], {}, InvalidInput),
    "name with space": ("a b", ["verifier"], {}, InvalidInput),
    "name too long": ("a" * 65, ["verifier"], {}, InvalidInput),
    "name with slash": ("a/b", ["verifier"], {}, InvalidInput),
    "unknown role": ("x", ["superuser"], {}, InvalidInput),
    "no role": ("x", [], {}, InvalidInput),
    "tenant and all": ("x", ["verifier"], {"tenant": "t", "all_tenants": True}, InvalidInput),
    "control char tenant": ("x", ["verifier"], {"tenant": "t\x00"}, InvalidInput),
    "name taken": ("test-worker", ["verifier"], {}, Conflict),
}


@pytest.mark.parametrize(("name", "roles", "options", "error"), PRINCIPAL_INPUTS.values(),
                         ids=list(PRINCIPAL_INPUTS))
def test_bad_principal_input_is_refused_and_changes_nothing(
        vault: Vault, name: str, roles: list[str], options: dict[str, object],
        error: type[Exception]) -> None:
    before = vault.principals()
    with pytest.raises(error):
        vault.add_principal(name, roles, **options)  # type: ignore[arg-type]
    assert vault.principals() == before


@pytest.mark.parametrize("name", ["nobody", "already-revoked"])
def test_bad_revocations_are_refused_audited_and_change_nothing(vault: Vault, name: str) -> None:
    vault.add_principal("already-revoked", ["verifier"])
    vault.revoke_principal("already-revoked")
    before = vault.principals()
    with pytest.raises(NotFound):
        vault.revoke_principal(name)
    assert vault.principals() == before
    event = _last_events(vault, 2)[0]
    assert (event["action"], event["outcome"]) == ("principals.revoke", "failed")
    assert event["detail"] == {"target": name, "error": "not_found"}


def test_the_last_all_tenant_admin_cannot_be_revoked(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    with Vault.create(home, keyring_dir=keys) as admin:
        with pytest.raises(Conflict):
            admin.revoke_principal("admin")
        admin.add_principal("second-admin", ["admin"])
        admin.revoke_principal("admin")
        with pytest.raises(AuthenticationFailed):
            admin.subjects()


def test_the_worker_of_make_vault_is_what_helpers_promise(vault_dirs: tuple[Path, Path],
                                                          vault: Vault) -> None:
    assert vault.principal is not None
    assert vault.principal.tenant is None
    assert {r.value for r in vault.principal.roles} == set(TEST_ROLES)
    assert {"admin", "enroller", "verifier", "identifier", "auditor", "calibrator"} == set(
        TEST_ROLES)
    assert vault_keys(vault_dirs[0]).worker != vault_keys(vault_dirs[0]).admin


def test_audit_key_refuses_to_be_pickled_or_printed() -> None:
    key = AuditKey(SecretBytes(b"k" * 32), 1, b"v" * 16)
    assert "k" * 8 not in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_a_vault_from_before_principals_gets_its_first_admin_by_bootstrap(
        vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    # Make it look like a vault created before principals and audit keys existed.
    with sqlite3.connect(home / "templates.db") as conn:
        conn.execute("DROP TRIGGER audit_events_no_delete")
        conn.execute("DELETE FROM audit_events")
        conn.execute("DELETE FROM principals")
    for leftover in keys.glob("audit-state.db*"):
        leftover.unlink()
    with Vault.open(home) as unbound, pytest.raises(AuthenticationFailed):
        unbound.subjects()
    with Vault.bootstrap_admin(home, name="first") as admin:
        key = admin.bootstrap_admin_key
        assert key is not None
        assert [p.name for p in admin.principals()] == ["first"]
    with pytest.raises(Conflict):
        Vault.bootstrap_admin(home)
    with Vault.open(home, api_key=key) as admin:
        auditor = admin.as_key(admin.add_principal("aud", ["auditor"]).api_key)
        assert auditor.audit_verify().ok
