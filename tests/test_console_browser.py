"""The console in a real Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against a real ``faceseal serve`` (issue #17): an admin creates an enroller, a verifier and an
auditor; the enroller enrols a photo and erases a subject; the verifier tries a verify; the
auditor sees those events and verifies the chain; each role sees only its pages; sign-out
kills the session. One server and one browser for the module.

With ``FACESEAL_SCREENSHOTS=1`` the tests write the screenshots of docs/console.md into
docs/console/ (the normal run leaves tracked files alone).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from faceseal.http.console.security import SESSION_COOKIE

from .conftest import FACES_DIR, PROJECT_ROOT
from .console_support import XSS_ID
from .http_server import Served, served_vault

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = PROJECT_ROOT / "docs" / "console"
WAIT_SECONDS = 60  # photo encoding on a loaded test machine


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_vault(tmp_path_factory.mktemp("console-served")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    # Fail, never skip: the test command installs both (scripts/test).
    for program in (CHROMIUM, CHROMEDRIVER):
        assert program.exists(), "apt-get install chromium chromium-driver (scripts/test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--lang=en-GB", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land there
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The browser on the console of ``served``."""

    def __init__(self, driver: WebDriver, served: Served) -> None:
        self.driver = driver
        self.url = served.url + "/ui"

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def find(self, css: str):  # type: ignore[no-untyped-def]
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def wait_for(self, css: str) -> None:
        try:
            WebDriverWait(self.driver, WAIT_SECONDS).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:  # say what the page shows instead
            text = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"no {css} on {self.driver.current_url}:\n{text}") from None

    def _document(self) -> object:
        """Which document is shown: its time origin is new with every page load."""
        return self.driver.execute_script(
            "return document.readyState === 'complete' ? performance.timeOrigin : null")

    def _shows_another_document(self, before: object) -> bool:
        try:
            now = self._document()
        except WebDriverException:  # in the middle of the navigation
            return False
        return now is not None and now != before

    def submit(self, button: str, *, confirm: bool = False) -> None:
        """Click ``button`` and wait for the page it leads to (never the one still shown).

        Not selenium's ``staleness_of``: while a page is replaced, some chromedriver releases
        answer its probe with an "unknown error" instead of a stale-element one."""
        before = self._document()
        self.find(button).click()
        if confirm:
            WebDriverWait(self.driver, 5).until(expected_conditions.alert_is_present())
            self.driver.switch_to.alert.accept()
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            lambda _: self._shows_another_document(before))

    def sign_in(self, key: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/sign-in")
        field = self.find("#api_key")
        field.send_keys(key)
        field.send_keys(Keys.ENTER)  # the keyboard alone signs in
        self.wait_for("[data-principal]")

    def sign_out(self) -> None:
        self.submit("#sign-out")
        self.wait_for("#api_key")

    def menu(self) -> list[str]:
        return self.texts("header nav a")

    def cookie(self) -> str:
        cookie = self.driver.get_cookie(SESSION_COOKIE)
        assert cookie is not None
        return str(cookie["value"])

    def shot(self, name: str) -> None:
        if os.environ.get("FACESEAL_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            # The whole page, not only the viewport (Chromium's DevTools protocol).
            width, height = self.driver.execute_script(
                "return [document.documentElement.clientWidth,"
                " document.documentElement.scrollHeight]")
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {  # type: ignore[attr-defined]
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 2400),
                         "scale": 1}})
            (SHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def console(browser: WebDriver, served: Served) -> Console:
    return Console(browser, served)


@pytest.fixture(scope="module")
def keys(console: Console, served: Served) -> dict[str, str]:
    """The admin signs in and adds an enroller, a verifier and an auditor; each key is read
    from the page the one time it is shown."""
    console.sign_in(served.keys["admin"])
    assert console.menu() == ["Overview", "Principals", "Keys", "Retention"]
    found: dict[str, str] = {}
    for name, role, tenant in (("ui-enroller", "enroller", "acme"),
                               ("ui-verifier", "verifier", "acme"),
                               ("ui-auditor", "auditor", "")):
        console.open("/principals")
        console.find("#p-name").send_keys(name)
        console.find(f"#role-{role}").click()
        if tenant:
            console.find("#p-tenant").send_keys(tenant)
        else:
            console.find("#p-all").click()
        console.submit("#add-principal")
        console.wait_for("#new-key")
        found[name] = console.find("#new-key").text
        assert found[name].startswith("fsk_")
    console.open("/principals")
    page = console.driver.page_source
    assert all(key not in page for key in found.values())  # shown once, never again
    assert {"ui-enroller", "ui-verifier", "ui-auditor"} <= set(console.texts("#principals td"))
    console.shot("principals")
    console.sign_out()
    return found


def test_roles_walk_through_their_pages(console: Console, served: Served,
                                        keys: dict[str, str]) -> None:
    # The enroller: enrol a photo, enrol a subject whose id is markup, erase it.
    console.sign_in(keys["ui-enroller"])
    assert console.menu() == ["Overview", "Subjects", "Retention"]
    console.open("/subjects")
    for subject, photo in (("obama", "obama-1.jpg"), (XSS_ID, "biden-1.jpg")):
        console.find("#enrol-subject").send_keys(subject)
        console.find("#enrol-photo").send_keys(str(FACES_DIR / photo))
        preview = console.find("#enrol-preview img")  # console.js, allowed by the CSP
        WebDriverWait(console.driver, 10).until(
            lambda _, image=preview: image.get_property("naturalWidth"))
        console.submit("#enrol")
        console.wait_for("#enrolled")
        assert "the only face found" in console.find("#enrolled").text
    console.find("#enrol-subject").send_keys("front")  # a photo of two: the larger face
    console.find("#enrol-photo").send_keys(str(FACES_DIR / "two-people.jpg"))
    console.find("#enrol-face").send_keys("largest")
    console.submit("#enrol")
    console.wait_for("#enrolled")
    assert "the largest face" in console.find("#enrolled").text
    assert XSS_ID in console.texts("#subjects td.subject-id")  # the id, as text
    assert console.driver.execute_script("return window.__xss") is None  # and it never ran
    console.shot("subjects")
    erase = console.driver.find_elements(By.CSS_SELECTOR, "#subjects a.danger")
    next(link for link in erase if "%3Cscript" in str(link.get_attribute("href"))).click()
    console.wait_for("#confirm-erase")
    warning = console.find(".danger-zone").text
    assert "crypto-shredding" in warning
    assert "cannot be undone" in warning
    console.shot("erase")
    console.find("#confirm-erase").click()
    console.submit("#erase")
    console.wait_for("#erased")
    assert XSS_ID in console.find("#erased").text
    assert console.driver.execute_script("return window.__xss") is None
    console.open("/audit")  # not the enroller's page: the server refuses it
    assert "access denied" in console.find("#problem").text
    console.sign_out()

    # The verifier: try a verify with another photo of the enrolled subject.
    console.sign_in(keys["ui-verifier"])
    assert console.menu() == ["Overview", "Try verify / identify"]
    console.open("/try")
    assert not console.driver.find_elements(By.CSS_SELECTOR, "#identify")  # not its role
    console.find("#verify-subject").send_keys("obama")
    console.find("#verify-photo").send_keys(str(FACES_DIR / "obama-2.jpg"))
    console.submit("#verify")
    console.wait_for("#verify-result")
    result = console.find("#verify-result").text
    assert "Match for obama" in result
    assert "Distance" not in result  # the tenant's policy: a band, no exact distance
    console.shot("try")
    console.sign_out()

    # The auditor: the events above under their principals, then the chain verified.
    console.sign_in(keys["ui-auditor"])
    assert console.menu() == ["Overview", "Audit"]
    console.open("/audit?tenant=acme")
    rows = [row.text for row in console.driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    assert any("ui-enroller" in r and " enroll " in f" {r} " and "obama" in r for r in rows)
    assert any("ui-enroller" in r and " erase " in f" {r} " and "<script>" in r for r in rows)
    assert any("ui-verifier" in r and " verify " in f" {r} " and " ok" in r for r in rows)
    assert any("ui-enroller" in r and "audit.read" in r and "denied" in r for r in rows)
    assert console.driver.execute_script("return window.__xss") is None
    console.find("#f-principal").send_keys("ui-verifier")
    console.submit("#filter")
    assert all("ui-verifier" in r.text for r in
               console.driver.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
    console.open("/audit")
    console.submit("#verify-chain")
    console.wait_for("#chain-report")
    assert "Chain intact" in console.find("#chain-report").text
    assert not console.driver.find_elements(By.CSS_SELECTOR, "tr.broken")
    console.shot("audit")
    export = httpx.get(f"{console.url}/audit/export", cookies={SESSION_COOKIE: console.cookie()},
                       timeout=30)
    assert export.status_code == 200
    assert '"action":"verify"' in export.text
    assert '"principal":"ui-verifier"' in export.text
    console.sign_out()


def test_identify_discloses_what_the_role_may_see(console: Console, served: Served,
                                                  keys: dict[str, str]) -> None:
    """An identifier gets decisions and bands; a calibrator also the exact distances."""
    client = served.client("enroller")  # through the API: the console is not under test here
    try:
        client.enroll_photos("barack", [FACES_DIR / "obama-1.jpg"], tenant="acme")
    finally:
        client.close()
    for who, exact in (("identifier", False), ("calibrator", True)):
        console.sign_in(served.keys[who])
        console.open("/try")
        console.find("#identify-photo").send_keys(str(FACES_DIR / "obama-3.jpg"))
        console.submit("#identify")
        console.wait_for("#identify-result")
        result = console.find("#identify-result").text
        assert "barack" in console.texts("#identify-result td.subject-id")
        assert ("Distance" in result) is exact
        assert f"({'exact' if exact else 'band'} disclosure)" in result
        if exact:
            console.shot("identify")
        console.sign_out()


def test_sign_out_ends_the_session(console: Console, served: Served,
                                   keys: dict[str, str]) -> None:
    console.sign_in(keys["ui-verifier"])
    cookie = console.cookie()
    with httpx.Client(base_url=console.url, cookies={SESSION_COOKIE: cookie}) as http:
        assert http.get("/try").status_code == 200
        console.sign_out()
        assert console.driver.get_cookie(SESSION_COOKIE) is None
        answer = http.get("/try")
        assert answer.status_code == 303
        assert "/ui/sign-in" in answer.headers["location"]
    console.open("/try")  # the browser is back at the sign-in page too
    assert console.driver.find_elements(By.CSS_SELECTOR, "#api_key")


def test_the_admin_rotates_keys_with_progress(console: Console, served: Served,
                                              keys: dict[str, str]) -> None:
    console.sign_in(served.keys["admin"])
    console.shot("overview")
    assert "Ready" in console.find("#readiness").text
    console.open("/keys")
    before = int(console.find("#kek-version").text)
    console.submit("#rotate-kek", confirm=True)
    console.wait_for("#key-done")
    assert int(console.find("#kek-version").text) == before + 1
    console.submit("#rotate-data", confirm=True)
    WebDriverWait(console.driver, WAIT_SECONDS).until(
        lambda d: "Finished" in d.find_element(By.CSS_SELECTOR, "#job").text)
    assert "re-encrypted" in console.find("#job").text
    console.shot("keys")
    console.open("/retention")
    console.find("#p-days").send_keys("0")
    console.submit("#purge-dry-run")
    console.wait_for("#dry-run")
    assert "would be erased" in console.find("#dry-run").text
    console.shot("retention")
    console.sign_out()


def test_keyboard_and_phone_width(console: Console, served: Served,
                                  keys: dict[str, str]) -> None:
    console.sign_in(keys["ui-auditor"])
    console.open("/audit")
    body = console.find("body")
    body.send_keys(Keys.TAB)  # the first stop is the skip link
    focused = console.driver.switch_to.active_element
    assert focused.text == "Skip to content"
    cdp = console.driver.execute_cdp_cmd  # type: ignore[attr-defined]
    cdp("Emulation.setDeviceMetricsOverride",  # a phone: 390 CSS pixels wide, touch, mobile
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        console.open("/audit")
        inner, scroll = console.driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]")
        assert scroll <= inner  # nothing wider than the phone: the table scrolls in its box
        console.shot("audit-phone")
    finally:
        cdp("Emulation.clearDeviceMetricsOverride", {})
    console.sign_out()


def test_no_page_violated_the_content_security_policy(console: Console,
                                                      keys: dict[str, str]) -> None:
    """Every page above ran under the strict CSP without one refused script, style or image
    (the console needs nothing inline). Runs last: it reads the browser's log of the module."""
    messages = [entry["message"] for entry in console.driver.get_log("browser")]  # type: ignore[attr-defined]
    assert not [m for m in messages if "Content Security Policy" in m], messages
