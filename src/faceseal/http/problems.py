"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error body is one JSON object::

    {"type": "urn:faceseal:problem:not_found", "title": "Not found", "status": 404,
     "detail": "no subject 'alice' in tenant 'acme'", "instance": "urn:faceseal:request:<id>",
     "code": "not_found", "request_id": "<id>"}

The status of each error class comes from :data:`HTTP_STATUS` (the error classes themselves
know no transport).

* **4xx** (the ``user`` family, :class:`~faceseal.errors.UserError`): ``detail`` is the
  error's message, which by the error hierarchy's contract names only what the caller sent (ids,
  sizes), never a key, a passphrase or an encoding value.
* **5xx** (the ``internal`` family, the opaque decryption error, anything unexpected):
  ``detail`` is a fixed sentence. The real cause is logged server-side with the request id
  (faceseal's own messages hold no secrets; for an unexpected exception only its type and stack,
  not its text),
  so no path, SQL, stack trace, key id or exception text reaches the client.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from faceseal import errors
from faceseal.errors import FacesealError

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


#: The HTTP status of every faceseal error class: the only place one is chosen. Each class is
#: listed (a test walks the hierarchy), user errors get a 4xx and internal ones a 5xx.
HTTP_STATUS: dict[type[BaseException], int] = {
    errors.FacesealError: 500,
    # user errors: the caller can fix them
    errors.UserError: 400,
    errors.InvalidInput: 422,
    errors.ImageUnreadable: 422,
    errors.ImageTooLarge: 413,
    errors.NoFaceFound: 422,
    errors.MultipleFacesFound: 422,
    errors.BadSources: 422,
    errors.InvalidEncoding: 422,
    errors.ImplausibleProbe: 422,
    errors.ThresholdTooLoose: 422,
    errors.AuthenticationFailed: 401,
    errors.AccessDenied: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.BudgetExceeded: 429,
    errors.MalformedRequest: 400,
    errors.UnsupportedMediaType: 415,
    errors.RequestTooLarge: 413,
    # internal errors: the deployment failed a valid request
    errors.InternalError: 500,
    errors.KeyringError: 500,
    errors.EncoderUnavailable: 501,
    errors.KeyProviderUnavailable: 503,
    errors.StorageUnavailable: 503,
    errors.StorageMisconfigured: 503,
    errors.AuditWriteFailed: 503,
    errors.IntegrityFailure: 500,
    errors.ServiceTimeout: 503,
    errors.ServiceUnavailable: 503,
    errors.ShardUnavailable: 503,
    errors.DecryptionError: 500,
}


def status_for(error: BaseException | type[BaseException]) -> int:
    """The HTTP status of an error (its nearest listed class; 500 for anything not faceseal's)."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        status = HTTP_STATUS.get(klass)
        if status is not None:
            return status
    return 500


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
    if isinstance(error, FacesealError) and error.family == "user":
        status = status_for(error)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="faceseal"'
        return problem(status, error.code, str(error), request_id), headers
    if isinstance(error, FacesealError):
        # The message may name files, the store or the key provider, so it stays in the log.
        log.error("request %s failed: %s: %s", request_id, error.code, error)
        return problem(status_for(error), error.code, INTERNAL_DETAIL, request_id), {}
    # Not faceseal's: a bug. Its text could carry anything; log its type and stack only.
    stack = "".join(traceback.format_tb(error.__traceback__))
    log.error("request %s failed with an unexpected %s\n%s", request_id, type(error).__name__,
              stack.rstrip())
    return problem(500, "internal_error", INTERNAL_DETAIL, request_id), {}
