"""Record format v1: the byte layout is pinned, round trips are exact, every tamper fails alike."""

from __future__ import annotations

import copy
import hmac
import json
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceseal.crypto import AeadKey, RecordContext, SecretBytes, open_record, seal_record
from faceseal.crypto.aead import generate_key
from faceseal.crypto.derive import record_key, record_key_bytes
from faceseal.crypto.keywrap import kwp_unwrap, kwp_wrap, unwrap_key, wrap_key
from faceseal.crypto.record import OVERHEAD_BYTES, parse_header
from faceseal.errors import DecryptionError

from .conftest import VECTORS_DIR

# A record written by format v1, kept forever: v1 records must stay readable by every release.
GOLDEN_DEK = bytes(range(32))
GOLDEN_SECRET = bytes(range(32, 64))
GOLDEN_CONTEXT = RecordContext(
    keyset_id=bytes(range(100, 116)),
    tenant="acme",
    subject_id="alice",
    template_id="00112233445566778899aabbccddeeff",
    model_id="dlib-resnet-v1",
)
GOLDEN_NONCE = bytes.fromhex("000102030405060708090a0b")
GOLDEN_ENCODING = np.array([0.125, -0.25, 0.5, -1.0], dtype=np.float64)
GOLDEN_RECORD = bytes.fromhex(
    "0102000400000007000102030405060708090a0bef00424b6a2d578a2c5312e961c86f7155156e089bd1ab80"
    "6bddfe6cc20cf371f8115e4f81611b05f4a1db7d1ace7116"
)


def _lp(field: bytes) -> bytes:
    return struct.pack(">H", len(field)) + field


def golden_key() -> AeadKey:
    return record_key(SecretBytes(GOLDEN_DEK), "acme", "alice", SecretBytes(GOLDEN_SECRET))


def test_golden_record_opens() -> None:
    opened = open_record(golden_key(), GOLDEN_RECORD, GOLDEN_CONTEXT)
    assert opened.dtype == np.float64
    assert np.array_equal(opened, GOLDEN_ENCODING)


