"""Helpers shared by the console tests: signing in through the form, reading the CSRF token."""

from __future__ import annotations

import re

import httpx

_SIGN_IN_TOKEN = re.compile(r'name="sign_in_token" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

#: A subject id that is markup: rendered as text, it must never run.
XSS_ID = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"\'&'


def sign_in(http: httpx.Client, key: str, base: str = "/ui") -> httpx.Response:
    """Sign in with ``key`` through the form (the client keeps the session cookie)."""
    form = http.get(f"{base}/sign-in")
    match = _SIGN_IN_TOKEN.search(form.text)
    assert match, form.text
    return http.post(f"{base}/sign-in", data={"sign_in_token": match.group(1),
                                              "api_key": key})


def csrf_of(page: httpx.Response) -> str:
    match = _CSRF.search(page.text)
    assert match, page.text
    return match.group(1)
