"""The one ASGI middleware in front of the routes: request ids, limits, authentication, time
limits, metrics, the access log, and the last line of defence for errors.

In order, for every HTTP request:

1. **Request id**: a valid client-supplied ``X-Request-ID`` (1-128 printable ASCII characters,
   no spaces) is kept, otherwise refused with 400; without one a random id is made. It is
   returned in the ``X-Request-ID`` response header and recorded in the request's audit events.
2. **Body size**: a ``Content-Length`` above the limit is answered 413 at once, before any of the
   body is read; a body without one is counted while it streams and answered 413 as soon as it
   passes the limit.
3. **Authentication** (``/v1/...`` only, below ``--root-path``), before the body is read: if the
   presented key id has failed too often, 429 with ``Retry-After`` (audited), the right secret
   included. Otherwise the key binds a view of the vault (``Vault.as_key(key,
   request_id=...)``; a refusal is audited by the vault, answered 401 and counted against the
   client and key id). A client address that has failed too often does not stop a valid key
   (everyone behind one NAT or proxy would be locked out by one guesser): its requests without
   a key are refused with 429 at once, and a key it presents is checked, failures answered 429.
   All of it is one blocking call in the thread pool (:func:`faceseal.http.admission.admit`):
   the counters may live in the store, and the event loop never waits on it.
4. **Time limit**: the whole request, body upload included, must finish within the limit, or
   it is answered 503 ``timeout`` (a vault call still running in its thread completes there; its
   effect, if any, is in the audit log under the request id).
5. Any exception that escapes the app becomes a 500 problem without internals (see
   :mod:`faceseal.http.problems`).
"""

from __future__ import annotations

import logging
import re
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceseal.access.apikeys import key_id_of
from faceseal.audit.events import REQUEST_ID_RULE, is_request_id, new_request_id
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import (
    MalformedRequest,
    RequestTooLarge,
    ServiceTimeout,
)
from faceseal.http import problems
from faceseal.http.admission import admit
from faceseal.http.context import SCOPE_KEY, RequestContext, Service

access_log = logging.getLogger("faceseal.http.access")
log = logging.getLogger("faceseal.http")

API_PREFIX = "/v1/"
_DIGITS = re.compile(r"\A[0-9]{1,19}\Z")
_BEARER = re.compile(r"\A(?i:bearer)[ \t]+(\S.*?)\s*\Z")  # the scheme is case-insensitive
#: Responses that carry results about people must not be kept by caches or proxies.
_COMMON_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


class _BodyTooLarge(Exception):
    """Raised into the app when the streamed body passes the limit (413 already sent)."""


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, *, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, receive, send).run()


