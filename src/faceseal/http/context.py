"""Per-service and per-request state, and running blocking vault calls off the event loop."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.routing import compile_path

from faceseal.encoders.deadline import call_with_deadline
from faceseal.errors import AuthenticationFailed
from faceseal.http.metrics import UNMATCHED, Metrics
from faceseal.http.photo_slots import PhotoSlots
from faceseal.http.ratelimit import AuthRateLimiter
from faceseal.http.settings import Settings
from faceseal.vault import Vault

P = ParamSpec("P")
T = TypeVar("T")

#: Where the per-request context lives in the ASGI scope.
SCOPE_KEY = "faceseal"


class RouteTemplates:
    """Maps a request path to the template of the route it names (``unmatched`` if none), so
    that metrics and logs are labelled by template whether or not routing was reached; and to
    the methods the path's routes take (for ``Allow``)."""

    def __init__(self, routes: dict[str, set[str]] | None = None) -> None:
        self._compiled = [(compile_path(t)[0], t, frozenset(m)) for t, m in (routes or {}).items()]

    def template(self, path: str) -> str:
        for regex, template, _ in self._compiled:
            if regex.match(path):
                return template
        return UNMATCHED

    def methods(self, path: str) -> list[str]:
        for regex, _, methods in self._compiled:
            if regex.match(path):
                return sorted(methods)
        return []


@dataclass
class Service:
    """What every request of one app shares: the open (unbound) vault, settings, counters."""

    vault: Vault
    settings: Settings
    metrics: Metrics
    limiter: AuthRateLimiter
    routes: RouteTemplates = field(default_factory=RouteTemplates)
    _threads: anyio.CapacityLimiter | None = None
    _photo_slots: PhotoSlots | None = None

    @property
    def threads(self) -> anyio.CapacityLimiter:
        # Created on first use, inside the event loop.
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(self.settings.threads)
        return self._threads

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking call in the service's thread pool. If the request is cancelled (its
        time limit passed) the call is abandoned: it finishes in its thread, its result unused."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                              abandon_on_cancel=True, limiter=self.threads)

    @property
    def photo_slots(self) -> PhotoSlots:
        if self._photo_slots is None:
            self._photo_slots = PhotoSlots(self.settings.photo_requests_per_principal)
        return self._photo_slots

    async def run_photos(self, request: Request, fn: Callable[P, T], /, *args: P.args,
                         **kwargs: P.kwargs) -> T:
        """:meth:`run` for a call that encodes photos: it waits for one of its principal's
        photo slots, and its dlib work stops at the request's time limit."""
        context = context_of(request)
        principal = context.view.principal if context.view is not None else None
        key = principal.principal_id if principal is not None else f"key:{context.key_id}"
        async with self.photo_slots.slot(key):
            return await self.run(call_with_deadline, context.deadline,
                                  functools.partial(fn, *args, **kwargs))


@dataclass
class RequestContext:
    """One request: its id, and the vault view bound to its API key (set by the middleware)."""

    request_id: str
    client: str | None
    view: Vault | None = None
    key_id: str | None = None
    counted_failure: bool = False
    #: When the request's time is up (time.monotonic); photo work stops there.
    deadline: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def service_of(request: Request) -> Service:
    service: Service = request.app.state.faceseal
    return service


def context_of(request: Request) -> RequestContext:
    context: RequestContext = request.scope[SCOPE_KEY]
    return context


def bound_vault(request: Request) -> Vault:
    """The vault view bound to this request's principal."""
    view = context_of(request).view
    if view is None:  # the middleware authenticates every /v1 request; this is a safety net
        raise AuthenticationFailed("no API key was checked for this request")
    return view
