"""The request-id rule and the API-key format are defined once, and every front end applies the
same one: the Python API (``check_request_id``), the HTTP middleware and the OpenAPI schema."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from faceseal.access.apikeys import generate_api_key, key_id_of, parse_api_key
from faceseal.audit.events import (
    MAX_REQUEST_ID,
    REQUEST_ID_PATTERN,
    check_request_id,
    is_request_id,
)
from faceseal.errors import InvalidInput
from faceseal.http.app import create_app
from faceseal.http.settings import Settings
from faceseal.vault import Vault

GOOD_IDS = ["a", "!", "~", "req-42/x:y", "x" * MAX_REQUEST_ID]
BAD_IDS = ["", " ", "a b", "tab\there", "new\nline", "é", "\x7f", "x" * (MAX_REQUEST_ID + 1)]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_a_good_request_id_passes_everywhere(value: str) -> None:
    assert is_request_id(value)
    assert check_request_id(value) == value
    assert re.fullmatch(REQUEST_ID_PATTERN.strip("^$"), value)


@pytest.mark.parametrize("value", BAD_IDS)
def test_a_bad_request_id_is_refused_everywhere(value: str) -> None:
    assert not is_request_id(value)
    with pytest.raises(InvalidInput, match="printable ASCII"):
        check_request_id(value)


def test_the_service_applies_the_same_rule(vault: Vault) -> None:
    app = create_app(vault, Settings())
    with TestClient(app) as http:
        for value in GOOD_IDS:
            answer = http.get("/healthz", headers={"X-Request-ID": value})
            assert answer.headers["x-request-id"] == value
        for value in ("a b", "x" * (MAX_REQUEST_ID + 1)):  # what a header can carry
            answer = http.get("/healthz", headers={"X-Request-ID": value})
            assert answer.status_code == 400
            assert answer.json()["code"] == "malformed_request"
            assert "printable ASCII" in answer.json()["detail"]


def test_key_id_of_agrees_with_parse_api_key() -> None:
    issued = generate_api_key()
    text = issued.reveal()
    parsed = parse_api_key(text)
    assert parsed is not None
    assert key_id_of(text) == parsed.key_id == issued.key_id
    for bad in (text[:-1], text + "x", text.replace("fsk_", "fsx_"), text.upper(), "",
                "fsk_" + "0" * 16):
        assert key_id_of(bad) is None
        assert parse_api_key(bad) is None
