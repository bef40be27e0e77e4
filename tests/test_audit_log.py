"""What the audit log records, what it never records, and its checkpoints."""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceseal.access.roles import KEYS_ROTATE, KEYS_STATUS
from faceseal.audit import AUDIT_STATE_FILE, AuditEvent, Checkpoint, verify_chain
from faceseal.audit.state import AuditState, audit_key_context
from faceseal.errors import (
    AccessDenied,
    InvalidInput,
    KeyProviderUnavailable,
    KeyringError,
    NotFound,
)
from faceseal.keys.datakeys import dek_context
from faceseal.keys.local import KEYRING_FILE, LocalKeyring
from faceseal.keys.subject_keys import SUBJECT_KEYS_FILE
from faceseal.storage.sqlite import SQLiteStore
from faceseal.vault import Vault

from .conftest import EncodingOf, make_vault, random_encodings, run_cli, vault_keys

HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")


def test_each_operation_records_who_what_where_and_how(vault: Vault,
                                                       encoding_of: EncodingOf) -> None:
    enrolled = vault.enroll("obama", [encoding_of("obama-1.jpg"), encoding_of("obama-2.jpg")])
    verified = vault.verify("obama", encoding_of("obama-3.jpg"))
    found = vault.identify(encoding_of("obama-3.jpg"))
    with pytest.raises(NotFound):
        vault.verify("nobody", encoding_of("obama-3.jpg"))
    assert vault.erase("obama").templates_erased == 2
    events = vault.audit_tail(5)
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("enroll", "ok"), ("verify", "ok"), ("identify", "ok"), ("verify", "failed"),
        ("erase", "ok")]
    for event in events:
        assert event["principal"] == "test-worker"
        assert event["tenant"] == "default"
        assert HEX32.match(event["request_id"])
        assert HEX32.match(event["event_id"])
        assert event["time"].endswith("Z")
    assert len({e["request_id"] for e in events}) == 5
    enroll, verify, identify, failed, erase = events
    assert (enroll["role"], enroll["subject_id"], enroll["template_ids"]) == (
        "enroller", "obama", enrolled.template_ids)
    assert (verify["role"], verify["subject_id"], verify["template_ids"]) == (
        "verifier", "obama", [verified.template_id])
    assert verify["detail"]["match"] is True
    assert verify["detail"]["threshold"] == verified.threshold
    assert identify["role"] == "identifier"
    assert identify["subject_id"] == "obama"
    assert identify["template_ids"] == [c.template_id for c in found.candidates]
    assert identify["detail"]["subjects"] == ["obama"]
    assert (failed["subject_id"], failed["detail"]) == ("nobody", {"error": "not_found"})
    assert sorted(erase["template_ids"]) == sorted(enrolled.template_ids)


@pytest.mark.parametrize("detail", [
    {"encoding": [0.1, -0.2, 0.3]},
    {"encoding": np.zeros(128)},
    {"key": b"\x00" * 32},
    {"nested": {"a": "b"}},
    {"long": "x" * 3000},
    {"nan": float("nan")},
    {"many": ["id"] * 1001},
], ids=["float list", "array", "bytes", "nested", "long string", "nan", "long list"])
def test_event_details_refuse_what_could_carry_an_encoding_or_key(detail: dict[str, object]
                                                                  ) -> None:
    with pytest.raises(ValueError, match="audit detail"):
        AuditEvent("p", "r", "verify", "ok", detail=detail).to_record(  # type: ignore[arg-type]
            1, b"", lambda _record: b"")


def test_the_largest_events_fit(vault: Vault) -> None:
    """identify returning 100 subjects with 256-character ids, and a denial naming two
    256-character tenants, are recorded whole."""
    long_ids = [f"{i:03d}" + "x" * 253 for i in range(100)]
    for subject_id, encoding in zip(long_ids, random_encodings(100, seed=9), strict=True):
        vault.enroll(subject_id, [encoding], tenant="t" * 256)
    # The test principal is a calibrator: every top-k candidate is shown, matching or not.
    found = vault.identify(random_encodings(1, seed=10)[0], tenant="t" * 256, top_k=100)
    assert len(found.candidates) == 100
    event = vault.audit_tail(1)[-1]
    assert sorted(event["detail"]["subjects"]) == long_ids
    scoped = vault.as_key(vault.add_principal("scoped", ["verifier"], tenant="a" * 256).api_key)
    with pytest.raises(AccessDenied):
        scoped.verify(long_ids[0], random_encodings(1)[0], tenant="t" * 256)
    assert vault.audit_tail(1)[-1]["outcome"] == "denied"
    assert vault.audit_verify().ok


