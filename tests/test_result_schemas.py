"""One definition per result (issue #16): the vault's result types are what the HTTP service
serves (its response models) and what the client returns, so a field is added in one place."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from fastapi import FastAPI

from faceseal.access.roles import Role, RoleName
from faceseal.http import Settings, create_app
from faceseal.vault import Vault
from faceseal.vault.bulk import BulkEnrollResult
from faceseal.vault.results import Candidate, EnrollResult, IdentifyResult, Result, VerifyResult
from faceseal.vault.rotation import DataKeyState, KeyStatus

from .openapi_fields import _resolve


def _result_types(base: type[Result] = Result) -> dict[str, type[Result]]:
    found: dict[str, type[Result]] = {}
    for sub in base.__subclasses__():
        found[sub.__name__] = sub
        found.update(_result_types(sub))
    return found


def test_every_served_result_is_the_vault_type_field_for_field(vault: Vault) -> None:
    document = create_app(vault, Settings()).openapi()
    results = _result_types()
    served: set[str] = set()
    for path, methods in document["paths"].items():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not status.startswith("2") or schema is None or "$ref" not in schema:
                    continue
                name = schema["$ref"].rsplit("/", 1)[-1]
                if name not in results:
                    continue
                served.add(name)
                resolved = _resolve(document, schema)
                fields = [f.name for f in dataclasses.fields(results[name])]
                assert list(resolved["properties"]) == fields, path
                assert resolved["required"] == fields, path  # the service sends every field
                assert resolved["additionalProperties"] is False, path
    assert served >= {"EnrollResult", "VerifyResult", "IdentifyResult", "EraseResult",
                      "TenantPolicy", "BulkEnrollResult", "KeyStatus", "KekRotation",
                      "DataRotation", "Retirement", "PrincipalInfo", "NewPrincipalInfo",
                      "ChainReport"}


def test_role_names_are_the_roles() -> None:
    assert set(typing.get_args(RoleName)) == {role.value for role in Role}


def test_adding_a_field_to_a_result_type_is_one_edit() -> None:
    """A result type with one more field -- the only edit -- is served with that field in the
    OpenAPI document, rebuilt with it by the client, and returned with it by the vault."""
    grown: Any = dataclasses.make_dataclass(
        "EnrollResult", [("liveness", float, dataclasses.field(default=0.0))],
        bases=(EnrollResult,), frozen=True)
    app = FastAPI()
    app.post("/enroll", response_model=grown)(lambda: None)
    schema = _resolve(app.openapi(), app.openapi()["paths"]["/enroll"]["post"]["responses"]
                      ["200"]["content"]["application/json"]["schema"])
    assert schema["properties"]["liveness"]["type"] == "number"
    assert "liveness" in schema["required"]
    vault_side = grown("t", "alice", "dlib-resnet-v1", ["a" * 32], ["<array>"], liveness=0.93)
    assert vault_side.to_dict()["liveness"] == 0.93  # what the CLI prints and HTTP sends
    client_side = grown.from_dict(vault_side.to_dict())  # what the client returns
    assert client_side == vault_side
    assert client_side.liveness == 0.93


def test_the_client_rebuilds_nested_results_from_what_is_served() -> None:
    status = KeyStatus("local:/k", "local", "/k", [1, 2], 2, {}, [
        DataKeyState(1, 10.0, 5, 3, 1, False, True), DataKeyState(2, 20.0, 7, 4, 2, True, False)],
        2, 2, 2**32, "/k", {"target": 3, "records_remaining": 9})
    found = IdentifyResult("t", "dlib-resnet-v1", 0.6, 5,
                           [Candidate("alice", None, True, "b" * 32, "strong")], 10, 0, "band")
    verified = VerifyResult("t", "bob", False, None, 0.6, "dlib-resnet-v1", None, [], "none",
                            "band")
    bulk = BulkEnrollResult("t", "dlib-resnet-v1", 2, 1, ["c" * 32, "d" * 32])
    for result in (status, found, verified, bulk):
        rebuilt = type(result).from_dict(result.to_dict())
        assert rebuilt == result
    assert isinstance(KeyStatus.from_dict(status.to_dict()).data_keys[0], DataKeyState)
    assert isinstance(IdentifyResult.from_dict(found.to_dict()).candidates[0], Candidate)
    # A newer service may send a field this client does not know: ignored, not an error.
    assert VerifyResult.from_dict({**verified.to_dict(), "added_later": 1}) == verified
