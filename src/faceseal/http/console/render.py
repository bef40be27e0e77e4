"""HTML rendering: Jinja2 templates shipped in the package, every value escaped, and control
characters shown as visible escapes (``\\x07``) rather than sent raw to the browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e"
                      r"\u2066-\u2069]")


def visible(value: object) -> object:
    """Strings with control and bidirectional-override characters written as escapes, so
    that an id cannot hide text or reorder what the page shows. Other values unchanged."""
    if isinstance(value, Markup):  # already HTML (a filter's output): keep it HTML
        # Already Markup; the replacements are a backslash and hex digits, never markup.
        return Markup(_CONTROL.sub(_escape_control, str(value)))  # noqa: S704
    if isinstance(value, str):
        return _CONTROL.sub(_escape_control, value)
    return value


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def when(value: float | None) -> str:
    """A Unix time as UTC, to the second."""
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV = Environment(
    loader=PackageLoader("faceseal.http.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    finalize=visible,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["when"] = when


def html(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    page = _ENV.get_template(template).render(**context)
    return HTMLResponse(page, status_code=status)
