"""The HTTP API end to end, against a real ``faceseal serve`` process on 127.0.0.1.

Real photos, real vault, real uvicorn: enrol from a photo, verify genuine and impostor, identify,
erase; every role's allowed and denied calls; bad requests each refused with the right status and
nothing changed; request ids, problem details, metrics without identities.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faceseal.client import ApiError, FacesealClient
from faceseal.errors import AccessDenied, AuthenticationFailed, InvalidInput, NotFound
from faceseal.http.admission import NO_KEY
from faceseal.vault.guard import REFUSED_MESSAGE
from faceseal.vault.key_lease import key_operation

from .bad_inputs import grey_jpeg, png_claiming
from .conftest import EncodingOf, random_encodings, reopen_vault
from .http_server import Served, served_vault

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"
REQUEST_ID = re.compile(r"\A[0-9a-f]{32}\Z")
SAMPLE = re.compile(r'[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [0-9.e+-]+|[a-z_]+_bucket'
                    r'\{.*le="[^"]+"\} [0-9]+')


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("http-api")
    tmpdir = root / "server-tmp"
    tmpdir.mkdir()
    with served_vault(root, env={"TMPDIR": str(tmpdir)}) as server:
        server.tmpdir = tmpdir
        yield server


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with served.http() as client:
        yield client


@pytest.fixture(scope="module")
def clients(served: Served) -> Iterator[dict[str, FacesealClient]]:
    """One client per principal, kept open (a new httpx client costs an SSL context)."""
    made = {who: served.client(who) for who in served.keys}
    yield made
    for client in made.values():
        client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def subject_counts(clients: dict[str, FacesealClient], tenant: str = "acme") -> dict[str, int]:
    return {s.subject_id: s.templates for s in clients["worker"].subjects(tenant=tenant)}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:faceseal:problem:{code}"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == f"urn:faceseal:request:{body['request_id']}"
    assert body["title"]
    assert body["detail"]
    return body


# --- the main flow, with real photos ---------------------------------------------------------


def test_enrol_photo_verify_genuine_and_impostor_identify_erase(
        clients: dict[str, FacesealClient], faces_dir: Path, encoding_of: EncodingOf) -> None:
    obama, biden = unique("obama"), unique("biden")
    enroller, verifier = clients["enroller"], clients["verifier"]
    identifier = clients["identifier"]
    enrolled = enroller.enroll_photos(obama, [faces_dir / "obama-1.jpg"], tenant="acme")
    assert (enrolled.tenant, enrolled.subject_id, len(enrolled.template_ids)) == (
        "acme", obama, 1)
    assert enrolled.model_id == "dlib-resnet-v1"
    enroller.enroll(biden, encoding_of("biden-2.jpg"), tenant="acme")

    genuine = verifier.verify(obama, faces_dir / "obama-2.jpg", tenant="acme")  # a photo
    assert genuine.match
    # A plain verifier gets the decision and a band, never the distance (threat-model.md).
    assert (genuine.distance, genuine.score, genuine.disclosure) == (None, "strong", "band")
    assert genuine.threshold == 0.6
    assert genuine.template_id == enrolled.template_ids[0]
    impostor = verifier.verify(obama, encoding_of("biden-1.jpg"), tenant="acme")
    assert not impostor.match
    assert (impostor.distance, impostor.score, impostor.template_id) == (None, "none", None)
    exact = clients["calibrator"].verify(obama, encoding_of("biden-1.jpg"), tenant="acme")
    assert exact.disclosure == "exact"
    assert exact.distance is not None
    assert exact.distance > 0.6

    found = identifier.identify((faces_dir / "obama-small.jpg").read_bytes(), tenant="acme",
                                top_k=2)
    assert found.best is not None
    assert found.best.subject_id == obama
    found = identifier.identify(encoding_of("biden-1.jpg"), tenant="acme", top_k=2)
    assert found.best is not None
    assert found.best.subject_id == biden
    assert found.gallery_size >= 2

    erased = enroller.erase(obama, tenant="acme")
    assert (erased.templates_erased, erased.key_material_destroyed) == (1, True)
    with pytest.raises(NotFound):
        verifier.verify(obama, encoding_of("obama-2.jpg"), tenant="acme")
    after = identifier.identify(encoding_of("obama-2.jpg"), tenant="acme", top_k=100)
    assert obama not in {c.subject_id for c in after.candidates}


def test_photo_with_two_faces_needs_a_face_index(clients: dict[str, FacesealClient],
                                                 faces_dir: Path) -> None:
    enroller = clients["enroller"]
    result = enroller.enroll_photos(unique("pair"), [faces_dir / "two-people.jpg"],
                                    tenant="acme", face_index=1)
    assert len(result.template_ids) == 1
    with pytest.raises(ApiError) as refused:
        enroller.enroll_photos(unique("pair"), [faces_dir / "two-people.jpg"], tenant="acme")
    assert refused.value.status == 422
    assert refused.value.problem is not None
    assert refused.value.problem["code"] == "multiple_faces"


def test_encodings_enrolment_round_trips_through_json(
        clients: dict[str, FacesealClient]) -> None:
    subject = unique("enc")
    encodings = random_encodings(3, seed=7)
    enrolled = clients["enroller"].enroll(subject, encodings, tenant="acme")
    assert len(enrolled.template_ids) == 3
    for row in encodings:  # each template is found again at distance 0: exact round trip
        result = clients["calibrator"].verify(subject, row, tenant="acme")
        assert result.match
        assert result.distance == 0.0


# --- roles and tenants -----------------------------------------------------------------------

Call = Callable[[httpx.Client, dict[str, str], str], httpx.Response]
PROBE = random_encodings(1, seed=11)[0].tolist()


def _enroll(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/subjects/{unique('new')}/templates",
                     json={"encodings": [PROBE]}, headers=headers)


def _verify(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/subjects/matrix/verify", json={"encoding": PROBE},
                     headers=headers)


def _identify(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/identify", json={"encoding": PROBE},
                     headers=headers)


def _subjects(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.get(f"/v1/tenants/{tenant}/subjects", headers=headers)


def _erase(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.delete(f"/v1/tenants/{tenant}/subjects/doomed", headers=headers)


def _principals(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.get("/v1/principals", headers=headers)


def _add_principal(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post("/v1/principals", headers=headers,
                     json={"name": unique("p"), "roles": ["verifier"], "tenant": tenant})


def _audit_tail(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.get("/v1/audit/events", params={"count": 5, "tenant": tenant}, headers=headers)


def _audit_verify(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.get("/v1/audit/verify", headers=headers)


def _enroll_many(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/batch/enroll", headers=headers,
                     json={"templates": [{"subject_id": unique("bulk"), "encoding": PROBE}]})


def _identify_many(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/batch/identify", headers=headers,
                     json={"encodings": [PROBE, PROBE]})


def _key_status(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.get("/v1/keys", headers=headers)


def _rotate_kek(http: httpx.Client, headers: dict[str, str], tenant: str) -> httpx.Response:
    return http.post("/v1/keys/kek/rotate", headers=headers)


OPERATIONS: dict[str, Call] = {
    "enroll": _enroll, "verify": _verify, "identify": _identify, "subjects": _subjects,
    "erase": _erase, "principals.list": _principals, "principals.add": _add_principal,
    "audit.read": _audit_tail, "audit.verify": _audit_verify, "keys.status": _key_status,
    "keys.rotate": _rotate_kek, "enroll_many": _enroll_many, "identify_many": _identify_many,
}
#: Who may do what (on its own tenant); from docs/access.md's permission table.
ALLOWED: dict[str, set[str]] = {
    "enroller": {"enroll", "enroll_many", "subjects", "erase"},
    "verifier": {"verify"},
    "identifier": {"identify", "identify_many"},
    "auditor": {"audit.read"},
    "auditor-all": {"audit.read", "audit.verify"},
    "admin": {"principals.list", "principals.add", "keys.status", "keys.rotate"},
    "admin-acme": {"principals.list", "principals.add"},  # key operations span every tenant
}
#: Principals scoped to every tenant (the others only to acme).
ALL_TENANTS = {"admin", "auditor-all"}
#: Operations whose tenant is not in the request: a tenant-scoped principal is refused only
#: when the action spans every tenant (audit.verify), or sees only its own (principals.list).
TENANTLESS = {"principals.list", "audit.verify", "keys.status", "keys.rotate"}


def _expected(who: str, operation: str, tenant: str) -> bool:
    if operation not in ALLOWED[who]:
        return False
    return tenant == "acme" or who in ALL_TENANTS or operation in TENANTLESS


@pytest.fixture(scope="module")
def matrix_subjects(clients: dict[str, FacesealClient]) -> None:
    """``matrix`` in acme and other, for verify; ``doomed`` re-created before each erase."""
    for tenant in ("acme", "other"):
        clients["worker"].enroll("matrix", [PROBE], tenant=tenant)


def state(clients: dict[str, FacesealClient]) -> tuple[object, ...]:
    """What a refused call must leave as it was: every subject and every principal."""
    return (subject_counts(clients, "acme"), subject_counts(clients, "other"),
            sorted((p.name, p.active) for p in clients["admin"].principals()))


@pytest.mark.parametrize("tenant", ["acme", "other"])
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("who", sorted(ALLOWED))
def test_each_role_allowed_and_denied(served: Served, http: httpx.Client,
                                      clients: dict[str, FacesealClient],
                                      matrix_subjects: None, who: str, operation: str,
                                      tenant: str) -> None:
    allowed = _expected(who, operation, tenant)
    if operation == "erase":
        clients["worker"].enroll("doomed", [PROBE], tenant=tenant)
    before = None if allowed else state(clients)
    request_id = unique("matrix")
    response = OPERATIONS[operation](http, {**bearer(served.keys[who]),
                                            "X-Request-ID": request_id}, tenant)
    events = [e for e in clients["auditor-all"].audit_tail(10)
              if e["request_id"] == request_id]
    if allowed:
        assert response.status_code in (200, 201), response.text
        # One event, or two for key operations (begin and end: their work is outside the store).
        assert [(e["outcome"], e["principal"]) for e in events] in ([("ok", who)],
                                                                   [("ok", who)] * 2)
    else:
        body = assert_problem(response, 403, "forbidden")
        assert "access denied" in body["detail"]
        # The denial is audited under the request's id, and nothing changed.
        assert [(e["outcome"], e["principal"]) for e in events] == [("denied", who)]
        assert state(clients) == before


# --- bad requests: the right 4xx, and nothing changes ----------------------------------------

WELL_FORMED_UNKNOWN = "fsk_0123456789abcdef_" + "A" * 43
VECTOR = random_encodings(1, seed=3)[0].tolist()


def _json_body(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


Auth = Callable[[Served], dict[str, str]]
AS_ENROLLER: Auth = lambda s: bearer(s.keys["enroller"])  # noqa: E731
NO_AUTH: Auth = lambda s: {}  # noqa: E731


def _as(who: str) -> Auth:
    return lambda s: bearer(s.keys[who])


def _token(token: str) -> Auth:
    return lambda s: {"Authorization": token}


def _raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def _with_token(text: str) -> dict[str, Any]:
    """The encodings document with one value replaced by a non-JSON token."""
    return _raw_json(json.dumps({"encodings": [VECTOR]}).replace(repr(VECTOR[5]), text, 1))


def _photo(data: bytes, **fields: str) -> dict[str, Any]:
    return {"files": {"photo": ("photo", data, "image/jpeg")}, "data": fields}


ENCODINGS = {"json": {"encodings": [VECTOR]}}
#: (id, method, target, auth, request options, status, code)
BAD_REQUESTS: list[tuple[str, str, str, Auth, dict[str, Any], int, str]] = [
    ("no auth", "POST", "templates", NO_AUTH, ENCODINGS, 401, "unauthenticated"),
    ("basic auth", "POST", "templates", _token("Basic dXNlcjpwYXNz"), ENCODINGS, 401,
     "unauthenticated"),
    ("malformed key", "POST", "templates", _token("Bearer not-a-key"), ENCODINGS, 401,
     "unauthenticated"),
    ("wrong key", "POST", "templates", _token(f"Bearer {WELL_FORMED_UNKNOWN}"), ENCODINGS, 401,
     "unauthenticated"),
    ("revoked key", "POST", "templates", _as("revoked"), ENCODINGS, 401, "unauthenticated"),
    ("other tenant's subject", "POST", "templates", _as("enroller-other"), ENCODINGS, 403,
     "forbidden"),
    ("other tenant's erase", "DELETE", "existing", _as("enroller-other"), {}, 403, "forbidden"),
    ("malformed JSON", "POST", "templates", AS_ENROLLER, _raw_json('{"encodings": [[0.1,'), 400,
     "malformed_request"),
    ("not JSON at all", "POST", "templates", AS_ENROLLER, _raw_json("encodings"), 400,
     "malformed_request"),
    ("wrong dimension", "POST", "templates", AS_ENROLLER, {"json": {"encodings": [VECTOR[:127]]}},
     422, "invalid_encoding"),
    ("one wrong dimension among good ones", "POST", "templates", AS_ENROLLER,
     {"json": {"encodings": [VECTOR, [*VECTOR, 0.0]]}}, 422, "invalid_encoding"),
    ("NaN", "POST", "templates", AS_ENROLLER, _with_token("NaN"), 400, "malformed_request"),
    ("Infinity", "POST", "templates", AS_ENROLLER, _with_token("-Infinity"), 400,
     "malformed_request"),
    ("NaN as a verify probe", "POST", "verify", _as("verifier"), _raw_json(
        '{"encoding": [' + ", ".join(["0.1"] * 127 + ["NaN"]) + "]}"), 400,
     "malformed_request"),
    ("body not UTF-8", "POST", "templates", AS_ENROLLER, _raw_json("").copy() | {
        "content": '{"encodings": [["é"]]}'.encode("latin-1")}, 400, "malformed_request"),
    ("overflow to infinity", "POST", "templates", AS_ENROLLER, _with_token("1e999"), 422,
     "invalid_input"),
    ("huge value", "POST", "templates", AS_ENROLLER, {"json": {"encodings": [[1e300] * 128]}},
     422, "invalid_input"),
    ("strings for numbers", "POST", "templates", AS_ENROLLER,
     {"json": {"encodings": [[str(v) for v in VECTOR]]}}, 422, "invalid_input"),
    ("unknown field", "POST", "templates", AS_ENROLLER,
     {"json": {"encodings": [VECTOR], "dtype": "float32"}}, 422, "invalid_input"),
    ("no encodings", "POST", "templates", AS_ENROLLER, {"json": {"encodings": []}}, 422,
     "invalid_input"),
    ("unknown model", "POST", "templates", AS_ENROLLER,
     {"json": {"encodings": [VECTOR], "model": "arcface"}}, 422, "invalid_input"),
    ("control character in the subject id", "POST", "templates-ctl", AS_ENROLLER, ENCODINGS,
     422, "invalid_input"),
    ("bad request id", "POST", "templates", lambda s: {**bearer(s.keys["enroller"]),
                                                       "X-Request-ID": "has space"},
     ENCODINGS, 400, "malformed_request"),
    ("bulk: wrong dimension", "POST", "bulk", AS_ENROLLER, {"json": {"templates": [
        {"subject_id": "b1", "encoding": VECTOR}, {"subject_id": "b2", "encoding": VECTOR[:64]}]}},
     422, "invalid_encoding"),
    ("bulk: control character in an id", "POST", "bulk", AS_ENROLLER, {"json": {"templates": [
        {"subject_id": "b1\x07", "encoding": VECTOR}]}}, 422, "invalid_input"),
    ("bulk: NaN", "POST", "bulk", AS_ENROLLER, _raw_json(
        '{"templates": [{"subject_id": "b1", "encoding": [' + ", ".join(["0.1"] * 127 + ["NaN"])
        + "]}]}"), 400, "malformed_request"),
    ("bulk: nothing", "POST", "bulk", AS_ENROLLER, {"json": {"templates": []}}, 422,
     "invalid_input"),
    ("photo that is not an image", "POST", "photos", AS_ENROLLER, _photo(b"\xff\xd8 no"), 422,
     "image_unreadable"),
    ("photo without a face", "POST", "photos", AS_ENROLLER, _photo(grey_jpeg()), 422, "no_face"),
    ("image bomb", "POST", "photos", AS_ENROLLER, _photo(png_claiming(100_000, 100_000)), 413,
     "image_too_large"),
    ("JSON to the photo route", "POST", "photos", AS_ENROLLER, {"json": {"photo": "x"}}, 415,
     "unsupported_media_type"),
    ("unexpected multipart field", "POST", "photos", AS_ENROLLER,
     _photo(b"x", tenant="other"), 422, "invalid_input"),
    ("bad face index", "POST", "photos", AS_ENROLLER, _photo(b"x", face_index="-1"), 422,
     "invalid_input"),
    ("truncated multipart", "POST", "photos", AS_ENROLLER, {
        "content": b'--b\r\nContent-Disposition: form-data; name="photo"\r\n\r\nabc',
        "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400,
     "malformed_request"),
]


@pytest.fixture(scope="module")
def revoked(served: Served) -> None:
    with served.client("admin") as admin:
        created = admin.add_principal("revoked", ["enroller"], tenant="acme")
        served.keys["revoked"] = created.api_key
        admin.revoke_principal("revoked")


@pytest.mark.parametrize(("method", "target", "auth", "options", "status", "code"),
                         [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_refused_and_nothing_changes(
        served: Served, http: httpx.Client, clients: dict[str, FacesealClient], revoked: None,
        method: str, target: str,
        auth: Auth, options: dict[str, Any], status: int, code: str) -> None:
    clients["worker"].enroll("existing", [VECTOR], tenant="acme")
    before = state(clients)
    subject = unique("bad")
    paths = {
        "templates": f"/v1/tenants/acme/subjects/{subject}/templates",
        "templates-ctl": f"/v1/tenants/acme/subjects/{subject}%01/templates",
        "photos": f"/v1/tenants/acme/subjects/{subject}/photos",
        "existing": "/v1/tenants/acme/subjects/existing",
        "verify": "/v1/tenants/acme/subjects/existing/verify",
        "bulk": "/v1/tenants/acme/batch/enroll",
    }
    options = dict(options)
    headers = {**auth(served), **options.pop("headers", {})}
    response = http.request(method, paths[target], headers=headers, **options)
    body = assert_problem(response, status, code)
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="faceseal"'
        # One message for every refused key, one for none: nothing tells which keys exist.
        assert body["detail"] == (NO_KEY if "Authorization" not in headers
                                  or not headers["Authorization"].startswith("Bearer ")
                                  else REFUSED_MESSAGE)
    assert state(clients) == before


def test_errors_never_echo_the_encoding(served: Served, http: httpx.Client) -> None:
    values = [0.123456789012345] * 127
    response = http.post("/v1/tenants/acme/subjects/x/verify", json={"encoding": values},
                         headers=bearer(served.keys["verifier"]))
    assert_problem(response, 422, "invalid_encoding")
    assert "0.1234567" not in response.text
    response = http.post("/v1/tenants/acme/subjects/x/verify",
                         json={"encoding": [*values, "0.98765"]},
                         headers=bearer(served.keys["verifier"]))
    assert_problem(response, 422, "invalid_input")
    assert "0.98765" not in response.text
    assert "0.1234567" not in response.text


# --- request ids, problem details, metrics, operations -----------------------------------------


def test_request_id_is_returned_and_audited(served: Served, http: httpx.Client,
                                            clients: dict[str, FacesealClient]) -> None:
    response = http.get("/v1/tenants/acme/subjects", headers=bearer(served.keys["enroller"]))
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert REQUEST_ID.match(generated)
    mine = unique("req") + ".~!"
    response = http.get("/v1/tenants/acme/subjects",
                        headers={**bearer(served.keys["enroller"]), "X-Request-ID": mine})
    assert response.headers["x-request-id"] == mine
    refused = http.get("/v1/tenants/acme/subjects",
                       headers={**bearer(WELL_FORMED_UNKNOWN), "X-Request-ID": mine + "-bad"})
    assert refused.status_code == 401
    events = {e["request_id"]: e for e in clients["auditor-all"].audit_tail(100)}
    assert events[generated]["action"] == "subjects"
    assert (events[mine]["action"], events[mine]["principal"]) == ("subjects", "enroller")
    refusal = events[mine + "-bad"]
    assert (refusal["action"], refusal["outcome"]) == ("authenticate", "unauthenticated")
    assert refusal["detail"] == {"reason": "unknown key", "key_id": "0123456789abcdef"}


def test_client_errors_are_the_vault_errors(served: Served,
                                           clients: dict[str, FacesealClient]) -> None:
    verifier = clients["verifier"]
    with pytest.raises(NotFound) as missing:
        verifier.verify("nobody-" + uuid.uuid4().hex, VECTOR, tenant="acme",
                        request_id="my-request-1")
    assert isinstance(missing.value, ApiError)
    assert (missing.value.status, missing.value.request_id) == (404, "my-request-1")
    assert missing.value.problem is not None
    assert missing.value.problem["code"] == "not_found"
    with pytest.raises(AccessDenied):
        verifier.subjects(tenant="acme")
    with FacesealClient(served.url, WELL_FORMED_UNKNOWN) as stranger, pytest.raises(
            AuthenticationFailed):
        stranger.subjects(tenant="acme")
    assert WELL_FORMED_UNKNOWN not in repr(stranger)


def test_unknown_routes_and_methods(served: Served, http: httpx.Client) -> None:
    assert_problem(http.get("/nowhere"), 404, "not_found")
    # Under /v1 the key is checked first: an unknown route does not tell strangers it is unknown.
    assert_problem(http.get("/v1/nowhere"), 401, "unauthenticated")
    assert_problem(http.get("/v1/nowhere", headers=bearer(served.keys["worker"])), 404,
                   "not_found")
    response = http.put("/v1/principals", headers=bearer(served.keys["admin"]))
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"


def test_responses_are_not_cacheable(served: Served, http: httpx.Client) -> None:
    response = http.get("/v1/tenants/acme/subjects", headers=bearer(served.keys["enroller"]))
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "server" not in response.headers


def test_health_and_readiness(served: Served, http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "caught_up": True, "changes_behind": 0,
                            "checks": {"store": "ok", "key_provider": "ok", "audit": "ok",
                                       "changes": "ok"}}
    with served.client(None) as anonymous:
        assert anonymous.health()
        assert anonymous.ready().ready


def test_openapi_document_is_served(served: Served, http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "fsk_<key id>_<secret>",
        "description": "A principal's API key: `Authorization: Bearer fsk_...`."}
    verify = document["paths"]["/v1/tenants/{tenant}/subjects/{subject_id}/verify"]["post"]
    assert verify["security"] == [{"apiKey": []}]
    assert set(verify["responses"]) >= {"200", "400", "401", "403", "404", "413", "422", "429",
                                        "500", "503"}
    assert PROBLEM in verify["responses"]["404"]["content"]
    schema = document["components"]["schemas"]["VerifyEncodingRequest"]
    assert schema["additionalProperties"] is False
    encoding = schema["properties"]["encoding"]
    assert (encoding["minItems"], encoding["maxItems"]) == (128, 128)
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_metrics_count_requests_and_matches_but_name_nobody(
        served: Served, http: httpx.Client, clients: dict[str, FacesealClient]) -> None:
    secret_subject = unique("metrics-subject")
    clients["enroller"].enroll(secret_subject, [VECTOR], tenant="acme")
    assert clients["verifier"].verify(secret_subject, VECTOR, tenant="acme").match
    assert not clients["verifier"].verify(secret_subject, [-v for v in VECTOR],
                                          tenant="acme").match
    http.get("/v1/tenants/acme/subjects", headers=bearer(WELL_FORMED_UNKNOWN))
    text = http.get("/metrics").text
    assert http.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    route = "/v1/tenants/{tenant}/subjects/{subject_id}/verify"
    assert re.search(rf'faceseal_http_requests_total{{method="POST",route="{re.escape(route)}",'
                     r'status="200"} [1-9]', text)
    assert re.search(r'faceseal_matches_total{operation="verify",result="match"} [1-9]', text)
    assert re.search(r'faceseal_matches_total{operation="verify",result="no_match"} [1-9]', text)
    assert re.search(r"faceseal_auth_failures_total [1-9]", text)
    assert re.search(r"faceseal_access_denials_total \d", text)
    assert "faceseal_http_request_duration_seconds_bucket" in text
    # The process's own figures, from prometheus-client's collectors.
    assert re.search(r"^process_resident_memory_bytes [0-9.e+]+$", text, re.MULTILINE)
    assert re.search(r"^process_cpu_seconds_total [0-9.e+]+$", text, re.MULTILINE)
    for name in (secret_subject, "acme", "enroller", "verifier", "test-worker", "0123456789abcdef",
                 *(key.split("_")[1] for key in served.keys.values())):
        assert name not in text
    # Every sample line is "name{labels} value" or "name value".
    for line in text.splitlines():
        assert line.startswith("#") or SAMPLE.fullmatch(line), line


def test_access_log_names_routes_not_people(served: Served) -> None:
    log = served.log()
    assert "faceseal.http.access" in log
    assert "/v1/tenants/{tenant}/subjects/{subject_id}/verify" in log
    for subject in ("doomed", "existing", "obama-", "biden-", "metrics-subject"):
        assert f"/{subject}" not in log
    for key in served.keys.values():
        assert key not in log
        assert key.split("_", 2)[2] not in log


def test_principals_over_http(served: Served, clients: dict[str, FacesealClient]) -> None:
    name = unique("door")
    admin = clients["admin"]
    created = admin.add_principal(name, ["verifier"], tenant="acme")
    assert created.api_key.startswith("fsk_")
    assert created.api_key not in repr(created)
    listed = {p.name: p for p in admin.principals()}
    assert listed[name].roles == ["verifier"]
    assert listed[name].tenant == "acme"
    with FacesealClient(served.url, created.api_key) as door:
        with pytest.raises(NotFound):
            door.verify("nobody", VECTOR, tenant="acme")
        revoked = admin.revoke_principal(name)
        assert not revoked.active
        with pytest.raises(AuthenticationFailed):
            door.verify("nobody", VECTOR, tenant="acme")
    with pytest.raises(NotFound):
        admin.revoke_principal(name)


def test_audit_over_http(clients: dict[str, FacesealClient]) -> None:
    auditor, scoped = clients["auditor-all"], clients["auditor"]
    report = auditor.audit_verify()
    assert report.ok
    assert report.events > 0
    assert all(e["tenant"] == "acme" for e in auditor.audit_tail(20, tenant="acme"))
    assert all(e["tenant"] == "acme" for e in scoped.audit_tail(20))
    with pytest.raises(AccessDenied):
        scoped.audit_tail(5, tenant="other")
    with pytest.raises(AccessDenied):
        scoped.audit_verify()


def test_uploads_never_spill_to_disk(served: Served, clients: dict[str, FacesealClient],
                                     faces_dir: Path) -> None:
    """Photos are parsed in memory: a 2 MB upload leaves nothing in the server's TMPDIR (where
    a spooling form parser would write anything above 1 MiB)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(faces_dir / "obama-1.jpg").save(buffer, "PNG", compress_level=0)
    photo = buffer.getvalue()
    assert len(photo) > 2 * 2**20
    with pytest.raises(NotFound):  # encoded, then not found
        clients["verifier"].verify(unique("nobody"), photo, tenant="acme")
    assert list(served.tmpdir.iterdir()) == []


