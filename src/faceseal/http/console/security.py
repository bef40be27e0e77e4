"""The console's browser-side defences: response headers (a strict Content-Security-Policy
among them), the session cookie's flags, and the CSRF checks every state change passes."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Scripts and styles only from the console's own static files (no inline script or style, no
#: eval); photos previewed from blob: URLs the page makes itself; no framing by anyone.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes Origin null
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]

SESSION_COOKIE = "faceseal_console"
#: Double-submit token of the sign-in form (there is no session yet to hold one).
SIGN_IN_COOKIE = "faceseal_sign_in"
CSRF_FIELD = "csrf"


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the console, pages, redirects, errors
    and static files alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_tls(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or via a trusted proxy's
    X-Forwarded-Proto, which uvicorn applies only for --trusted-proxy addresses)."""
    return request.url.scheme == "https"


def cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


def set_cookie(response: Response, request: Request, name: str, value: str, *,
               max_age: int | None = None) -> None:
    """A cookie only this console reads: HttpOnly, SameSite=Strict, Secure under TLS, scoped
    to the console's path. Without ``max_age`` it ends with the browser."""
    response.set_cookie(name, value, max_age=max_age, path=cookie_path(request),
                        secure=is_tls(request), httponly=True, samesite="strict")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=cookie_path(request), secure=is_tls(request),
                           httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (``Origin``, sent with
    every cross-site POST; ``Sec-Fetch-Site``). Requests without either (old browsers, scripts)
    still need the CSRF token."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    site = request.headers.get("sec-fetch-site")
    return site in (None, "same-origin", "none")


def tokens_match(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of a CSRF token with the one the form sent."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))
