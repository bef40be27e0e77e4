"""What a tenant or subject id may be: checked once, here, for every front end."""

from __future__ import annotations

from faceseal.errors import InvalidInput

MAX_ID_LENGTH = 256


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a non-empty string of at most :data:`MAX_ID_LENGTH` characters without
    control characters; otherwise :class:`~faceseal.errors.InvalidInput` naming ``kind``."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{kind} must be a non-empty string of at most {MAX_ID_LENGTH} chars")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"{kind} must not contain control characters")
    return value