def test_key_custody_over_http(clients: dict[str, FacesealClient]) -> None:
    admin, verifier = clients["admin"], clients["verifier"]
    subject = unique("keys")
    clients["enroller"].enroll(subject, [VECTOR], tenant="acme")
    before = admin.key_status()
    assert before.provider == "local"
    kek = admin.rotate_kek()
    assert kek.kek_version == kek.kek_version_before + 1 == before.active_kek_version + 1
    assert admin.rewrap_data_keys().data_keys_rewrapped == 0  # nothing left under the old KEK
    data = admin.rotate_data_keys()
    assert data.target_version == before.active_data_key + 1
    assert data.records_reencrypted >= 1
    assert data.records_remaining == 0
    assert verifier.verify(subject, VECTOR, tenant="acme").match  # still opens, new key
    retired = admin.retire_data_keys(data.target_version)
    assert retired.min_decrypt_version == data.target_version
    after = admin.key_status()
    assert after.active_kek_version == kek.kek_version
    assert after.min_decrypt_version == data.target_version
    assert {k.version: k.retired for k in after.data_keys}[before.active_data_key]
    with pytest.raises(ApiError) as refused:  # cannot retire the active key
        admin.retire_data_keys(data.target_version + 1)
    assert refused.value.status == 409
    with pytest.raises(AccessDenied):
        clients["admin-acme"].key_status()


