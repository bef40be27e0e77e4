"""Service metrics in the Prometheus text exposition format (version 0.0.4), hand-written.

Labels are bounded and carry no identity: the HTTP method, the *route template* (``/v1/tenants/
{tenant}/subjects/{subject_id}/verify``, never the tenant or subject it was called with), the
status code, the kind of match operation. Never a subject id, tenant, principal, key id or client
address.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable

from faceseal import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets in seconds (upper bounds; +Inf is implied).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.count += 1
        self.total += value


class Metrics:
    """Counters and latency histograms of one service process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._matches: dict[tuple[str, str], int] = defaultdict(int)
        self._in_flight = 0
        self.auth_failures = 0
        self.rate_limited = 0
        self.denials = 0
        self.timeouts = 0
        self.internal_errors = 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        with self._lock:
            self._in_flight -= 1
            self._requests[(method, route, str(status))] += 1
            histogram = self._latency.get((method, route))
            if histogram is None:
                histogram = self._latency[(method, route)] = _Histogram()
            histogram.observe(seconds)
            if status == 401:
                self.auth_failures += 1
            elif status == 403:
                self.denials += 1
            elif status == 429:
                self.rate_limited += 1
            elif status >= 500:
                self.internal_errors += 1

    def timed_out(self) -> None:
        with self._lock:
            self.timeouts += 1

    def match(self, operation: str, matched: bool) -> None:
        """A verify or identify decision (identify: whether the best candidate matched)."""
        with self._lock:
            self._matches[(operation, "match" if matched else "no_match")] += 1

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            _metric(lines, "faceseal_build_info", "gauge", "faceseal version.",
                    [({"version": __version__}, 1)])
            _metric(lines, "faceseal_http_requests_total", "counter",
                    "HTTP requests by method, route template and status.",
                    [({"method": m, "route": r, "status": s}, n)
                     for (m, r, s), n in sorted(self._requests.items())])
            lines += _histogram_lines(self._latency)
            _metric(lines, "faceseal_http_requests_in_flight", "gauge",
                    "HTTP requests being served.", [({}, self._in_flight)])
            _metric(lines, "faceseal_matches_total", "counter",
                    "Match decisions: verify (the probe matched the claimed subject) and "
                    "identify (the best candidate was within the threshold).",
                    [({"operation": o, "result": r}, n)
                     for (o, r), n in sorted(self._matches.items())])
            _metric(lines, "faceseal_auth_failures_total", "counter",
                    "Requests refused for a missing, malformed, unknown or revoked API key (401).",
                    [({}, self.auth_failures)])
            _metric(lines, "faceseal_auth_rate_limited_total", "counter",
                    "Requests refused by the failed-authentication rate limit (429).",
                    [({}, self.rate_limited)])
            _metric(lines, "faceseal_access_denials_total", "counter",
                    "Requests refused for a role or tenant the principal lacks (403).",
                    [({}, self.denials)])
            _metric(lines, "faceseal_request_timeouts_total", "counter",
                    "Requests that ran out of time (503 timeout).", [({}, self.timeouts)])
            _metric(lines, "faceseal_internal_errors_total", "counter",
                    "Requests answered with a 5xx status.", [({}, self.internal_errors)])
            return "\n".join(lines) + "\n"


def _histogram_lines(latency: dict[tuple[str, str], _Histogram]) -> list[str]:
    name = "faceseal_http_request_duration_seconds"
    lines = [f"# HELP {name} Time to serve an HTTP request, by method and route template.",
             f"# TYPE {name} histogram"]
    for (method, route), histogram in sorted(latency.items()):
        labels = {"method": method, "route": route}
        cumulative = 0
        for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {cumulative}")
        lines.append(f"{name}_sum{_labels(labels)} {histogram.total!r}")
        lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
    return lines


def _metric(lines: list[str], name: str, kind: str, help_text: str,
            samples: Iterable[tuple[dict[str, str], int | float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{_labels(labels)} {value}" for labels, value in samples)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
