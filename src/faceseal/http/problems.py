"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error body is one JSON object::

    {"type": "urn:faceseal:problem:not_found", "title": "Not found", "status": 404,
     "detail": "no subject 'alice' in tenant 'acme'", "instance": "urn:faceseal:request:<id>",
     "code": "not_found", "request_id": "<id>"}

* **4xx** (:class:`~faceseal.errors.UserError`): ``detail`` is the error's message, which by the
  error hierarchy's contract names only what the caller sent (ids, sizes), never a key, a
  passphrase or an encoding value.
* **5xx** (internal errors, the opaque decryption error, anything unexpected): ``detail`` is a
  fixed sentence. The real cause is logged server-side with the request id (faceseal's own
  messages hold no secrets; for an unexpected exception only its type and stack, not its text),
  so no path, SQL, stack trace, key id or exception text reaches the client.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from faceseal.errors import FacesealError, UserError

log = logging.getLogger("faceseal.http")

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:faceseal:problem:"
INSTANCE_PREFIX = "urn:faceseal:request:"
INTERNAL_DETAIL = ("the service could not complete the request; the operator can find out why "
                   "from its logs with the request id")

TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    501: "Not implemented",
    503: "Service unavailable",
}

#: Codes of statuses that do not come from a faceseal error (routing, HTTP itself).
HTTP_CODES: dict[int, str] = {
    400: "malformed_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def problem(status: int, code: str, detail: str, request_id: str, *,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A problem details object."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": INSTANCE_PREFIX + request_id,
        "code": code,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def for_error(error: BaseException, request_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem body and extra headers for an exception, logging internal causes."""
    if isinstance(error, UserError) and error.http_status < 500:
        headers: dict[str, str] = {}
        if error.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="faceseal"'
        return problem(error.http_status, error.code, str(error), request_id), headers
    if isinstance(error, FacesealError):
        # Internal by status (5xx user errors such as a keyring problem or a missing encoder
        # count too): the message may name files or the store, so it stays in the log.
        log.error("request %s failed: %s: %s", request_id, error.code, error)
        status = error.http_status if error.http_status >= 500 else 500
        return problem(status, error.code, INTERNAL_DETAIL, request_id), {}
    # Not faceseal's: a bug. Its text could carry anything; log its type and stack only.
    stack = "".join(traceback.format_tb(error.__traceback__))
    log.error("request %s failed with an unexpected %s\n%s", request_id, type(error).__name__,
              stack.rstrip())
    return problem(500, "internal_error", INTERNAL_DETAIL, request_id), {}
