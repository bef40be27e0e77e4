"""Durations and points in time as people type them: a number and a unit (``90d``, ``3y``,
``12h``, ``2w``) or a bare number of seconds; times as ISO 8601 or "that long ago"."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from faceseal.errors import InvalidInput

_UNITS = {
    "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
    "w": 7 * 86400.0, "y": 365 * 86400.0,
}
_DURATION = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*\Z")
#: Illinois BIPA (740 ILCS 14/15(a)): destroy biometric identifiers within 3 years of the
#: individual's last interaction at the latest.
BIPA_MAX_SECONDS = 3 * 365 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``45s``, ``30m``/``30min``, ``12h``, ``90d``, ``2w``, ``3y`` (365 d),
    or a bare number of seconds."""
    match = _DURATION.match(str(text).lower())
    if match is None or match.group(2) not in ("", *_UNITS):
        raise InvalidInput(
            f"not a duration: {text!r} (write a number and a unit: s, m, h, d, w, y; e.g. 90d)")
    seconds = float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
    if not math.isfinite(seconds):
        raise InvalidInput(f"duration out of range: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short, exact-enough rendering (``3y``, ``90d``, ``12h``, ``30m``, ``45s``)."""
    for unit in ("y", "w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_since(text: str, now: float | None = None) -> float:
    """A point in time: an ISO 8601 date/time (UTC unless it says otherwise), a Unix timestamp,
    or a duration meaning that long ago (``24h``)."""
    value = str(text).strip()
    now = time.time() if now is None else now
    try:
        return now - parse_duration(value) if value[-1:].isalpha() else float(value)
    except (InvalidInput, ValueError):
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"not a time: {text!r} (use 2025-01-31, 2025-01-31T12:00:00Z, a Unix timestamp, or "
            "a duration ago such as 24h)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