def test_batches_over_http(clients: dict[str, FacesealClient], http: httpx.Client,
                           served: Served) -> None:
    encodings = random_encodings(6, seed=31)
    ids = [unique("bulk") for _ in range(3)]
    subject_ids = [ids[i % 3] for i in range(6)]  # two templates each
    enrolled = clients["enroller"].enroll_many(subject_ids, encodings, tenant="acme")
    assert (enrolled.templates, enrolled.subjects, len(enrolled.template_ids)) == (6, 3, 6)
    found = clients["identifier"].identify_many(encodings, tenant="acme", top_k=2)
    one_by_one = [clients["identifier"].identify(e, tenant="acme", top_k=2) for e in encodings]
    assert found == one_by_one  # the same answers, in probe order
    assert [r.best.subject_id for r in found if r.best] == subject_ids
    ragged = http.post("/v1/tenants/acme/batch/identify", headers=bearer(served.keys["worker"]),
                       json={"encodings": [VECTOR, VECTOR[:100]]})
    assert_problem(ragged, 422, "invalid_encoding")
    with pytest.raises(InvalidInput):  # refused by the client before sending
        clients["enroller"].enroll_many(["a"], encodings, tenant="acme")


def test_a_key_operation_running_in_another_process_is_409(served: Served,
                                                           http: httpx.Client) -> None:
    """The exclusion is the vault's lease in the store, so a CLI run (here: this process) and
    the server refuse each other alike; someone without the admin role gets 403 as always."""
    with reopen_vault(served.home) as vault, key_operation(vault._store, "keys.migrate"):
        refused = http.post("/v1/keys/kek/rotate", headers=bearer(served.keys["admin"]))
        problem = assert_problem(refused, 409, "conflict")
        assert "another key operation is running (keys.migrate" in problem["detail"]
        denied = http.post("/v1/keys/kek/rotate", headers=bearer(served.keys["verifier"]))
        assert_problem(denied, 403, "forbidden")
