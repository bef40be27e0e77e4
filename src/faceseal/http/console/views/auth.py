"""Sign-in (an API key exchanged for a server-side session) and sign-out.

The key is posted once, checked by the vault exactly as the API checks it (refusals audited,
failures counted by the same rate limiter), and dropped: the session keeps the bound view, the
browser only an opaque session token in an HttpOnly cookie."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from faceseal.access.apikeys import key_id_of
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import AuthenticationFailed, RateLimited
from faceseal.http.console.render import html
from faceseal.http.console.security import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    clear_cookie,
    same_origin,
    set_cookie,
    tokens_match,
)
from faceseal.http.console.sessions import new_token
from faceseal.http.console.web import (
    MAX_FORM_FIELDS,
    Page,
    base_of,
    console_of,
    refused,
    to_sign_in,
)
from faceseal.http.context import Service, context_of

#: Seconds the sign-in form stays usable.
SIGN_IN_FORM_SECONDS = 600


def _form(request: Request, status: int = 200, error: str | None = None,
          expired: bool = False) -> Response:
    token = new_token()
    response = html("sign_in.html", {"base": base_of(request), "sign_in_token": token,
                                     "error": error, "expired": expired,
                                     "request_id": context_of(request).request_id}, status)
    set_cookie(response, request, SIGN_IN_COOKIE, token, max_age=SIGN_IN_FORM_SECONDS)
    return response


async def sign_in_form(request: Request) -> Response:
    session, _ = console_of(request).sessions.lookup(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return RedirectResponse(f"{base_of(request)}/", status_code=303)
    return _form(request, expired=request.query_params.get("expired") == "1")


async def sign_in(request: Request) -> Response:
    console = console_of(request)
    service = console.service
    context = context_of(request)
    if not same_origin(request):
        return refused(request, "cross-site request refused")
    data = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    presented = data.get("sign_in_token")
    if not tokens_match(request.cookies.get(SIGN_IN_COOKIE) or "\x00",
                        presented if isinstance(presented, str) else None):
        return refused(request, "the sign-in form expired or came from another site; reload "
                                "the sign-in page")
    raw = data.get("api_key")
    text = raw.strip() if isinstance(raw, str) else ""
    key_id = key_id_of(text)
    # The API's rules (faceseal.http.middleware): a key id that failed too often is refused; an
    # address that failed too often may still sign in with a valid key (one guesser behind a
    # NAT must not lock everyone out), and its failures are answered 429.
    limiter = service.limiter
    key_wait = limiter.key_retry_after(key_id)
    client_wait = limiter.client_retry_after(context.client)
    if key_wait is not None or (client_wait is not None and key_id is None):
        await service.run(_audit_rate_limited, service, key_id, context.request_id)
        return _too_many(request, max(w for w in (key_wait, client_wait) if w is not None))
    secret = SecretBytes(text.encode())
    try:
        view = await service.run(service.vault.as_key, secret, request_id=context.request_id)
    except AuthenticationFailed:
        limiter.failed(context.client, key_id)
        context.counted_failure = True
        if client_wait is not None:
            return _too_many(request, client_wait)
        return _form(request, 401, "that API key was refused (unknown, revoked or malformed)")
    finally:
        secret.wipe()
    assert view.principal is not None  # as_key returned: the key is a principal's
    console.sessions.end(request.cookies.get(SESSION_COOKIE))  # never reuse an old session
    token, _ = console.sessions.create(view, view.principal)
    response = RedirectResponse(f"{base_of(request)}/", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token)
    clear_cookie(response, request, SIGN_IN_COOKIE)
    return response


def _audit_rate_limited(service: Service, key_id: str | None, request_id: str) -> None:
    """The vault's audited refusal of a rate-limited attempt (it always raises)."""
    try:
        service.vault.refuse_rate_limited(key_id=key_id, request_id=request_id)
    except RateLimited:
        return


def _too_many(request: Request, wait: int) -> Response:
    response = _form(request, 429, f"too many failed sign-ins; try again in {wait} s")
    response.headers["Retry-After"] = str(wait)
    return response


async def sign_out(page: Page) -> Response:
    page.console.sessions.end(page.request.cookies.get(SESSION_COOKIE))
    response = to_sign_in(page.request)
    clear_cookie(response, page.request, SESSION_COOKIE)
    return response