@pytest.mark.parametrize("request_id", ["", "has space", "new\nline", "x" * 129, "é"])
def test_bad_request_ids_are_refused(vault: Vault, request_id: str) -> None:
    key = vault_keys(vault.home).worker
    with pytest.raises(InvalidInput, match="request id"):
        vault.as_key(key, request_id=request_id)


def test_unknown_outcomes_are_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent("p", "r", "verify", "maybe")


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could show up in text or bytes."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(),
            base64.b64encode(secret).rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"=")]


def _float_forms(encodings: list[np.ndarray]) -> list[bytes]:
    forms: list[bytes] = []
    for encoding in encodings:
        forms.append(encoding.astype("<f8").tobytes()[:64])
        forms.append(encoding.astype("<f4").tobytes()[:32])
        forms.append(encoding.astype("<f8").tobytes()[:64].hex().encode())
        forms.extend(repr(float(v)).encode() for v in encoding)
        forms.extend(repr(float(np.float32(v))).encode() for v in encoding)
    return forms


def test_audit_log_export_and_logs_hold_no_encoding_and_no_key_material(
        tmp_path: Path, encoding_of: EncodingOf, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="faceseal")
    home, keys = tmp_path / "vault", tmp_path / "keys"
    encodings = [encoding_of(n) for n in ("obama-1.jpg", "obama-2.jpg", "biden-1.jpg",
                                          "obama-3.jpg", "biden-2.jpg")]
    with make_vault(home, keys) as vault:
        extra = vault.add_principal("door", ["verifier"]).api_key
        vault.enroll("obama", encodings[:2])
        vault.enroll("biden", [encodings[2]])
        vault.verify("obama", encodings[3])
        vault.as_key(extra).verify("biden", encodings[4])
        vault.identify(encodings[3])
        vault.identify(encodings[4], threshold=0.3)
        vault.erase("biden")
        vault.audit_verify()
        keyset_id = vault.config.keyset_id
    api_keys = [vault_keys(home).admin, vault_keys(home).worker, extra]

    # Every key there is: KEKs, data keys, subject secrets, the audit key, API keys.
    keyring = LocalKeyring.open(keys)
    document = json.loads((keys / KEYRING_FILE).read_text())
    secrets = [bytes.fromhex(k["key"]) for k in document["keys"]["keks"]]
    with sqlite3.connect(home / "templates.db") as conn:
        for version, wrapped in conn.execute("SELECT version, wrapped FROM data_keys"):
            secrets.append(keyring.unwrap(bytes(wrapped), dek_context(keyset_id, version)).reveal())
        audit_rows = conn.execute("SELECT * FROM audit_events").fetchall()
    with sqlite3.connect(keys / SUBJECT_KEYS_FILE) as conn:
        secrets += [bytes(s) for (s,) in conn.execute("SELECT secret FROM subject_secrets")]
    state = AuditState.open(keys, json.loads((home / "vault.json").read_text())["vault_id"])
    for version, wrapped in state.wrapped_keys().items():
        secrets.append(keyring.unwrap(wrapped, audit_key_context(keyset_id, version)).reveal())
    state.close()
    assert len(secrets) >= 4
    forbidden = [f for s in secrets for f in _forms(s)]
    forbidden += [k.encode() for k in api_keys] + [k.split("_", 2)[2].encode() for k in api_keys]
    forbidden += _float_forms(encodings)

    env = {"FACESEAL_HOME": str(home), "FACESEAL_API_KEY": vault_keys(home).worker}
    exported = run_cli("audit", "export", "--debug", env=env)
    tailed = run_cli("audit", "tail", "-n", "1000", "--json", "--debug", env=env)
    assert exported.returncode == 0, exported.stderr
    assert tailed.returncode == 0, tailed.stderr
    assert len(exported.stdout.splitlines()) >= 12

    raw_log = b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for row in audit_rows for value in row)
    places = {
        "audit table": raw_log,
        "audit export": exported.stdout.encode() + exported.stderr.encode(),
        "audit tail": tailed.stdout.encode() + tailed.stderr.encode(),
        "log records": caplog.text.encode(),
    }
    for place, content in places.items():
        leaks = [f for f in forbidden if f in content]
        assert not leaks, f"{place} holds secret or encoding material"


