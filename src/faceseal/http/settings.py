"""Settings of the HTTP service: limits, timeouts, rate limits. Immutable and checked."""

from __future__ import annotations

import math
from dataclasses import dataclass

from faceseal.errors import InvalidInput

#: OWASP ASVS 2.2.1: no more than 100 failed attempts per hour on a single account.
MAX_AUTH_FAILURES_PER_KEY = 100
DEFAULT_WINDOW_SECONDS = 3600.0


@dataclass(frozen=True)
class Settings:
    """How the service bounds what a request may cost. Every limit has a safe default."""

    #: Largest request body accepted, in bytes. Checked against Content-Length before reading and
    #: counted while streaming (413 as soon as it is passed).
    max_body_bytes: int = 8 * 2**20
    #: Largest photo accepted, in pixels, read from the image header before any pixel is decoded
    #: (decompression bombs are refused with 413). A 12 MP phone photo fits.
    max_image_pixels: int = 16_000_000
    #: Pixels the face detector searches at most; larger photos are searched downscaled.
    max_detect_pixels: int = 2_000_000
    #: Photos per enrolment request (multipart).
    max_photos: int = 10
    #: Whole-request time limit in seconds (body upload included); 503 ``timeout`` after it.
    request_timeout: float = 30.0
    #: Failed authentications allowed per API key id within ``auth_window_seconds`` (at most
    #: 100: ASVS 2.2.1); further attempts with that key id get 429 until the window allows more.
    auth_failures_per_key: int = MAX_AUTH_FAILURES_PER_KEY
    #: Failed authentications allowed per client address (IPv6: per /64) within the window.
    auth_failures_per_client: int = 100
    auth_window_seconds: float = DEFAULT_WINDOW_SECONDS
    #: How many key ids and client addresses the limiter remembers (oldest forgotten first).
    rate_limit_entries: int = 100_000
    #: Threads running vault calls (photo decoding, matching, audit writes) at once.
    threads: int = 8
    #: Photo requests of one principal at work at once; more wait for one of these to finish
    #: (so that one principal's photos cannot starve another's).
    photo_requests_per_principal: int = 2
    #: Serve the OpenAPI document at /openapi.json.
    openapi: bool = True
    #: Where failed-authentication counts live: "store" (the vault's template store: shared by
    #: every replica and the CLI), "memory" (this process only), or a redis:// / rediss:// URL.
    rate_limits: str = "store"
    #: Seconds between this replica's change-log checks while idle (PostgreSQL also notifies).
    follow_interval: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("max_body_bytes", self.max_body_bytes)
        _positive_int("max_image_pixels", self.max_image_pixels)
        _positive_int("max_photos", self.max_photos)
        _positive_int("max_detect_pixels", self.max_detect_pixels)
        _positive_int("auth_failures_per_client", self.auth_failures_per_client)
        _positive_int("rate_limit_entries", self.rate_limit_entries)
        _positive_int("threads", self.threads)
        _positive_int("photo_requests_per_principal", self.photo_requests_per_principal)
        _positive_int("auth_failures_per_key", self.auth_failures_per_key)
        if self.auth_failures_per_key > MAX_AUTH_FAILURES_PER_KEY:
            raise InvalidInput(
                f"auth_failures_per_key may be at most {MAX_AUTH_FAILURES_PER_KEY} per window "
                "(OWASP ASVS 2.2.1)"
            )
        _positive_number("request_timeout", self.request_timeout)
        _positive_number("follow_interval", self.follow_interval)
        if self.rate_limits not in ("store", "memory") and not self.rate_limits.startswith(
                ("redis://", "rediss://", "unix://")):
            raise InvalidInput('rate_limits must be "store", "memory" or a redis:// URL')
        _positive_number("auth_window_seconds", self.auth_window_seconds)
        windows_per_hour = math.ceil(DEFAULT_WINDOW_SECONDS / self.auth_window_seconds)
        if self.auth_failures_per_key * windows_per_hour > MAX_AUTH_FAILURES_PER_KEY:
            raise InvalidInput(
                "auth_failures_per_key over auth_window_seconds would allow more than "
                f"{MAX_AUTH_FAILURES_PER_KEY} failures per hour (OWASP ASVS 2.2.1)"
            )


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive whole number")


def _positive_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise InvalidInput(f"{name} must be a positive number of seconds")
