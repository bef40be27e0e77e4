"""The HTTP service's parts in-process: the failed-authentication limiter (with a fake clock),
metrics rendering, settings checks, problem details of internal errors, the client's URL
building. The end-to-end behaviour is in test_http_api.py and
test_http_limits.py."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from faceseal.access.counters import MemoryCounters
from faceseal.client import _path
from faceseal.errors import (
    InvalidInput,
    NotFound,
    StorageUnavailable,
)
from faceseal.http import problems
from faceseal.http.metrics import Metrics
from faceseal.http.ratelimit import AuthRateLimiter, client_key
from faceseal.http.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_blocks_at_the_limit_and_frees_as_failures_age() -> None:
    clock = Clock()
    window = MemoryCounters(clock=clock)
    for _ in range(2):
        window.record("k", 3600)
        clock.now += 100
    assert window.retry_after("k", 3, 3600) is None
    window.record("k", 3600)  # three failures at t=1000, 1100, 1200
    assert window.retry_after("k", 3, 3600) == pytest.approx(3600 - 200)
    clock.now = 1000 + 3600  # the first failure leaves the window
    assert window.retry_after("k", 3, 3600) is None
    window.record("k", 3600)
    assert window.retry_after("k", 3, 3600) == pytest.approx(100)


def test_window_forgets_the_oldest_keys_beyond_its_bound() -> None:
    window = MemoryCounters(max_entries=3, clock=Clock())
    for key in "abcd":
        window.record(key, 3600)
    assert len(window) == 3
    assert window.retry_after("a", 1, 3600) is None
    assert window.retry_after("d", 1, 3600) is not None


def test_limiter_blocks_by_key_or_by_client() -> None:
    clock = Clock()
    limiter = AuthRateLimiter(per_key=2, per_client=3, window=60, clock=clock)
    limiter.failed("10.0.0.1", "k1")
    limiter.failed("10.0.0.2", "k1")
    assert limiter.retry_after("10.0.0.3", "k1") == 60  # the key id, from anywhere
    assert limiter.retry_after("10.0.0.3", "k2") is None
    for _ in range(3):
        limiter.failed("10.0.0.9", None)
    assert limiter.retry_after("10.0.0.9", "k3") == 60  # the client, with any key
    clock.now += 59.5
    assert limiter.retry_after("10.0.0.9", None) == 1  # never 0: at least one second


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # same /64: one client
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, "unknown"),
    ("unix-socket-peer", "unix-socket-peer"),
])
def test_client_key(address: str | None, key: str) -> None:
    assert client_key(address) == key


@pytest.mark.parametrize(("options", "message"), [
    ({"auth_failures_per_key": 101}, "at most 100"),
    ({"auth_failures_per_key": 100, "auth_window_seconds": 1800}, "more than 100 failures"),
    ({"auth_failures_per_key": 0}, "positive whole number"),
    ({"max_body_bytes": -1}, "positive whole number"),
    ({"request_timeout": 0}, "positive number of seconds"),
    ({"request_timeout": float("nan")}, "positive number of seconds"),
    ({"threads": True}, "positive whole number"),
])
def test_settings_refuse_unsafe_values(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Settings(**options)  # type: ignore[arg-type]


def test_settings_allow_a_stricter_limit_over_a_shorter_window() -> None:
    assert Settings(auth_failures_per_key=10, auth_window_seconds=360).auth_failures_per_key == 10


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.started()
    metrics.finished("POST", '/v1/x/{id}"\\', 200, 0.02)
    metrics.started()
    metrics.finished("BREW", "unmatched", 401, 0.001)
    metrics.match("verify", True)
    text = metrics.render()
    assert text.endswith("\n")
    # Read back with prometheus-client's own parser: escaping and label order are its business.
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    route = '/v1/x/{id}"\\'
    assert samples[("faceseal_http_requests_total",
                    (("method", "POST"), ("route", route), ("status", "200")))] == 1
    assert samples[("faceseal_http_requests_total",
                    (("method", "OTHER"), ("route", "unmatched"), ("status", "401")))] == 1
    bucket = "faceseal_http_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.025"), ("method", "POST"), ("route", route)))] == 1
    assert samples[(bucket, (("le", "0.01"), ("method", "POST"), ("route", route)))] == 0
    assert samples[("faceseal_auth_failures_total", ())] == 1
    assert samples[("faceseal_http_requests_in_flight", ())] == 0
    assert samples[("faceseal_matches_total",
                    (("operation", "verify"), ("result", "match")))] == 1
    assert samples[("process_resident_memory_bytes", ())] > 0


def test_internal_problems_say_nothing_and_log_no_exception_text(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="faceseal.http")
    secret_text = "SELECT * FROM templates WHERE x = 'fsk_secret'"
    body, _ = problems.for_error(RuntimeError(secret_text), "rid-1")
    assert body["status"] == 500
    assert body["detail"] == problems.INTERNAL_DETAIL
    assert secret_text not in caplog.text
    assert "RuntimeError" in caplog.text
    body, _ = problems.for_error(StorageUnavailable("SQLite query failed: /srv/x.db"), "rid-2")
    assert (body["status"], body["code"]) == (503, "storage_unavailable")
    assert "/srv" not in str(body)
    body, headers = problems.for_error(NotFound("no subject 'a'"), "rid-3")
    assert (body["status"], body["detail"], headers) == (404, "no subject 'a'", {})


@pytest.mark.parametrize("segment", ["a/b", ".", "..", ""])
def test_client_refuses_ids_a_url_cannot_carry(segment: str) -> None:
    with pytest.raises(InvalidInput):
        _path("v1", "tenants", segment)


def test_client_percent_encodes_ids() -> None:
    assert _path("v1", "tenants", "a b", "subjects", "é?#%") == \
        "/v1/tenants/a%20b/subjects/%C3%A9%3F%23%25"


@pytest.mark.parametrize("bad", [[[0.1, 0.2], [0.3]], ["a", "b"], [[[0.1]]], {"x": 1}])
def test_client_refuses_what_is_not_an_encoding_before_sending(bad: object) -> None:
    from faceseal.client import FacesealClient

    # Port 9 (discard) on loopback: nothing listens, and nothing is sent anyway.
    with FacesealClient("http://127.0.0.1:9", "fsk_x") as client, pytest.raises(InvalidInput):
        client.enroll("s", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer fsk_x", "fsk_x"), ("BEARER fsk_x ", "fsk_x"), ("bearer\tfsk_x", "fsk_x"),
    ("Basic dXNlcjpwYXNz", None), ("Bearer ", None), ("Bearerfsk_x", None), (None, None),
])
def test_bearer_scheme_is_case_insensitive(header: str | None, token: str | None) -> None:
    from faceseal.http.middleware import _bearer

    assert _bearer(header) == token