def test_a_checkpoint_of_the_head_is_kept_in_the_key_directory(vault_dirs: tuple[Path, Path]
                                                               ) -> None:
    home, keys = vault_dirs
    with make_vault(home, keys) as vault:
        vault.enroll("a", [random_encodings(1)[0]])
        vault_id = vault.vault_id
    state = AuditState.open(keys, vault_id)
    try:
        latest = state.latest_checkpoint()
        assert latest is not None
        with sqlite3.connect(home / "templates.db") as conn:
            head, mac = conn.execute(
                "SELECT seq, mac FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        assert (latest.seq, latest.mac) == (head, bytes(mac))
        # Checkpoints only move forward.
        assert not state.add_checkpoint(Checkpoint(head - 1, b"x", 0.0, b"y"))
        assert state.latest_checkpoint() == latest
    finally:
        state.close()
    assert not (home / AUDIT_STATE_FILE).exists()  # never beside the log


def test_a_missing_audit_key_is_an_error_not_a_new_key(vault_dirs: tuple[Path, Path]) -> None:
    home, keys = vault_dirs
    make_vault(home, keys).close()
    (keys / AUDIT_STATE_FILE).rename(keys / "elsewhere.db")
    with pytest.raises(Exception, match="audit key is missing"):
        Vault.open(home, api_key=vault_keys(home).worker)
    assert not (keys / AUDIT_STATE_FILE).exists()


def test_the_audit_key_is_bound_to_its_vault(tmp_path: Path) -> None:
    first = make_vault(tmp_path / "v1", tmp_path / "k1")
    second = make_vault(tmp_path / "v2", tmp_path / "k2")
    first.close()
    second.close()
    (tmp_path / "k2" / AUDIT_STATE_FILE).unlink()
    for suffix in ("", "-wal", "-shm"):
        source = tmp_path / "k1" / (AUDIT_STATE_FILE + suffix)
        if source.exists():
            (tmp_path / "k2" / (AUDIT_STATE_FILE + suffix)).write_bytes(source.read_bytes())
    with pytest.raises(Exception, match="another vault"):
        Vault.open(tmp_path / "v2", api_key=vault_keys(tmp_path / "v2").worker)


def test_the_audit_key_moves_with_a_provider_change(tmp_path: Path) -> None:
    """Rewrapping the audit key under another KEK (rotation, or another provider) keeps every
    MAC verifiable; the old provider is no longer needed."""
    home, keys = tmp_path / "vault", tmp_path / "keys"
    make_vault(home, keys).close()
    config = json.loads((home / "vault.json").read_text())
    keyset_id = bytes.fromhex(config["vault_id"])
    old = LocalKeyring.open(keys)
    new = LocalKeyring.create(tmp_path / "other-keys")
    state = AuditState.open(keys, config["vault_id"])
    try:
        before = state.wrapped_keys()
        assert state.rewrap(old, new, keyset_id) == 1
        assert state.wrapped_keys() != before
        with pytest.raises(KeyringError, match="does not match"):
            state.load_keys(old, keyset_id)
        moved = state.load_keys(new, keyset_id)
        store = SQLiteStore(home / "templates.db")
        try:
            report = verify_chain(store.audit_events(), moved, state.checkpoints())
        finally:
            store.close()
        assert report.ok, report.problem
    finally:
        state.close()


def test_key_operations_added_later_are_audited_before_and_after(vault: Vault) -> None:
    result = vault._run_audited(KEYS_STATUS, lambda: {"versions": 1},
                                describe=lambda r: {"versions": r["versions"]})
    assert result == {"versions": 1}
    begin, end = vault.audit_tail(2)
    assert (begin["action"], begin["detail"], end["detail"]) == (
        "keys.status", {"phase": "begin"}, {"phase": "end", "versions": 1})

    def broken() -> None:
        raise KeyProviderUnavailable("the HSM is unplugged")

    with pytest.raises(KeyProviderUnavailable):
        vault._run_audited(KEYS_ROTATE, broken)
    begin, failed = vault.audit_tail(2)
    assert (begin["outcome"], failed["outcome"], failed["detail"]["error"]) == (
        "ok", "failed", "key_provider_unavailable")
    verifier = vault.as_key(vault.add_principal("v", ["verifier"]).api_key)
    ran: list[int] = []
    with pytest.raises(AccessDenied):
        verifier._run_audited(KEYS_ROTATE, lambda: ran.append(1))
    assert ran == []
