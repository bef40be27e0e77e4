"""What the routers share: the bound vault dependency, path parameters, form field parsing."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from faceseal.audit.events import MAX_REQUEST_ID, REQUEST_ID_PATTERN, REQUEST_ID_RULE
from faceseal.errors import InvalidInput
from faceseal.http.context import Service, bound_vault, service_of
from faceseal.http.models import PATH_ID_PATTERN
from faceseal.vault import Vault
from faceseal.vault.ids import MAX_ID_LENGTH

_DIGITS = re.compile(r"\A[0-9]{1,7}\Z")

#: The API key scheme and the X-Request-ID request header, as the OpenAPI document shows them
#: (:func:`faceseal.http.app._openapi` adds them to every operation). They are not FastAPI
#: dependencies: the middleware reads both before routing, and each dependency costs its
#: resolution on every request.
API_KEY_SCHEME: dict[str, Any] = {
    "type": "http", "scheme": "bearer", "bearerFormat": "fsk_<key id>_<secret>",
    "description": "A principal's API key: `Authorization: Bearer fsk_...`.",
}
_REQUEST_ID_TEXT = (f"Your id for this request ({REQUEST_ID_RULE}), returned in the response "
                    "header and recorded in its audit events; one is made up when absent.")
REQUEST_ID_PARAMETER: dict[str, Any] = {
    "name": "X-Request-ID", "in": "header", "required": False, "description": _REQUEST_ID_TEXT,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID,
               "pattern": REQUEST_ID_PATTERN, "title": "X-Request-Id",
               "description": _REQUEST_ID_TEXT},
}


# ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in the
# thread pool, and a hop per dependency (a thread hand-off and an event-loop wake-up each)
# costs more CPU than the vault call it precedes. Keep them free of blocking work.
async def vault_view(request: Request) -> Vault:
    return bound_vault(request)


async def service(request: Request) -> Service:
    return service_of(request)


View = Annotated[Vault, Depends(vault_view)]
ServiceDep = Annotated[Service, Depends(service)]
Tenant = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=PATH_ID_PATTERN,
                             description="The tenant (`default` unless you use tenants).")]
SubjectId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=PATH_ID_PATTERN,
                                description="The subject's id, chosen at enrolment.")]


def int_field(fields: dict[str, str], name: str, *, low: int, high: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.match(text) or not low <= int(text) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def threshold_field(fields: dict[str, str]) -> float | None:
    value = fields.get("threshold")
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        raise InvalidInput("threshold must be a number") from None
    if not math.isfinite(number) or not 0 < number <= 1e6:
        raise InvalidInput("threshold must be a positive finite number")
    return number


def multipart_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` declaring a multipart/form-data request body."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": False,
    }}}}}


PHOTO = {"type": "string", "format": "binary",
         "description": "A photo (JPEG, PNG, WebP, BMP, TIFF or GIF) with one face, or several and "
                        "face_index."}
FACE_INDEX = {"type": "integer", "minimum": 0, "maximum": 1000,
              "description": "Which face to use when the photo holds several (0-based, from the "
                             "left)."}
THRESHOLD = {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6,
             "description": "Distance threshold override."}
