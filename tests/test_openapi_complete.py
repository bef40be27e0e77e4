"""The OpenAPI document stays as complete as it was before the vault's result types became the
response models (issue #16): every operation, and every field each takes and answers with its
types and listed values, is still there; a field that was required or described still is (a
field may become required or described, and fields may be added)."""

from __future__ import annotations

import json

from faceseal.http import Settings, create_app
from faceseal.vault import Vault

from .conftest import PROJECT_ROOT
from .openapi_fields import operations

BEFORE = PROJECT_ROOT / "tests" / "data" / "openapi_fields.json"


def _parts(row: str | None) -> tuple[str, set[str]]:
    """(types and listed values, flags) of a row of :func:`operations`."""
    words = (row or "").split()
    flags = {w for w in words if w in ("required", "described")}
    return " ".join(w for w in words if w not in flags), flags


def test_the_document_keeps_every_operation_and_field(vault: Vault) -> None:
    now = operations(create_app(vault, Settings()).openapi())
    before: dict[str, dict[str, str]] = json.loads(BEFORE.read_text())
    assert sorted(before) == sorted(now)
    lost = []
    for operation, fields in before.items():
        for field, row in fields.items():
            (shape, flags), (shape_now, flags_now) = _parts(row), _parts(now[operation].get(field))
            if shape != shape_now or not flags <= flags_now:
                lost.append(f"{operation} {field}: {row!r} -> {now[operation].get(field)!r}")
    assert not lost, "\n".join(sorted(lost))
