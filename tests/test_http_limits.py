"""The service's limits, against real ``faceseal serve`` processes: body size (refused before it
is read), image pixels, time, failed-authentication rate limits, internal errors without
internals, TLS, and the server's own option checks."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import re
import select
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from faceseal.client import FacesealClient
from faceseal.errors import AuthenticationFailed, RateLimited, ServiceUnavailable
from faceseal.vault import Vault

from .bad_inputs import png_claiming
from .conftest import invoke_cli, random_encodings
from .http_server import Served, served_vault, stop_server
from .keyservers import BAO_TOKEN_ENV, OpenBao, unique

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VECTOR = random_encodings(1, seed=5)[0].tolist()
MAX_BODY = 100_000


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wrong_secret(key: str) -> str:
    """The same key id with another secret: a well-formed key that fails."""
    prefix, key_id, _ = key.split("_", 2)
    return f"{prefix}_{key_id}_{'B' * 43}"


def raw_exchange(url: str, head: str, chunks: list[bytes] | None = None, *,
                 wait: float = 10.0, pause: float = 0.001,
                 ) -> tuple[int, dict[str, str], bytes, int]:
    """Send a request head (and body chunks, stopping as soon as a response arrives) over a
    plain socket; return the status, headers, body and how many body bytes were sent."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(head.encode())
        for chunk in chunks or []:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        data = b""
        deadline = time.monotonic() + wait
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            if time.monotonic() > deadline:
                raise TimeoutError("no complete response")
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            data += more
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body, sent


def _expected_length(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + len(sep) + int(line.split(b":")[1])
    return len(data) + 1


# --- body size, pixels, time -------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_vault(tmp_path_factory.mktemp("http-limits"), "--max-body", str(MAX_BODY),
                      "--max-image-pixels", "500000", "--timeout", "2",
                      "--auth-failures-per-client", "100000") as server:
        yield server


def subjects(served: Served) -> list[str]:
    with served.client("worker") as worker:
        return sorted(s.subject_id for s in worker.subjects(tenant="acme"))


def test_declared_oversized_body_is_refused_before_it_is_read(limited: Served) -> None:
    before = subjects(limited)
    head = (f"POST /v1/tenants/acme/subjects/big/photos HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {limited.keys['enroller']}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 50000000\r\n\r\n")
    # Not one byte of the 50 MB is sent: the answer comes anyway, at once.
    status, headers, body, _ = raw_exchange(limited.url, head, wait=5)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["code"] == "request_too_large"
    assert subjects(limited) == before


