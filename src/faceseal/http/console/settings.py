"""Settings of the browser console (``/ui``): on or off, and how long a session lives."""

from __future__ import annotations

from dataclasses import dataclass

from faceseal.errors import InvalidInput

#: OWASP ASVS 3.3.2 asks for re-authentication after a period of inactivity; 15 minutes is the
#: usual figure for consoles that reach sensitive data.
DEFAULT_IDLE_SECONDS = 15 * 60.0
#: A session ends this long after sign-in, active or not (ASVS 3.3.2: 12 hours at most).
DEFAULT_LIFETIME_SECONDS = 8 * 3600.0


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console behaves. Sessions live in the serving process's memory."""

    #: Serve the console under ``/ui`` (``faceseal serve --no-console`` turns it off).
    enabled: bool = True
    #: Seconds without a request after which a session is signed out.
    idle_timeout: float = DEFAULT_IDLE_SECONDS
    #: Seconds after sign-in after which a session is signed out however active.
    lifetime: float = DEFAULT_LIFETIME_SECONDS
    #: Sessions held at once; the one idle longest is dropped first beyond it.
    max_sessions: int = 10_000
    #: Newest audit events the audit page filters and pages through (export has them all).
    audit_window: int = 2000
    #: Rows per page on the audit and subjects pages.
    page_size: int = 50

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "lifetime"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value <= 7 * 86400):
                raise InvalidInput(f"console {name} must be a positive number of seconds "
                                   "(at most a week)")
        for name in ("max_sessions", "audit_window", "page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"console {name} must be a positive whole number")
