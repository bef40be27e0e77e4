"""The console's ASGI app, mounted by :func:`faceseal.http.app.create_app` at ``/ui``.

It runs behind the service's middleware (request ids, body limits, time limits, the access
log) like the API, with its own security headers on every response."""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from faceseal.http.console.jobs import KeyJobs
from faceseal.http.console.render import html
from faceseal.http.console.security import SecurityHeaders
from faceseal.http.console.sessions import SessionStore
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.console.views import (
    audit,
    auth,
    keys,
    matching,
    overview,
    principals,
    retention,
    subjects,
)
from faceseal.http.console.web import Console, base_of, signed_in
from faceseal.http.context import Service, context_of

PREFIX = "/ui"
_PHOTO_FIELDS = frozenset({"tenant", "subject_id", "face_index", "top_k"})


def create_console(service: Service, settings: ConsoleSettings) -> Starlette:
    sessions = SessionStore(idle_timeout=settings.idle_timeout, lifetime=settings.lifetime,
                            max_sessions=settings.max_sessions)
    console = Console(service, settings, sessions)
    console.jobs = KeyJobs(service)
    max_photos = service.settings.max_photos
    static = resources.files("faceseal.http.console") / "static"
    routes = [
        Route("/sign-in", auth.sign_in_form, methods=["GET"]),
        Route("/sign-in", auth.sign_in, methods=["POST"]),
        Route("/sign-out", signed_in(auth.sign_out), methods=["POST"]),
        Route("/", signed_in(overview.overview), methods=["GET"]),
        Route("/subjects", signed_in(subjects.subjects), methods=["GET"]),
        Route("/subjects/enrol", signed_in(subjects.enrol, files={"photo": max_photos},
                                           fields=_PHOTO_FIELDS), methods=["POST"]),
        Route("/subjects/erase", signed_in(subjects.confirm_erase), methods=["GET"]),
        Route("/subjects/erase", signed_in(subjects.erase), methods=["POST"]),
        Route("/try", signed_in(matching.show), methods=["GET"]),
        Route("/try/verify", signed_in(matching.verify, files={"photo": 1},
                                       fields=_PHOTO_FIELDS), methods=["POST"]),
        Route("/try/identify", signed_in(matching.identify, files={"photo": 1},
                                         fields=_PHOTO_FIELDS), methods=["POST"]),
        Route("/audit", signed_in(audit.audit), methods=["GET"]),
        Route("/audit/verify", signed_in(audit.verify_chain), methods=["POST"]),
        Route("/audit/export", signed_in(audit.export), methods=["GET"]),
        Route("/principals", signed_in(principals.principals), methods=["GET"]),
        Route("/principals/add", signed_in(principals.add), methods=["POST"]),
        Route("/principals/revoke", signed_in(principals.revoke), methods=["POST"]),
        Route("/keys", signed_in(keys.keys), methods=["GET"]),
        Route("/keys/kek/rotate", signed_in(keys.rotate_kek), methods=["POST"]),
        Route("/keys/kek/rewrap", signed_in(keys.rewrap), methods=["POST"]),
        Route("/keys/data/rotate", signed_in(keys.rotate_data), methods=["POST"]),
        Route("/keys/data/retire", signed_in(keys.retire), methods=["POST"]),
        Route("/retention", signed_in(retention.retention), methods=["GET"]),
        Route("/retention/set", signed_in(retention.set_retention), methods=["POST"]),
        Route("/retention/purge", signed_in(retention.purge_dry_run), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.console = console
    app.state.faceseal = service
    app.add_middleware(SecurityHeaders)
    return app


async def _not_found(request: Request, _error: Exception) -> Response:
    return html("refused.html", {"base": base_of(request), "message": "no such page",
                                 "request_id": context_of(request).request_id}, 404)


async def _not_allowed(request: Request, _error: Exception) -> Response:
    return html("refused.html", {"base": base_of(request),
                                 "message": "that method is not allowed here",
                                 "request_id": context_of(request).request_id}, 405)