def test_layout_matches_the_documented_construction() -> None:
    """Rebuild the golden record from docs/format.md with raw primitives, byte for byte."""
    record_key_raw = hmac.digest(
        GOLDEN_DEK,
        b"faceseal-record-key-v1\x00" + _lp(b"acme") + _lp(b"alice") + GOLDEN_SECRET,
        "sha256",
    )
    assert record_key_raw == record_key_bytes(
        SecretBytes(GOLDEN_DEK), "acme", "alice", SecretBytes(GOLDEN_SECRET)
    ).reveal()
    header = struct.pack(">BBHI", 0x01, 0x02, 4, 7)  # format, float64, dimension, key version
    associated = (
        b"faceseal-record-v1\x00" + header + bytes(range(100, 116)) + _lp(b"acme")
        + _lp(b"alice") + _lp(b"00112233445566778899aabbccddeeff") + _lp(b"dlib-resnet-v1")
    )
    body = AESGCM(record_key_raw).encrypt(GOLDEN_NONCE, GOLDEN_ENCODING.astype("<f8").tobytes(),
                                          associated)
    assert header + GOLDEN_NONCE + body == GOLDEN_RECORD
    parsed = parse_header(GOLDEN_RECORD)
    assert (parsed.format_version, parsed.dtype, parsed.dimension, parsed.key_version) == (
        1, "float64", 4, 7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dimension", [128, 512])
def test_round_trip_is_exact(dtype: str, dimension: int) -> None:
    key = AeadKey(generate_key())
    rng = np.random.default_rng(dimension)
    encoding = rng.standard_normal(dimension).astype(dtype)
    record = seal_record(key, 3, encoding, GOLDEN_CONTEXT)
    assert len(record) == OVERHEAD_BYTES + dimension * np.dtype(dtype).itemsize
    opened = open_record(key, record, GOLDEN_CONTEXT)
    assert opened.dtype == np.dtype(dtype)
    assert opened.shape == (dimension,)
    assert opened.tobytes() == encoding.tobytes()


def test_nonces_are_fresh() -> None:
    key = AeadKey(generate_key())
    records = {seal_record(key, 1, GOLDEN_ENCODING, GOLDEN_CONTEXT) for _ in range(200)}
    assert len({r[8:20] for r in records}) == 200


@pytest.fixture(scope="module")
def sealed() -> tuple[AeadKey, bytes]:
    key = golden_key()
    return key, seal_record(key, 7, np.linspace(-0.3, 0.3, 128), GOLDEN_CONTEXT)


def _expect_opaque_failure(key: AeadKey, record: bytes, context: RecordContext) -> None:
    with pytest.raises(DecryptionError) as caught:
        open_record(key, record, context)
    # One message, no chained cause: nothing tells a tag failure from a truncation.
    assert str(caught.value) == DecryptionError.MESSAGE
    assert caught.value.__cause__ is None


def test_every_single_bit_flip_fails(sealed: tuple[AeadKey, bytes]) -> None:
    key, record = sealed
    for bit in range(len(record) * 8):
        damaged = bytearray(record)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            open_record(key, bytes(damaged), GOLDEN_CONTEXT)


def test_every_truncation_and_extension_fails(sealed: tuple[AeadKey, bytes]) -> None:
    key, record = sealed
    for length in range(len(record)):
        _expect_opaque_failure(key, record[:length], GOLDEN_CONTEXT)
    _expect_opaque_failure(key, record + b"\x00", GOLDEN_CONTEXT)


@pytest.mark.parametrize(
    "change",
    [
        {"keyset_id": bytes(16)},
        {"tenant": "acme2"},
        {"subject_id": "bob"},
        {"template_id": "00112233445566778899aabbccddeefe"},
        {"model_id": "other-model"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_record_in_another_place_fails(sealed: tuple[AeadKey, bytes], change: dict[str, object]
                                       ) -> None:
    key, record = sealed
    _expect_opaque_failure(key, record, replace(GOLDEN_CONTEXT, **change))  # type: ignore[arg-type]


def test_wrong_key_and_other_subjects_key_fail(sealed: tuple[AeadKey, bytes]) -> None:
    _, record = sealed
    other_subject = record_key(SecretBytes(GOLDEN_DEK), "acme", "bob", SecretBytes(GOLDEN_SECRET))
    other_secret = record_key(SecretBytes(GOLDEN_DEK), "acme", "alice", SecretBytes(bytes(32)))
    for key in (AeadKey(generate_key()), other_subject, other_secret):
        _expect_opaque_failure(key, record, GOLDEN_CONTEXT)


def _wycheproof(name: str) -> list[tuple[dict[str, object], dict[str, str]]]:
    document = json.loads((VECTORS_DIR / name).read_text())
    return [(group, case) for group in document["testGroups"] for case in group["tests"]]


GCM_CASES = [
    case for group, case in _wycheproof("aes_gcm_test.json")
    if (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)
]


def test_wycheproof_gcm_cases_are_present() -> None:
    assert len(GCM_CASES) > 30
    assert {c["result"] for c in GCM_CASES} >= {"valid", "invalid"}


@pytest.mark.parametrize("case", GCM_CASES, ids=lambda c: f"tc{c['tcId']}")
def test_wycheproof_aes_256_gcm(case: dict[str, str]) -> None:
    key = AeadKey(SecretBytes(bytes.fromhex(case["key"])))
    sealed = bytes.fromhex(case["ct"] + case["tag"])
    nonce, aad = bytes.fromhex(case["iv"]), bytes.fromhex(case["aad"])
    if case["result"] == "valid":
        assert key.decrypt_with_nonce(nonce, sealed, aad) == bytes.fromhex(case["msg"])
        assert key.encrypt_with_nonce(nonce, bytes.fromhex(case["msg"]), aad) == sealed
    else:
        result = None
        with pytest.raises(DecryptionError):
            result = key.decrypt_with_nonce(nonce, sealed, aad)
        assert result is None


def test_nonces_other_than_96_bits_are_refused() -> None:
    key = AeadKey(generate_key())
    sealed = key.encrypt(b"x", b"")
    for size in (8, 11, 13, 16):
        with pytest.raises(DecryptionError):
            key.decrypt_with_nonce(bytes(size), sealed[12:], b"")


KWP_CASES = [case for _, case in _wycheproof("aes_kwp_test.json")]


@pytest.mark.parametrize("case", KWP_CASES, ids=lambda c: f"tc{c['tcId']}")
def test_wycheproof_aes_kwp(case: dict[str, str]) -> None:
    kek = SecretBytes(bytes.fromhex(case["key"]))
    wrapped = bytes.fromhex(case["ct"])
    if case["result"] == "valid":
        assert kwp_unwrap(kek, wrapped) == bytes.fromhex(case["msg"])
        assert kwp_wrap(kek, bytes.fromhex(case["msg"])) == wrapped
    else:
        with pytest.raises(DecryptionError):
            kwp_unwrap(kek, wrapped)


def test_wrapped_key_is_bound_to_its_context() -> None:
    kek, key = generate_key(), generate_key()
    wrapped = wrap_key(kek, key, b"dek v1")
    assert unwrap_key(kek, wrapped, b"dek v1") == key
    for context, wrong_kek in ((b"dek v2", kek), (b"dek v1", generate_key())):
        with pytest.raises(DecryptionError):
            unwrap_key(wrong_kek, wrapped, context)
    for position in range(len(wrapped)):
        damaged = bytearray(wrapped)
        damaged[position] ^= 0x01
        with pytest.raises(DecryptionError):
            unwrap_key(kek, bytes(damaged), b"dek v1")


def test_key_handles_never_show_or_serialise_their_bytes() -> None:
    raw = bytes(range(200, 232))
    secret = SecretBytes(raw)
    handle = AeadKey(secret)
    for text in (repr(secret), str(secret), f"{secret}", repr(handle), str(handle)):
        assert raw.hex() not in text
        assert str(raw) not in text
        assert "redacted" in text
    for value in (secret, handle):
        with pytest.raises(TypeError):
            pickle.dumps(value)
        with pytest.raises(TypeError):
            copy.copy(value)
        with pytest.raises(TypeError):
            copy.deepcopy(value)
    with pytest.raises(TypeError):
        bytes(secret)
    with pytest.raises(TypeError):
        hash(secret)
    assert secret == SecretBytes(raw)
    assert secret != SecretBytes(bytes(32))
    secret.wipe()
    assert secret.reveal() == bytes(32)


def test_format_doc_describes_the_pinned_layout() -> None:
    """docs/format.md must carry the same offsets as the code."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    for needle in ("0x01", "float32", "float64", "uint32", "12", "16",
                   "faceseal-record-v1", "faceseal-record-key-v1"):
        assert needle in doc
