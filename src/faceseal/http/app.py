"""The FastAPI application: :func:`create_app` wires an open vault to the routers."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceseal import __version__
from faceseal.access.counters import RedisCounters, WindowCounters
from faceseal.errors import FacesealError, InvalidInput, MalformedRequest
from faceseal.http import problems
from faceseal.http.console.app import PREFIX as CONSOLE_PREFIX
from faceseal.http.console.app import create_console
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.context import RouteTemplates, Service, context_of, service_of
from faceseal.http.metrics import Metrics
from faceseal.http.middleware import ServiceMiddleware
from faceseal.http.models import Problem
from faceseal.http.ratelimit import AuthRateLimiter
from faceseal.http.routes import (
    audit,
    batch,
    keys,
    matching,
    ops,
    principals,
    subjects,
    tenants,
)
from faceseal.http.routes.common import API_KEY_SCHEME, REQUEST_ID_PARAMETER
from faceseal.http.settings import Settings
from faceseal.vault import Vault

DESCRIPTION = """\
A vault for face encodings, over HTTP. Every `/v1` operation needs an API key
(`Authorization: Bearer fsk_...`) whose principal holds the operation's role on the tenant, and
is recorded in the vault's audit log under the request id returned in `X-Request-ID`.
Errors are RFC 9457 problem details (`application/problem+json`).
"""

_ROUTERS = (subjects, matching, batch, tenants, principals, keys, audit, ops)

#: Problem statuses every operation may answer, with what they mean.
_COMMON_PROBLEMS: dict[int, str] = {
    400: "Malformed request: unparseable JSON or multipart, a bad X-Request-ID header.",
    413: "The body is larger than the limit, or a photo has more pixels than allowed.",
    500: "Internal error (no detail; the operator finds it in the log by request id).",
    503: "A dependency (store, key provider, audit log) is unavailable, or time ran out.",
}
_API_PROBLEMS: dict[int, str] = {
    401: "No API key, or one that is malformed, unknown or revoked.",
    403: "The principal's role or tenant does not allow this operation.",
    404: "No such subject, principal or route.",
    409: "Conflicts with the current state.",
    415: "The body is not of the media type the operation takes.",
    422: "Invalid input: schema, dimension, non-finite numbers, no face, unknown model...",
    429: "Too many failed authentications from this client or for this key id; see "
         "Retry-After.",
    501: "The photo encoder is not installed on the server.",
}


_SUBJECT_LINK = {"tenant": "$response.body#/tenant", "subject_id": "$response.body#/subject_id"}
#: OpenAPI links: what a created resource can be used for next (also drives schemathesis'
#: stateful tests: enrol, then verify, list and erase; add a principal, then revoke it).
_LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "enrollEncodings": {"201": {
        "VerifySubject": {"operationId": "verifyEncoding", "parameters": _SUBJECT_LINK},
        "EraseSubject": {"operationId": "eraseSubject", "parameters": _SUBJECT_LINK},
        "ListSubjects": {"operationId": "listSubjects",
                         "parameters": {"tenant": "$response.body#/tenant"}},
        "IdentifyInTenant": {"operationId": "identifyEncoding",
                             "parameters": {"tenant": "$response.body#/tenant"}},
    }},
    "eraseSubject": {"200": {
        "VerifyErased": {"operationId": "verifyEncoding", "parameters": _SUBJECT_LINK},
    }},
    "enrollMany": {"201": {
        "IdentifyInTenant": {"operationId": "identifyMany",
                             "parameters": {"tenant": "$response.body#/tenant"}},
    }},
    "addPrincipal": {"201": {
        "RevokePrincipal": {"operationId": "revokePrincipal",
                            "parameters": {"name": "$response.body#/name"}},
    }},
}


def create_app(vault: Vault, settings: Settings | None = None,
               console: ConsoleSettings | None = None) -> FastAPI:
    """The HTTP service over ``vault``: an open, *unbound* vault (``Vault.open(home)``); each
    request binds its own view with its API key. The caller keeps ownership of the vault (close
    it after the server stops). The browser console is served under ``/ui`` unless
    ``console.enabled`` is false (it is off when ``console`` is None)."""
    settings = settings or Settings()
    counters = _counters(vault, settings.rate_limits)
    if counters is not None:  # query budgets live where the failed-auth limits do
        vault.use_query_counters(counters)
    service = Service(vault, settings, Metrics(), AuthRateLimiter(
        per_key=settings.auth_failures_per_key, per_client=settings.auth_failures_per_client,
        window=settings.auth_window_seconds, max_entries=settings.rate_limit_entries,
        counters=counters))
    app = FastAPI(
        title="faceseal", version=__version__, description=DESCRIPTION,
        openapi_url="/openapi.json" if settings.openapi else None,
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN
    )
    app.state.faceseal = service
    for module in _ROUTERS:
        app.include_router(module.router)
    app.add_exception_handler(FacesealError, _faceseal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    routes: dict[str, set[str]] = {"/openapi.json": {"GET"}} if settings.openapi else {}
    for module in _ROUTERS:
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                routes.setdefault(route.path, set()).update(route.methods or ())
    if console is not None and console.enabled:
        app.mount(CONSOLE_PREFIX, create_console(service, console))
        routes[CONSOLE_PREFIX + "/{page:path}"] = {"GET", "POST"}  # one metrics label
    service.routes = RouteTemplates(routes)
    app.add_middleware(ServiceMiddleware, service=service)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _counters(vault: Vault, where: str) -> WindowCounters | None:
    """The failed-authentication counters ``Settings.rate_limits`` names (None: in memory)."""
    if where == "memory":
        return None
    if where == "store":
        return vault.shared_counters()
    return RedisCounters(where)


# --- exception handlers --------------------------------------------------------------------------


def _problem_response(request: Request, error: BaseException,
                      headers: dict[str, str] | None = None) -> Response:
    body, extra = problems.for_error(error, context_of(request).request_id)
    return Response(problems.encode(body), status_code=body["status"],
                    media_type=problems.CONTENT_TYPE, headers={**extra, **(headers or {})})


async def _faceseal_error(request: Request, error: Exception) -> Response:
    return _problem_response(request, error)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    found = error.errors()
    request_id = context_of(request).request_id
    if any(e.get("type") == "json_invalid" for e in found):
        body, _ = problems.for_error(MalformedRequest("the body is not valid JSON"), request_id)
        return Response(problems.encode(body), status_code=body["status"],
                        media_type=problems.CONTENT_TYPE)
    # Where and what, never the input itself (it may be an encoding).
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "message": str(e.get("msg", ""))}
              for e in found[:20]]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['message']}" for e in errors[:3])
    body = problems.problem(problems.status_for(InvalidInput), InvalidInput.code,
                            f"invalid request: {summary}", request_id, extra={"errors": errors})
    return Response(problems.encode(body), status_code=body["status"],
                    media_type=problems.CONTENT_TYPE)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    code = problems.HTTP_CODES.get(status, "http_error")
    detail = {404: "no such route", 405: "method not allowed on this route"}.get(
        status, problems.TITLES.get(status, "error").lower())
    request_id = context_of(request).request_id
    body = problems.problem(status if status >= 400 else 500, code, detail, request_id)
    headers = dict(error.headers or {})
    if status == 405:  # every method of the path, not only those of the first route matched
        allowed = service_of(request).routes.methods(request.url.path)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return Response(problems.encode(body), status_code=body["status"],
                    media_type=problems.CONTENT_TYPE, headers=headers)


# --- the OpenAPI document ------------------------------------------------------------------------


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with problem details for every error status, the X-Request-ID
    response header everywhere, and the API key required on /v1 operations."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {"apiKey": copy.deepcopy(API_KEY_SCHEME)}
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem_schema["properties"]["errors"] = {
        "type": "array", "description": "Invalid fields (422 only): location and message.",
        "items": {"type": "object", "properties": {
            "loc": {"type": "array", "items": {"type": "string"}},
            "message": {"type": "string"}}}}
    schemas["Problem"] = problem_schema
    request_id_header = {"description": "The request's id (yours, or one made up).",
                         "schema": {"type": "string"}, "required": True}
    retry_after = {"description": "Seconds to wait before trying again.",
                   "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    problem_content = {problems.CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    _describe_models(schemas, service_of_app(app).vault)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for entry in responses.values():  # FastAPI's own 422 shape is never sent
                content = entry.get("content", {})
                if "HTTPValidationError" in str(content.get("application/json", "")):
                    del content["application/json"]
            statuses = dict(_COMMON_PROBLEMS)
            if path.startswith("/v1/"):
                statuses.update(_API_PROBLEMS)
            for status, description in sorted(statuses.items()):
                entry = responses.setdefault(str(status), {"description": description})
                entry.setdefault("content", {}).update(copy.deepcopy(problem_content))
                if status == 429:
                    entry.setdefault("headers", {})["Retry-After"] = retry_after
            for code, entry in responses.items():
                if not entry.get("content"):
                    entry["content"] = copy.deepcopy(problem_content)
                    entry["description"] = _API_PROBLEMS.get(int(code), entry["description"])
                entry.setdefault("headers", {})["X-Request-ID"] = request_id_header
            operation["security"] = [{"apiKey": []}] if path.startswith("/v1/") else []
            operation.setdefault("parameters", []).append(copy.deepcopy(REQUEST_ID_PARAMETER))
            links = _LINKS.get(operation.get("operationId", ""))
            if links:
                for code, link_set in links.items():
                    responses[code]["links"] = copy.deepcopy(link_set)
    return schema


def service_of_app(app: FastAPI) -> Service:
    service: Service = app.state.faceseal
    return service


def _describe_models(schemas: dict[str, Any], vault: Vault) -> None:
    """Name the vault's models in the document (an enum), and the encoding length when they all
    share one, so that a schema-valid encoding is one the vault accepts."""
    models = vault.config.models()
    dimensions = {spec.dimension for spec in models.values()}
    for name in ("EnrollEncodingsRequest", "VerifyEncodingRequest", "IdentifyEncodingRequest",
                 "BulkEnrollRequest", "BulkTemplate", "IdentifyBatchRequest"):
        properties = schemas.get(name, {}).get("properties", {})
        model = properties.get("model", {})
        for option in model.get("anyOf", []):
            if option.get("type") == "string":
                option.pop("pattern", None)
                option["enum"] = sorted(models)
        encoding = properties.get("encoding") or properties.get("encodings", {}).get("items")
        if encoding is not None:
            encoding["minItems"] = min(dimensions)
            encoding["maxItems"] = max(dimensions)
