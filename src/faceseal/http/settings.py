"""Settings of the HTTP service: limits, timeouts, rate limits. Immutable and checked.

Each setting is defined once, here: its default, its bounds and its help. ``faceseal serve``
builds its command-line options and their ``FACESEAL_*`` environment variables from these fields
(:func:`specs`), ``Settings`` checks the same bounds when built from Python, and the docs' table
of settings is checked against them (tests/test_docs.py). Importing this module needs no extra
(no FastAPI), so the CLI can read it before it knows whether the server extra is installed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from faceseal.errors import InvalidInput

#: OWASP ASVS 2.2.1: no more than 100 failed attempts per hour on a single account.
MAX_AUTH_FAILURES_PER_KEY = 100
DEFAULT_WINDOW_SECONDS = 3600.0
#: Environment variables of the settings are this prefix and the field name in capitals.
ENV_PREFIX = "FACESEAL_"


@dataclass(frozen=True)
class Spec:
    """How one setting is given on the command line, and its bounds (inclusive; None: open)."""

    flag: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    metavar: str | None = None
    #: Shown in the docs' table where the plain default reads badly (8388608 -> "8 MiB").
    shown_default: str | None = None


def _setting(default: Any, flag: str, help: str, *, minimum: float | None = None,
             maximum: float | None = None, metavar: str | None = None,
             shown_default: str | None = None) -> Any:
    return field(default=default, metadata={"spec": Spec(flag, help, minimum, maximum, metavar,
                                                         shown_default)})


@dataclass(frozen=True)
class Settings:
    """How the service bounds what a request may cost. Every limit has a safe default."""

    #: Checked against Content-Length before reading and counted while streaming.
    max_body_bytes: int = _setting(
        8 * 2**20, "--max-body", "Largest request body in bytes (413 beyond, decided before "
        "reading it).", minimum=1, shown_default="8 MiB")
    #: Read from the image header before any pixel is decoded (decompression bombs get 413).
    max_image_pixels: int = _setting(
        16_000_000, "--max-image-pixels", "Largest photo in pixels, checked before decoding "
        "(413 beyond).", minimum=1)
    max_detect_pixels: int = _setting(
        2_000_000, "--max-detect-pixels", "Pixels searched for faces at most; larger photos are "
        "searched downscaled and encoded at full size.", minimum=10_000)
    max_photos: int = _setting(10, "--max-photos", "Photos per enrolment request.",
                               minimum=1, maximum=100)
    #: Body upload included.
    request_timeout: float = _setting(
        30.0, "--timeout", "Seconds a request may take, body upload included (503 timeout "
        "after).", minimum=0.1, maximum=3600)
    #: At most 100 per hour: ASVS 2.2.1.
    auth_failures_per_key: int = _setting(
        MAX_AUTH_FAILURES_PER_KEY, "--auth-failures-per-key", "Failed authentications per key "
        "id per window before 429 (at most 100 per hour: OWASP ASVS 2.2.1).",
        minimum=1, maximum=MAX_AUTH_FAILURES_PER_KEY)
    auth_failures_per_client: int = _setting(
        100, "--auth-failures-per-client", "Failed authentications per client address (IPv6: "
        "/64) per window before 429.", minimum=1)
    auth_window_seconds: float = _setting(
        DEFAULT_WINDOW_SECONDS, "--auth-window", "Seconds over which failed authentications "
        "are counted.", minimum=1, maximum=DEFAULT_WINDOW_SECONDS * 24)
    #: Oldest forgotten first.
    rate_limit_entries: int = _setting(
        100_000, "--rate-limit-entries", "Key ids and client addresses the in-memory limiter "
        "remembers.", minimum=1)
    #: Photo decoding, matching, audit writes.
    threads: int = _setting(8, "--threads", "Threads running vault calls.",
                            minimum=1, maximum=256)
    #: So that one principal's photos cannot starve another's: with one each, a principal
    #: flooding photos holds one dlib lane and the other stays free (docs/http.md).
    photo_requests_per_principal: int = _setting(
        1, "--photo-requests-per-principal", "Photo requests of one principal at work at once "
        "(more wait their turn).", minimum=1, maximum=64)
    openapi: bool = _setting(True, "--openapi/--no-openapi", "Serve /openapi.json.")
    rate_limits: str = _setting(
        "store", "--rate-limits", "Where failed-authentication counts live: the vault's store "
        "(shared by every replica), this process's memory, or a redis:// URL.",
        metavar="store|memory|URL")
    #: PostgreSQL also notifies at once.
    follow_interval: float = _setting(
        1.0, "--follow-interval", "Seconds between checks of the change log while idle "
        "(PostgreSQL notifies).", minimum=0.01, maximum=3600)

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            _check(item, getattr(self, item.name))
        if self.rate_limits not in ("store", "memory") and not self.rate_limits.startswith(
                ("redis://", "rediss://", "unix://")):
            raise InvalidInput('rate_limits must be "store", "memory" or a redis:// URL')
        windows_per_hour = math.ceil(DEFAULT_WINDOW_SECONDS / self.auth_window_seconds)
        if self.auth_failures_per_key * windows_per_hour > MAX_AUTH_FAILURES_PER_KEY:
            raise InvalidInput(
                "auth_failures_per_key over auth_window_seconds would allow more than "
                f"{MAX_AUTH_FAILURES_PER_KEY} failures per hour (OWASP ASVS 2.2.1)"
            )


def specs() -> list[tuple[dataclasses.Field[Any], Spec]]:
    """Every setting's field and spec, in declaration order."""
    return [(item, item.metadata["spec"]) for item in dataclasses.fields(Settings)]


def env_var(name: str) -> str:
    """The environment variable of the setting ``name`` (``FACESEAL_MAX_BODY_BYTES``)."""
    return ENV_PREFIX + name.upper()


def _check(item: dataclasses.Field[Any], value: object) -> None:
    spec: Spec = item.metadata["spec"]
    if item.type in ("bool", "str"):
        if isinstance(value, bool) != (item.type == "bool") or not isinstance(value, bool | str):
            raise InvalidInput(f"{item.name} must be a {item.type}")
        return
    whole = item.type == "int"
    number_ok = (isinstance(value, int) if whole else isinstance(value, int | float)
                 and math.isfinite(value))
    if (isinstance(value, bool) or not number_ok or not isinstance(value, int | float)
            or (spec.minimum is not None and value < spec.minimum)
            or (spec.maximum is not None and value > spec.maximum)):
        raise InvalidInput(f"{item.name} must be {_kind(spec, whole)}")


def _kind(spec: Spec, whole: bool) -> str:
    """What a setting takes, in words (its bounds included)."""
    text = "a positive whole number" if whole else "a positive number of seconds"
    if spec.minimum is not None and spec.minimum != 1 and (whole or spec.minimum > 1):
        text += f", at least {spec.minimum:g}"
    if spec.maximum is not None:
        text += f", at most {spec.maximum:g}"
    return text
