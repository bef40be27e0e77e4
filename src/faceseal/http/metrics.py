"""Service metrics for Prometheus, through ``prometheus-client``: the service's own counters and
latency histograms, and the process's (CPU, resident memory, open files, start time: the
client's process collector; the Python version and the interpreter's garbage collector).

Labels are bounded and carry no identity: the HTTP method, the *route template* (``/v1/tenants/
{tenant}/subjects/{subject_id}/verify``, never the tenant or subject it was called with), the
status code, the kind of match operation. Never a subject id, tenant, principal, key id or client
address.

Each :class:`Metrics` has a registry of its own (not the client's process-global one), so several
services in one process (tests, an embedding application) do not count into each other.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import (
    disable_created_metrics as _disable_created_metrics,
)

from faceseal import __version__

#: The classic text format, which ``generate_latest`` writes (the client's own "latest" content
#: type names a newer version that not every scraper negotiates).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets in seconds (upper bounds; +Inf is implied).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"



class Metrics:
    """Counters and latency histograms of one service process (thread-safe: the client's
    metrics are)."""

    def __init__(self) -> None:
        # The *_created series double every counter for a figure nobody here reads. The switch is
        # the client's and process-wide: flipped when a service is built, not when imported.
        _disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge("faceseal_build_info", "faceseal version.", ["version"],
              registry=registry).labels(__version__).set(1)
        self._requests = Counter(
            "faceseal_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=registry)
        self._latency = Histogram(
            "faceseal_http_request_duration_seconds",
            "Time to serve an HTTP request, by method and route template.",
            ["method", "route"], buckets=BUCKETS, registry=registry)
        self._in_flight = Gauge("faceseal_http_requests_in_flight", "HTTP requests being served.",
                                registry=registry)
        self._matches = Counter(
            "faceseal_matches",
            "Match decisions: verify (the probe matched the claimed subject) and identify (the "
            "best candidate was within the threshold).", ["operation", "result"],
            registry=registry)
        self._auth_failures = Counter(
            "faceseal_auth_failures",
            "Requests refused for a missing, malformed, unknown or revoked API key (401).",
            registry=registry)
        self._rate_limited = Counter(
            "faceseal_auth_rate_limited",
            "Requests refused by the failed-authentication rate limit (429).", registry=registry)
        self._denials = Counter(
            "faceseal_access_denials",
            "Requests refused for a role or tenant the principal lacks (403).", registry=registry)
        self._timeouts = Counter("faceseal_request_timeouts",
                                 "Requests that ran out of time (503 timeout).",
                                 registry=registry)
        self._internal_errors = Counter("faceseal_internal_errors",
                                        "Requests answered with a 5xx status.", registry=registry)
        self._by_status = {401: self._auth_failures, 403: self._denials,
                           429: self._rate_limited}

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self._in_flight.dec()
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)
        counter = self._internal_errors if status >= 500 else self._by_status.get(status)
        if counter is not None:
            counter.inc()

    def timed_out(self) -> None:
        self._timeouts.inc()

    def match(self, operation: str, matched: bool) -> None:
        """A verify or identify decision (identify: whether the best candidate matched)."""
        self._matches.labels(operation, "match" if matched else "no_match").inc()

    def render(self) -> str:
        return generate_latest(self.registry).decode()
