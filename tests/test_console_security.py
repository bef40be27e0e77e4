"""The console in process (issue #17): its defences attacked (CSRF, CSP on every page, escaped
output, cookie flags, idle expiry, sign-out, rate limits, roles refused by the server whatever
the menu shows) and its page actions checked. The browser flows are in
test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from faceseal.http.app import create_app
from faceseal.http.console.render import visible
from faceseal.http.console.security import SESSION_COOKIE
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.console.web import Console
from faceseal.http.settings import Settings
from faceseal.vault import Vault
from faceseal.vault.key_lease import key_operation

from .conftest import make_vault, random_encodings, vault_keys
from .console_support import XSS_ID, csrf_of, sign_in
from .test_audit_tamper import attack

PAGES = ("/ui/", "/ui/subjects", "/ui/try", "/ui/audit", "/ui/principals", "/ui/keys",
         "/ui/retention")


@dataclass
class Setup:
    app: object
    vault: Vault
    keys: dict[str, str]
    console: Console

    def client(self, *, https: bool = False) -> TestClient:
        base = "https://testserver" if https else "http://testserver"
        return TestClient(self.app, base_url=base, follow_redirects=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("console")
    home = root / "vault"
    with make_vault(home, root / "keys") as worker:
        worker.enroll("alice", [random_encodings(1, seed=1)[0]], tenant="acme")
        worker.enroll(XSS_ID, [random_encodings(1, seed=2)[0]], tenant="acme")
        admin_key = vault_keys(home).admin
    keys = {"admin": admin_key, "everything": vault_keys(home).worker}
    with Vault.open(home, api_key=admin_key) as admin:
        for name, roles, tenant in (("enroller", ["enroller"], "acme"),
                                    ("verifier", ["verifier"], "acme"),
                                    ("auditor", ["auditor"], None)):
            keys[name] = admin.add_principal(name, roles, tenant=tenant).api_key
    vault = Vault.open(home)
    app = create_app(vault, Settings(rate_limits="memory"), ConsoleSettings())
    mount = next(r for r in app.routes if getattr(r, "path", "") == "/ui")
    console: Console = mount.app.state.console  # type: ignore[attr-defined]
    try:
        yield Setup(app, vault, keys, console)
    finally:
        vault.close()


def _signed_in(setup: Setup, who: str, *, https: bool = False) -> TestClient:
    http = setup.client(https=https)
    answer = sign_in(http, setup.keys[who])
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"
    return http


def test_the_session_cookie_is_strict_and_the_key_stays_on_the_server(setup: Setup) -> None:
    for https in (False, True):
        http = setup.client(https=https)
        answer = sign_in(http, setup.keys["admin"])
        cookie = next(v for k, v in answer.headers.multi_items()
                      if k == "set-cookie" and v.startswith(SESSION_COOKIE + "="))
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert "path=/ui" in flags
        assert ("secure" in flags) is https
        assert setup.keys["admin"] not in cookie
        page = http.get("/ui/principals")
        assert page.status_code == 200
        assert setup.keys["admin"] not in page.text
        assert "fsk_" not in page.text  # no key, only key ids (which have no prefix)


def test_every_page_carries_a_strict_csp(setup: Setup) -> None:
    http = _signed_in(setup, "everything")  # every role: every page
    answers = [http.get(path) for path in PAGES]
    answers += [http.get("/ui/no-such-page"), http.get("/ui/static/console.js"),
                http.get("/ui/static/console.css"), http.get("/ui/subjects/erase?subject_id=x"),
                setup.client().get("/ui/sign-in"), setup.client().get("/ui/")]
    for answer in answers:
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, answer.request.url
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "default-src 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
    for answer in answers[:len(PAGES)]:
        assert answer.status_code == 200, answer.request.url
        assert "<script>" not in answer.text
        assert " style=" not in answer.text
        assert "onclick" not in answer.text


def test_state_changes_without_the_csrf_token_are_refused(setup: Setup) -> None:
    http = _signed_in(setup, "enroller")
    token = csrf_of(http.get("/ui/subjects?tenant=acme"))
    form = {"tenant": "acme", "subject_id": "alice", "confirm": "erase"}
    for data, headers in (
        (form, {}),                                                  # no token
        ({**form, "csrf": "x" * 43}, {}),                            # a wrong one
        ({**form, "csrf": token}, {"Origin": "https://evil.example"}),  # right token, wrong site
        ({**form, "csrf": token}, {"Sec-Fetch-Site": "cross-site"}),
    ):
        answer = http.post("/ui/subjects/erase", data=data, headers=headers)
        assert answer.status_code == 403
        assert "refused" in answer.text.lower() or "csrf" in answer.text.lower()
    listing = http.get("/ui/subjects?tenant=acme")
    assert ">alice<" in listing.text  # nothing was erased
    # The sign-in form has its own token: a forged sign-in is refused too.
    fresh = setup.client()
    answer = fresh.post("/ui/sign-in", data={"api_key": setup.keys["admin"]})
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_ids_are_rendered_as_text(setup: Setup) -> None:
    http = _signed_in(setup, "enroller")
    page = http.get("/ui/subjects?tenant=acme")
    assert "<script>window.__xss" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=" in page.text
    confirm = http.get("/ui/subjects/erase", params={"tenant": "acme", "subject_id": XSS_ID})
    assert "<script>window.__xss" not in confirm.text
    # Control characters never reach the vault as an id; the refusal is a page, not an echo.
    token = csrf_of(page)
    answer = http.post("/ui/subjects/erase", data={
        "csrf": token, "tenant": "acme", "subject_id": "bell\x07\u202eevil", "confirm": "erase"})
    assert answer.status_code == 422
    assert "control characters" in answer.text
    assert "\x07" not in answer.text
    assert "\u202e" not in answer.text


def test_an_idle_session_expires_to_the_sign_in_page(setup: Setup) -> None:
    http = _signed_in(setup, "auditor")
    assert http.get("/ui/audit").status_code == 200
    sessions = setup.console.sessions
    real = sessions.clock
    try:
        start = real()
        sessions.clock = lambda: start + sessions.idle_timeout + 1
        answer = http.get("/ui/audit")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in?expired=1"
        assert "Your session ended" in http.get(answer.headers["location"]).text
        assert http.get("/ui/audit").status_code == 303  # the session is gone for good
    finally:
        sessions.clock = real


def test_sign_out_ends_the_session_on_the_server(setup: Setup) -> None:
    http = _signed_in(setup, "verifier")
    cookie = http.cookies[SESSION_COOKIE]
    page = http.get("/ui/try")
    answer = http.post("/ui/sign-out", data={"csrf": csrf_of(page)})
    assert answer.status_code == 303
    assert f'{SESSION_COOKIE}=""' in answer.headers["set-cookie"]
    replay = setup.client()
    again = replay.get("/ui/try", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert again.status_code == 303
    assert again.headers["location"].startswith("/ui/sign-in")


def test_a_role_sees_only_its_pages_and_the_server_refuses_the_rest(setup: Setup) -> None:
    http = _signed_in(setup, "verifier")
    overview = http.get("/ui/")
    assert 'href="/ui/try"' in overview.text
    for hidden in ("/ui/subjects", "/ui/audit", "/ui/principals", "/ui/keys", "/ui/retention"):
        assert f'href="{hidden}"' not in overview.text
        answer = http.get(hidden)
        assert answer.status_code == 403, hidden
        assert "access denied" in answer.text
    assert http.get("/ui/subjects/erase?subject_id=alice&tenant=acme").status_code == 403
    enroller = _signed_in(setup, "enroller")
    assert enroller.get("/ui/try").status_code == 403
    token = csrf_of(overview)
    answer = http.post("/ui/principals/add", data={"csrf": token, "name": "sneaky",
                                                   "role_admin": "on"})
    assert answer.status_code == 403
    # The refusals are the vault's, audited under the verifier's name.
    auditor = _signed_in(setup, "auditor")
    denied = auditor.get("/ui/audit", params={"principal": "verifier", "outcome": "denied"})
    assert "principals.add" in denied.text
    assert "keys.status" in denied.text


def test_the_console_can_be_switched_off(setup: Setup) -> None:
    app = create_app(setup.vault, Settings(rate_limits="memory"),
                     ConsoleSettings(enabled=False))
    with TestClient(app) as http:
        answer = http.get("/ui/sign-in")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("application/problem+json")


def test_a_refused_key_does_not_sign_in(setup: Setup) -> None:
    http = setup.client()
    answer = sign_in(http, "fsk_" + "A" * 20 + "_" + "B" * 40)
    assert answer.status_code == 401
    assert SESSION_COOKIE + "=" not in answer.headers.get("set-cookie", "")
    assert "refused" in answer.text



def test_control_and_bidi_characters_are_shown_as_escapes() -> None:
    assert visible("a\x07b\u202ec\x00") == "a\\x07b\\u202ec\\x00"
    assert visible("plain <b>") == "plain <b>"  # escaping is autoescape's job, after this
    assert visible(7) == 7


def test_revoking_a_principal_ends_its_console_session(setup: Setup) -> None:
    with Vault.open(setup.vault.home, api_key=setup.keys["admin"]) as admin:
        key = admin.add_principal("short-lived", ["auditor"]).api_key
        setup.keys["short-lived"] = key
        http = _signed_in(setup, "short-lived")
        assert http.get("/ui/audit").status_code == 200
        admin.revoke_principal("short-lived")
    answer = http.get("/ui/audit")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/sign-in?expired=1"
    assert http.get("/ui/").status_code == 303  # the session is gone, not only refused once


def test_verify_chain_marks_an_edited_event(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    with make_vault(home, tmp_path / "keys") as worker:
        worker.enroll("bob", [random_encodings(1, seed=3)[0]], tenant="acme")
        edited = max(e["seq"] for e in worker.audit_tail(50) if e["action"] == "enroll")
    attack(home / "templates.db",
           ("UPDATE audit_events SET subject_id = 'mallory' WHERE seq = ?", (edited,)))
    with Vault.open(home) as vault:
        app = create_app(vault, Settings(rate_limits="memory"), ConsoleSettings())
        http = TestClient(app, follow_redirects=False)
        assert sign_in(http, vault_keys(home).worker).status_code == 303
        page = http.get("/ui/audit")
        answer = http.post("/ui/audit/verify", data={"csrf": csrf_of(page)})
    assert answer.status_code == 200
    assert "Chain broken" in answer.text
    marked = re.findall(r'<tr class="broken[^"]*"[^>]*>\s*<td>(\d+) <strong', answer.text)
    assert str(edited) in marked


def test_failed_sign_ins_are_rate_limited_like_api_calls(setup: Setup) -> None:
    app = create_app(setup.vault, Settings(rate_limits="memory", auth_failures_per_client=2),
                     ConsoleSettings())
    http = TestClient(app, follow_redirects=False)
    wrong = "fsk_" + "A" * 20 + "_" + "B" * 40
    assert [sign_in(http, wrong).status_code for _ in range(2)] == [401, 401]
    limited = sign_in(http, wrong)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert sign_in(http, "not a key at all").status_code == 429
    # A valid key still gets in from that address (everyone behind one NAT is not locked out).
    assert sign_in(http, setup.keys["auditor"]).status_code == 303


def test_console_events_carry_the_page_request_id(setup: Setup) -> None:
    auditor = _signed_in(setup, "auditor")
    first = auditor.get("/ui/audit", headers={"X-Request-ID": "console-page-1"})
    assert first.headers["x-request-id"] == "console-page-1"
    assert "console-page-1" in first.text  # the footer names it
    events = auditor.get("/ui/audit", params={"action": "audit.read", "principal": "auditor"})
    assert "<code>console-page</code>" in events.text  # the event of the first page, by its id


def test_an_admin_adds_and_revokes_a_principal_and_sets_retention(setup: Setup) -> None:
    http = _signed_in(setup, "admin")
    form = {"csrf": csrf_of(http.get("/ui/principals")), "name": "temp-auditor",
            "role_auditor": "on", "all_tenants": "on"}
    created = http.post("/ui/principals/add", data=form)
    key = re.search(r'<code id="new-key">(fsk_[^<]+)</code>', created.text)
    assert key, created.text
    assert key.group(1) not in http.get("/ui/principals").text  # shown once
    assert sign_in(setup.client(), key.group(1)).status_code == 303
    again = http.post("/ui/principals/add", data=form)  # names are unique for good
    assert again.status_code == 422
    revoked = http.post("/ui/principals/revoke", data={"csrf": form["csrf"],
                                                       "name": "temp-auditor"})
    assert 'id="revoked"' in revoked.text
    assert sign_in(setup.client(), key.group(1)).status_code == 401
    answer = http.post("/ui/retention/set", data={"csrf": form["csrf"], "tenant": "acme",
                                                  "days": "30"})
    assert answer.status_code == 200
    assert "30.0 days" in answer.text
    bad = http.post("/ui/retention/set", data={"csrf": form["csrf"], "tenant": "acme",
                                               "days": "forever"})
    assert bad.status_code == 422
    assert "number of days" in bad.text


def test_audit_filters_by_time_and_refuses_a_bad_date(setup: Setup) -> None:
    http = _signed_in(setup, "auditor")
    future = http.get("/ui/audit", params={"since": "2999-01-01"})
    assert "<p>0 event(s) match" in future.text
    past = http.get("/ui/audit", params={"until": "2000-01-01T00:00"})
    assert "<p>0 event(s) match" in past.text
    now = http.get("/ui/audit", params={"since": "2000-01-01", "outcome": "ok"})
    assert "<p>0 event(s) match" not in now.text
    assert 'outcome-denied' not in now.text
    bad = http.get("/ui/audit", params={"since": "yesterday"})
    assert bad.status_code == 200
    assert "since is a date" in bad.text


def test_key_operations_meet_the_vaults_lease_like_the_api(setup: Setup) -> None:
    """Another process's key operation (here: a lease this test holds) refuses the console's
    KEK rotation and its background data-key rotation at once (409), as it does the API's."""
    http = _signed_in(setup, "admin")
    token = csrf_of(http.get("/ui/keys"))
    with key_operation(setup.vault._store, "keys.migrate"):
        for path in ("/ui/keys/kek/rotate", "/ui/keys/data/rotate"):
            answer = http.post(path, data={"csrf": token})
            assert answer.status_code == 409, path
            assert "another key operation is running (keys.migrate" in answer.text
