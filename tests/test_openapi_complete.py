"""The OpenAPI document stays as complete as it was before the vault's result types became the
response models (issue #16): every operation, and every field each takes and answers with its
types, listed values, required flag and description, is still there (more may be added)."""

from __future__ import annotations

import json

from faceseal.http import Settings, create_app
from faceseal.vault import Vault

from .conftest import PROJECT_ROOT
from .openapi_fields import operations

BEFORE = PROJECT_ROOT / "tests" / "data" / "openapi_fields.json"


def test_the_document_keeps_every_operation_and_field(vault: Vault) -> None:
    now = operations(create_app(vault, Settings()).openapi())
    before: dict[str, dict[str, str]] = json.loads(BEFORE.read_text())
    assert sorted(before) == sorted(now)
    lost = {f"{operation} {field}: {row} -> {now[operation].get(field)}"
            for operation, fields in before.items() for field, row in fields.items()
            if now[operation].get(field) != row}
    assert not lost, "\n".join(sorted(lost))