class _Exchange:
    """One request/response exchange through the middleware."""

    def __init__(self, middleware: ServiceMiddleware, scope: Scope, receive: Receive,
                 send: Send) -> None:
        self.middleware = middleware
        self.service = middleware.service
        self.scope = scope
        self._receive = receive
        self._send = send
        self.started = time.perf_counter()
        self.status: int | None = None
        self.response_started = False
        self.response_done = False
        self.received = 0
        client = scope.get("client")
        self.context = RequestContext(new_request_id(), client[0] if client else None)
        scope[SCOPE_KEY] = self.context

    # --- the exchange ----------------------------------------------------------------------------

    async def run(self) -> None:
        metrics = self.service.metrics
        metrics.started()
        try:
            await self._serve()
        finally:
            seconds = time.perf_counter() - self.started
            status = self.status or 500
            route = self._route()
            metrics.finished(self.scope.get("method", "?"), route, status, seconds)
            if status == 401 and not self.context.counted_failure:
                # The counters may live in the store: off the event loop, and finished even if
                # this request was cancelled.
                with anyio.CancelScope(shield=True):
                    await self.service.run(self.service.limiter.failed, self.context.client,
                                           self.context.key_id)
            method = self.scope.get("method", "?")
            access_log.info("%s %s %s %d %.1fms request_id=%s", self.context.client or "-",
                            method, route, status, seconds * 1000, self.context.request_id,
                            extra={"client": self.context.client, "method": method,
                                   "route": route, "status": status,
                                   "duration_ms": round(seconds * 1000, 1),
                                   "request_id": self.context.request_id})

    async def _serve(self) -> None:
        headers = _headers(self.scope)
        supplied = headers.get("x-request-id")
        if supplied is not None:
            if not is_request_id(supplied):
                await self._fail(MalformedRequest(f"X-Request-ID must be {REQUEST_ID_RULE}"))
                return
            self.context.request_id = supplied
        length = headers.get("content-length")
        limit = self.service.settings.max_body_bytes
        if length is not None:
            if not _DIGITS.match(length):
                await self._fail(MalformedRequest("Content-Length is not a number"))
                return
            if int(length) > limit:
                await self._fail(RequestTooLarge(
                    f"the request body is larger than the limit of {limit} bytes"),
                    close=True)
                return
        timed_out = False
        self.context.deadline = time.monotonic() + self.service.settings.request_timeout
        try:
            with anyio.fail_after(self.service.settings.request_timeout):
                if self._needs_key() and not await self._authenticate(headers):
                    return
                await self.middleware.app(self.scope, self.receive, self.send)
        except TimeoutError:
            timed_out = True
        except _BodyTooLarge:
            return
        except Exception as error:  # the app's handlers answered every expected error
            if self.response_started:
                log.error("request %s failed after its response started: %s",
                          self.context.request_id, type(error).__name__)
                raise
            await self._fail(error)
            return
        if timed_out:
            self.service.metrics.timed_out()
            if not self.response_started:
                await self._fail(ServiceTimeout("the request took longer than the service's "
                                                "time limit"), close=True)

    def _needs_key(self) -> bool:
        path = _route_path(self.scope)
        return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")

    async def _authenticate(self, headers: dict[str, str]) -> bool:
        """Bind the request's vault view, or answer 401/429 (audited). True when bound."""
        token = _bearer(headers.get("authorization"))
        self.context.key_id = key_id_of(token) if token is not None else None
        service = self.service
        secret = SecretBytes(token.encode()) if token is not None else None
        try:
            outcome = await service.run(admit, service.vault, service.limiter,
                                        client=self.context.client, key_id=self.context.key_id,
                                        secret=secret, request_id=self.context.request_id)
        finally:
            if secret is not None:
                secret.wipe()
        self.context.counted_failure = outcome.counted_failure
        if outcome.error is not None:
            retry = outcome.retry_after
            await self._fail(outcome.error,
                             headers={"Retry-After": str(retry)} if retry is not None else None)
            return False
        self.context.view = outcome.view
        return True

    # --- receive and send ------------------------------------------------------------------------

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            limit = self.service.settings.max_body_bytes
            if self.received > limit:
                if not self.response_started:
                    await self._fail(RequestTooLarge(
                        f"the request body is larger than the limit of {limit} bytes"),
                        close=True)
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.response_done:
            return  # an answer was already given (413, timeout); the app's is dropped
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.response_started = True
            raw = [(k, v) for k, v in message.get("headers", [])
                   if k.lower() not in (b"x-request-id", b"server")]
            raw.append((b"x-request-id", self.context.request_id.encode()))
            raw.extend(_COMMON_HEADERS)
            message = {**message, "headers": raw}
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_done = True
        await self._send(message)

    async def _fail(self, error: BaseException, *, close: bool = False,
                    headers: dict[str, str] | None = None) -> None:
        """Answer with the problem for ``error`` (unless an answer has started)."""
        if self.response_started:
            return
        body, extra = problems.for_error(error, self.context.request_id)
        if body["status"] == 401:
            extra.setdefault("WWW-Authenticate", 'Bearer realm="faceseal"')
        extra.update(headers or {})
        if close:
            extra["Connection"] = "close"
        payload = problems.encode(body)
        raw = [(b"content-type", problems.CONTENT_TYPE.encode()),
               (b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await self.send({"type": "http.response.start", "status": body["status"],
                         "headers": raw})
        await self.send({"type": "http.response.body", "body": payload})

    # --- labels ----------------------------------------------------------------------------------

    def _route(self) -> str:
        """The route template (never the ids it was called with) for metrics and the log."""
        return self.service.routes.template(_route_path(self.scope))


def _route_path(scope: Scope) -> str:
    """The path below ``--root-path``: uvicorn puts the prefix in front of the path it received
    (from a proxy that stripped it) and in ``root_path``; routes match what follows it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):]
    return path


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (the first of repeated ones), decoded as latin-1."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        found.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for none or another
    scheme."""
    if value is None:
        return None
    match = _BEARER.match(value)
    return match.group(1) if match else None