def test_streamed_oversized_body_is_refused_while_streaming(limited: Served) -> None:
    before = subjects(limited)
    head = (f"POST /v1/tenants/acme/subjects/big/templates HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {limited.keys['enroller']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
    total = 640  # 10 MB offered in 16 KiB chunks; the server stops reading at 100 kB
    status, _, body, sent = raw_exchange(limited.url, head, [chunk] * total, wait=10)
    assert status == 413
    assert json.loads(body)["code"] == "request_too_large"
    assert sent < 2 * MAX_BODY + 20 * len(chunk)  # answered long before the client was done
    assert subjects(limited) == before


def test_oversized_json_gets_413(limited: Served) -> None:
    with limited.http() as http:
        response = http.post("/v1/tenants/acme/subjects/big/templates",
                             json={"encodings": [VECTOR] * 100},
                             headers=bearer(limited.keys["enroller"]))
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(("photo", "status", "code"), [
    (_jpeg(1000, 1000), 413, "image_too_large"),  # 1 MP, small file: the pixel limit refuses it
    (png_claiming(60_000, 60_000), 413, "image_too_large"),  # a decompression bomb's header
    (_jpeg(700, 700), 422, "no_face"),  # within the limit: decoded, searched, no face
])
def test_pixel_limit_is_configurable_and_checked_before_decoding(
        limited: Served, photo: bytes, status: int, code: str) -> None:
    before = subjects(limited)
    assert len(photo) < MAX_BODY
    with limited.http() as http:
        response = http.post("/v1/tenants/acme/subjects/px/photos",
                             files={"photo": ("p", photo, "image/jpeg")},
                             headers=bearer(limited.keys["enroller"]))
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert subjects(limited) == before


def test_slow_request_times_out_with_503(limited: Served) -> None:
    head = (f"POST /v1/tenants/acme/subjects/slow/templates HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {limited.keys['enroller']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    status, _, body, _ = raw_exchange(limited.url, head, [b'{"encodings": [['], wait=15)
    elapsed = time.monotonic() - started
    assert status == 503
    problem = json.loads(body)
    assert problem["code"] == "timeout"
    assert 1.5 < elapsed < 10
    with limited.http() as http:
        metrics = http.get("/metrics").text
    # At least this one (an earlier test of this server may have timed out on a loaded machine).
    counted = re.search(r"^faceseal_request_timeouts_total ([0-9.]+)$", metrics, re.MULTILINE)
    assert counted is not None
    assert float(counted.group(1)) >= 1
    assert "slow" not in subjects(limited)


# --- failed-authentication rate limits -------------------------------------------------------


def test_key_id_is_limited_to_100_failures_per_hour(limited: Served) -> None:
    with limited.client("admin") as admin:
        victim = admin.add_principal(f"victim-{uuid.uuid4().hex[:6]}", ["enroller"],
                                     tenant="acme").api_key
    guess = wrong_secret(victim)
    url = "/v1/tenants/acme/subjects"
    with limited.http() as http:
        statuses = [http.get(url, headers=bearer(guess)).status_code for _ in range(100)]
        assert statuses == [401] * 100
        limited_response = http.get(url, headers=bearer(guess))
        assert limited_response.status_code == 429
        assert limited_response.json()["code"] == "rate_limited"
        assert 3500 < int(limited_response.headers["retry-after"]) <= 3600
        # The key id is locked, the right secret included (else guessing would go on, answered
        # by 429 instead of 401); other keys from the same client are not.
        assert http.get(url, headers=bearer(victim)).status_code == 429
        assert http.get(url, headers=bearer(limited.keys["enroller"])).status_code == 200
        request_id = f"limited-{uuid.uuid4().hex[:6]}"
        http.get(url, headers={**bearer(guess), "X-Request-ID": request_id})
    with limited.client("auditor-all") as auditor:
        event = next(e for e in auditor.audit_tail(20) if e["request_id"] == request_id)
    assert (event["action"], event["outcome"]) == ("authenticate", "unauthenticated")
    assert event["detail"] == {"reason": "rate limited", "key_id": victim.split("_")[1]}
    with FacesealClient(limited.url, victim) as client, pytest.raises(RateLimited):
        client.subjects(tenant="acme")


@pytest.fixture(scope="module")
def strict_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_vault(tmp_path_factory.mktemp("http-strict"),
                      "--auth-failures-per-client", "5") as server:
        yield server


def test_client_address_is_limited_and_cannot_spoof_another(strict_clients: Served) -> None:
    url = "/v1/tenants/acme/subjects"
    good = bearer(strict_clients.keys["enroller"])
    with strict_clients.http() as http:
        assert http.get(url, headers=good).status_code == 200
        assert [http.get(url, headers=bearer(f"guess-{i}")).status_code
                for i in range(5)] == [401] * 5
        refused = http.get(url, headers=bearer("guess-6"))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 3500
        assert http.get(url).status_code == 429  # no key at all: refused at once
        # No proxy is trusted: X-Forwarded-For from the client is ignored.
        spoofed = http.get(url, headers={**bearer("guess-7"), "X-Forwarded-For": "198.51.100.23"})
        assert spoofed.status_code == 429
        # A valid key from the blocked address is still served (the address may be a NAT).
        assert http.get(url, headers=good).status_code == 200
        # Liveness and metrics are not behind the limit.
        assert http.get("/healthz").status_code == 200
        assert "faceseal_auth_rate_limited_total 3.0" in http.get("/metrics").text


def test_a_blocked_address_never_refuses_a_valid_key(tmp_path: Path) -> None:
    """One guesser behind a shared address (NAT, a proxy not named with --trusted-proxy) must not
    lock out the principals behind it; guesses keep being refused and counted, and a key id's own
    limit still holds the right secret back."""
    with served_vault(tmp_path, "--auth-failures-per-client", "3",
                      "--auth-failures-per-key", "2") as server, server.http() as http:
        url = "/v1/tenants/acme/subjects"
        for i in range(3):
            assert http.get(url, headers=bearer(f"x{i}")).status_code == 401
        for who in ("enroller", "verifier", "admin"):
            response = http.get(url, headers=bearer(server.keys[who]))
            assert response.status_code in (200, 403), (who, response.text)
        guesses = [http.get(url, headers=bearer(wrong_secret(server.keys["verifier"])))
                   for _ in range(2)]
        assert [g.status_code for g in guesses] == [429, 429]
        # The verifier's key id has now failed twice: its own limit refuses even the right key.
        assert http.get(url, headers=bearer(server.keys["verifier"])).status_code == 429
        assert http.get(url, headers=bearer(server.keys["enroller"])).status_code == 200


def test_a_trusted_proxy_forwards_client_addresses(tmp_path: Path) -> None:
    with served_vault(tmp_path, "--auth-failures-per-client", "5",
                      "--trusted-proxy", "127.0.0.1") as server, server.http() as http:
        url = "/v1/tenants/acme/subjects"
        good = bearer(server.keys["enroller"])
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        for i in range(5):
            assert http.get(url, headers={**attacker, **bearer(f"x{i}")}).status_code == 401
        assert http.get(url, headers={**attacker, **bearer("x5")}).status_code == 429
        assert http.get(url, headers={**attacker, **good}).status_code == 200  # a valid key
        # Another client behind the same proxy is not locked out.
        assert http.get(url, headers={"X-Forwarded-For": "203.0.113.8", **good}
                        ).status_code == 200
        assert http.get(url, headers=good).status_code == 200  # the proxy itself


# --- internal errors ---------------------------------------------------------------------------


def test_internal_errors_reveal_nothing(tmp_path: Path) -> None:
    with served_vault(tmp_path) as server, server.http() as http:
        enroller = bearer(server.keys["enroller"])
        assert http.post("/v1/tenants/acme/subjects/s1/templates",
                         json={"encodings": [VECTOR]}, headers=enroller).status_code == 201
        # The store breaks under the running server (as root, permissions would not stop it).
        with sqlite3.connect(server.home / "templates.db") as db:
            db.execute("DROP TABLE templates")
            db.execute("DROP TABLE meta")
        responses = [
            http.post("/v1/tenants/acme/subjects/s2/templates", json={"encodings": [VECTOR]},
                      headers=enroller),
            http.get("/v1/tenants/acme/subjects", headers=enroller),
            http.delete("/v1/tenants/acme/subjects/s1", headers=enroller),
        ]
        ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "store": "unavailable", "key_provider": "ok", "audit": "ok", "changes": "ok"}
    key_ids = [key.split("_")[1] for key in server.keys.values()]
    for response in responses:
        assert response.status_code in (500, 503), response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["detail"].startswith("the service could not complete the request")
        text = response.text.lower()
        for leak in ("sqlite", "no such table", "templates", "select", "insert", "traceback",
                     str(server.home).lower(), str(server.keys_dir).lower(), ".db", "/"):
            assert leak not in text.replace("urn:faceseal:", ""), (leak, text)
        for key_id in key_ids:
            assert key_id not in text
    # The operator's log has the cause, under the request id; never a key.
    log = server.log()
    assert "no such table" in log
    assert responses[0].headers["x-request-id"] in log
    for key in server.keys.values():
        assert key.split("_", 2)[2] not in log


def test_a_key_provider_outage_is_503_never_401(tmp_path: Path, openbao: OpenBao,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With the KMS (OpenBao transit) frozen, key operations answer 503
    key_provider_unavailable and readiness says so; the API keys still authenticate."""
    uri = openbao.uri(unique("fs-http"), timeout=1)
    env = {BAO_TOKEN_ENV: openbao.token}
    monkeypatch.setenv(BAO_TOKEN_ENV, openbao.token)  # for the vault made in this process
    with served_vault(tmp_path, env=env, vault_options={"key_uri": uri}) as server, \
            server.http() as http:
        admin = bearer(server.keys["admin"])
        assert http.post("/v1/keys/kek/rotate", headers=admin).status_code == 200
        with openbao.frozen():
            rotated = http.post("/v1/keys/kek/rotate", headers=admin)
            ready = http.get("/readyz")
            listed = http.get("/v1/principals", headers=admin)
        assert rotated.status_code == 503
        assert rotated.json()["code"] == "key_provider_unavailable"
        assert "127.0.0.1" not in rotated.text
        assert str(openbao.port) not in rotated.text
        assert ready.status_code == 503
        assert ready.json()["checks"]["key_provider"] == "unavailable"
        assert listed.status_code == 200
        assert http.get("/readyz").status_code == 200  # back once the KMS answers


# --- TLS ---------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faceseal test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_is_served_and_verified(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with served_vault(tmp_path / "v", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                      client_options={"verify": str(cert)}) as server:
        assert server.url.startswith("https://")
        with server.client("enroller", verify=str(cert)) as enroller:
            assert enroller.enroll("tls", [VECTOR], tenant="acme").template_ids
        # An untrusted certificate is a connection problem, never a bad key.
        with server.client("enroller") as unverified, pytest.raises(ServiceUnavailable):
            unverified.subjects(tenant="acme")
        with FacesealClient(server.url.replace("https", "http"),
                            server.keys["enroller"]) as plain, pytest.raises(ServiceUnavailable):
            plain.subjects(tenant="acme")


def test_unreachable_service_is_not_a_bad_key() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FacesealClient(f"http://127.0.0.1:{port}", "fsk_x") as client, pytest.raises(
            ServiceUnavailable) as raised:
        client.subjects()
    assert not isinstance(raised.value, AuthenticationFailed)


def test_a_non_faceseal_answer_is_service_unavailable(tmp_path: Path) -> None:
    """A proxy's HTML error page is not mistaken for a faceseal verdict."""
    import http.server
    import threading

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>502 Bad Gateway</html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with FacesealClient(f"http://127.0.0.1:{server.server_port}", "fsk_x") as client, \
                pytest.raises(ServiceUnavailable, match="HTTP 502"):
            client.subjects()
    finally:
        server.shutdown()
        server.server_close()


# --- the server's own checks -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--ssl-certfile", "{cert}"], "TLS needs both"),
    (["--trusted-proxy", "not-an-address"], "is not an address or network"),
    (["--auth-failures-per-key", "101"], "101 is not in the range"),
    (["--port", "70000"], "the port must be within"),
    (["--root-path", "api/"], "--root-path starts with /"),
    (["--client-certs", "required", "--ssl-certfile", "{cert}", "--ssl-keyfile", "{cert}"],
     "client certificates need TLS and --ssl-ca-certs"),
])
def test_serve_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    result = invoke_cli("serve", "--vault", str(tmp_path / "none"),
                        *[a.format(cert=cert) for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with served_vault(tmp_path) as server:
        with server.client("enroller") as enroller:
            enroller.enroll("bye", [VECTOR], tenant="acme")
        assert stop_server(server.process) == 0
    assert "serving vault" in server.log()
    assert "faceseal: stopped" in server.log()  # the vault was closed, not killed


# --- other stores ------------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "files"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "files":
        return "files:templates"
    return str(request.getfixturevalue("pg_app_url"))


@pytest.mark.slow
def test_served_on_each_store_under_concurrent_requests(tmp_path: Path, store_url: str) -> None:
    """The server's thread pool shares one store: PostgreSQL (the real server, a least-privilege
    login) and the file store, with 8 clients at once."""
    encodings = random_encodings(8, seed=21)
    with served_vault(tmp_path, vault_options={"store_url": store_url}) as server, \
            server.client("enroller") as enroller, server.client("verifier") as verifier, \
            server.client("identifier") as identifier:
        for i, encoding in enumerate(encodings):
            enroller.enroll(f"s{i}", encoding, tenant="acme")

        def check(i: int) -> bool:
            genuine = verifier.verify(f"s{i % 8}", encodings[i % 8], tenant="acme").match
            best = identifier.identify(encodings[i % 8], tenant="acme").best
            return genuine and best is not None and best.subject_id == f"s{i % 8}"

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(check, range(64)))
        assert enroller.erase("s0", tenant="acme").key_material_destroyed
        with server.http() as http:
            assert http.get("/readyz").json()["ready"] is True
    with server.client("auditor-all") as auditor, pytest.raises(ServiceUnavailable):
        auditor.audit_verify()  # the server is gone: a connection error, not a bad key
    with Vault.open(server.home, api_key=server.keys["auditor-all"]) as vault:
        report = vault.audit_verify()
    assert report.ok
    assert report.events >= 8 + 64 * 2 + 1


class StrippingProxy(httpx.BaseTransport):
    """What ``location /faceseal/ { proxy_pass http://faceseal/; }`` does: strips the prefix and
    forwards the rest of the request unchanged."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.inner = httpx.HTTPTransport()
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        assert path.startswith(self.prefix + "/"), path
        self.seen.append(path)
        request.url = request.url.copy_with(path=path[len(self.prefix):])
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_the_api_works_behind_a_root_path(tmp_path: Path) -> None:
    with served_vault(tmp_path, "--root-path", "/faceseal",
                      "--auth-failures-per-client", "2") as server:
        proxy = StrippingProxy("/faceseal")
        public = server.url + "/faceseal"
        with FacesealClient(public, server.keys["enroller"], transport=proxy) as enroller:
            enroller.enroll("rooted", [VECTOR], tenant="acme")
            assert [s.subject_id for s in enroller.subjects(tenant="acme")] == ["rooted"]
        with FacesealClient(public, server.keys["verifier"], transport=proxy) as verifier:
            assert verifier.verify("rooted", np.asarray(VECTOR), tenant="acme").match
        assert proxy.seen
        assert all(p.startswith("/faceseal/v1/") for p in proxy.seen)
        with httpx.Client(base_url=public, transport=proxy) as http:
            schema = http.get("/openapi.json").json()
            assert schema["servers"] == [{"url": "/faceseal"}]
            # The prefix does not take authentication away, and a missing key is a 401.
            assert http.get("/v1/tenants/acme/subjects").status_code == 401
        # Valid requests were never counted as failures: the address is not blocked.
        assert "faceseal_auth_rate_limited_total 0.0" in httpx.get(server.url + "/metrics").text
