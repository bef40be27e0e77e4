"""What every console page shares: the session lookup, the CSRF check on every POST, the vault
view bound to the session for this request, and turning vault errors into pages.

A page handler receives a :class:`Page` and calls the vault through ``page.vault``, the
session principal's view tagged with this request's id: the vault authorises and audits each
call exactly as it does for the JSON API. ``page.may(action)`` asks the vault's own
permission table (:func:`faceseal.access.principals.authorize`) only to decide what to *show*;
the vault still refuses whatever the page calls and the principal may not do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from faceseal.access.principals import authorize
from faceseal.access.roles import GLOBAL_ACTIONS
from faceseal.errors import (
    AccessDenied,
    AuthenticationFailed,
    FacesealError,
    MalformedRequest,
    UserError,
)
from faceseal.http import problems
from faceseal.http.console import nav
from faceseal.http.console.render import html
from faceseal.http.console.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    clear_cookie,
    same_origin,
    tokens_match,
)
from faceseal.http.console.sessions import Session, SessionStore
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.context import Service, context_of
from faceseal.http.multipart import read_form
from faceseal.vault import Vault
from faceseal.vault.config import DEFAULT_TENANT

log = logging.getLogger("faceseal.http.console")

#: Text fields a console form may carry (anything else is refused by the multipart reader).
MAX_FORM_FIELDS = 32


@dataclass
class Console:
    """The console of one service: its settings, sessions and background key work."""

    service: Service
    settings: ConsoleSettings
    sessions: SessionStore
    jobs: Any = None  # faceseal.http.console.jobs.KeyJobs (set by the app)


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[bytes] = field(default_factory=list)


@dataclass
class Page:
    """One signed-in request."""

    request: Request
    console: Console
    session: Session
    vault: Vault
    form: Form

    @property
    def service(self) -> Service:
        return self.console.service

    @property
    def base(self) -> str:
        return base_of(self.request)

    def may(self, action: str, tenant: str | None = None) -> bool:
        """Whether the vault's permission table lets the principal ``action`` (for what to show;
        the vault decides again when called)."""
        principal = self.session.principal
        where = None if action in GLOBAL_ACTIONS else (tenant or principal.tenant)
        return authorize(principal, action, where).allowed

    def require(self, *actions: str) -> None:
        """Refuse (403) a page that only shows a form, when the principal may do none of the
        actions behind it. Pages that read or change data need no such check: the vault
        refuses and audits the call itself."""
        if not any(self.may(action, self.tenant()) for action in actions):
            principal = self.session.principal
            raise AccessDenied(f"access denied to {principal.name}: role "
                               f"{principal.role_names} may not use this page")

    def tenant(self) -> str:
        """The tenant the page works on: the form's or query's ``tenant``, else the principal's
        own, else ``default``. The vault checks it like any id."""
        chosen = self.form.fields.get("tenant") or self.request.query_params.get("tenant")
        return chosen or self.session.principal.tenant or DEFAULT_TENANT

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return html(template, {**self.common(), **context}, status)

    def common(self) -> dict[str, Any]:
        principal = self.session.principal
        return {"base": self.base, "csrf": self.session.csrf, "principal": principal,
                "menu": nav.visible(principal), "current": self.request.url.path,
                "request_id": context_of(self.request).request_id, "error": None,
                "notice": None}


Handler = Callable[[Page], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def base_of(request: Request) -> str:
    """The console's URL path (``/ui``, below any --root-path)."""
    return str(request.scope.get("root_path", "")) or "/ui"


def to_sign_in(request: Request, *, expired: bool = False) -> Response:
    target = f"{base_of(request)}/sign-in" + ("?expired=1" if expired else "")
    response = RedirectResponse(target, status_code=303)
    if expired:
        clear_cookie(response, request, SESSION_COOKIE)
    return response


def signed_in(handler: Handler, *, files: dict[str, int] | None = None,
              fields: frozenset[str] = frozenset()) -> Endpoint:
    """A console endpoint: a live session or a redirect to sign-in; on POST the origin and the
    CSRF token checked before anything else happens; vault errors as pages."""

    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        token = request.cookies.get(SESSION_COOKIE)
        session, expired = console.sessions.lookup(token)
        if session is None:
            return to_sign_in(request, expired=expired or bool(token))
        form = Form()
        if request.method == "POST":
            checked = await _checked_form(request, session, files or {}, fields)
            if isinstance(checked, Response):
                return checked
            form = checked
        context = context_of(request)
        view = session.view.for_request(context.request_id)
        context.view = view  # photo slots, like the API's, are per principal
        page = Page(request, console, session, view, form)
        try:
            return await handler(page)
        except AuthenticationFailed:
            # The key was revoked (or the principal's row changed) while signed in.
            console.sessions.end(token)
            return to_sign_in(request, expired=True)
        except AccessDenied as error:
            return page.render("error.html", 403, title="Not allowed", message=str(error))
        except FacesealError as error:
            status = problems.status_for(error)
            message = str(error) if isinstance(error, UserError) else problems.INTERNAL_DETAIL
            return page.render("error.html", status, title="Could not do that",
                               message=message)
        finally:
            form.files.clear()

    return endpoint


async def _checked_form(request: Request, session: Session, files: dict[str, int],
                        fields: frozenset[str]) -> Form | Response:
    """The POSTed form once its origin and CSRF token are checked, or the refusal page."""
    if not same_origin(request):
        return refused(request, "cross-site request refused")
    try:
        form = await read_console_form(request, files, fields)
    except UserError as error:
        return refused(request, str(error), problems.status_for(error))
    if not tokens_match(session.csrf, form.fields.get(CSRF_FIELD)):
        log.warning("console: a POST without a valid CSRF token was refused (request_id=%s)",
                    context_of(request).request_id)
        return refused(request, "the form's CSRF token is missing or wrong; reload the page "
                                "and try again")
    return form


async def read_console_form(request: Request, files: dict[str, int],
                            fields: frozenset[str]) -> Form:
    """The POSTed form: multipart (photo uploads, read with the API's bounded reader) or
    URL-encoded."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parsed = await read_form(content_type, request.stream(), file_fields=files,
                                 text_fields=fields | {CSRF_FIELD})
        photos = [p for name in files for p in parsed.files.get(name, []) if p]
        return Form(dict(parsed.fields), photos)
    if content_type.startswith("application/x-www-form-urlencoded"):
        data = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        return Form({k: v for k, v in data.items() if not isinstance(v, UploadFile)})
    if not content_type:
        return Form()
    raise MalformedRequest("a console form is URL-encoded or multipart")


def refused(request: Request, message: str, status: int = 403) -> Response:
    """A refusal page for a request that has no page context (CSRF, origin, bad form)."""
    return html("refused.html", {"base": base_of(request), "message": message,
                                 "request_id": context_of(request).request_id}, status)
