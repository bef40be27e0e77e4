"""A small typed client for the faceseal HTTP service (``faceseal serve``).

::

    from faceseal.client import FacesealClient

    with FacesealClient("https://faceseal.internal:8443", api_key=key) as client:
        client.enroll_photos("alice", ["alice-1.jpg"], tenant="acme")
        result = client.verify("alice", "probe.jpg", tenant="acme")
        print(result.match, result.distance)

Methods mirror the :class:`~faceseal.vault.Vault` API and return the same result types
(:class:`~faceseal.vault.VerifyResult`, ...), so code can move between in-process and remote use.

Errors are the same classes too: a 404 raises :class:`~faceseal.errors.NotFound`, a 401
:class:`~faceseal.errors.AuthenticationFailed`, and so on, by the problem's ``code``; each raised
error is also an :class:`ApiError` carrying the HTTP status, the request id and the problem
document. A service that cannot be reached, times out or answers with something that is not a
faceseal problem document raises :class:`~faceseal.errors.ServiceUnavailable` (an internal
error), never an authentication error. Nothing is retried: enrolments and erasures are not
idempotent; retry what you know is safe.

The API key is kept in a :class:`~faceseal.crypto.secret.SecretBytes` and never appears in the
client's ``repr`` or in error messages.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from faceseal import errors
from faceseal.access.principals import NewPrincipalInfo, PrincipalInfo
from faceseal.audit.chain import ChainReport
from faceseal.crypto.secret import SecretBytes
from faceseal.encoders.files import is_encoding_file, load_encodings_file
from faceseal.errors import FacesealError, InvalidInput, ServiceUnavailable
from faceseal.vault.bulk import BulkEnrollResult
from faceseal.vault.config import DEFAULT_TENANT
from faceseal.vault.disclosure import TenantPolicy
from faceseal.vault.results import (
    EnrollResult,
    EraseResult,
    IdentifyResult,
    SubjectInfo,
    VerifyResult,
)
from faceseal.vault.rotation import (
    DataRotation,
    KekRotation,
    KeyStatus,
    Retirement,
)
from faceseal.vault.service_ops import Readiness

__all__ = [
    "ApiError",
    "FacesealClient",
    "NewPrincipalInfo",
    "PrincipalInfo",
    "Probe",
]

#: A probe: photo bytes, a photo or ``.npy``/``.json`` encoding file path, or one encoding.
Probe = bytes | str | os.PathLike[str] | npt.NDArray[Any] | Sequence[float]
PhotoSource = bytes | str | os.PathLike[str]
_PROBLEM_TYPES = ("application/problem+json", "application/json")


class ApiError(FacesealError):
    """Mixed into every error the client raises for a problem the service answered."""

    status: int = 0
    request_id: str | None = None
    problem: dict[str, Any] | None = None


class FacesealClient:
    """Calls one faceseal service with one API key. Thread-safe (one ``httpx.Client``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | bytes | SecretBytes | None = None,
        *,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``base_url``: the service's root (``https://host:port``, plus any path prefix a
        proxy adds). ``verify``: TLS verification (a CA bundle path, a context, or False for
        tests only). ``cert``: a client certificate for mutual TLS."""
        if isinstance(api_key, str):
            api_key = api_key.strip().encode()
        self._key = SecretBytes(api_key) if isinstance(api_key, bytes) else api_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, verify=verify,
                                  cert=cert, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"<FacesealClient {self._http.base_url}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FacesealClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- subjects --------------------------------------------------------------------------------

    def enroll(self, subject_id: str, encodings: npt.ArrayLike, *,
               tenant: str = DEFAULT_TENANT, model: str | None = None,
               request_id: str | None = None) -> EnrollResult:
        """Seal ready-made encodings (one, or several as rows) as templates of ``subject_id``."""
        array = _numbers(encodings)
        if array.ndim not in (1, 2):
            raise InvalidInput("encodings: one encoding, or one per row")
        rows = [array.tolist()] if array.ndim == 1 else [row.tolist() for row in array]
        body: dict[str, Any] = {"encodings": rows}
        if model is not None:
            body["model"] = model
        data = self._call("POST", _path("v1", "tenants", tenant, "subjects", subject_id,
                                        "templates"), json=body, request_id=request_id)
        return EnrollResult.from_dict(data)

    def enroll_photos(self, subject_id: str, photos: Iterable[PhotoSource], *,
                      tenant: str = DEFAULT_TENANT, face_index: int | None = None,
                      request_id: str | None = None) -> EnrollResult:
        """Upload photos (bytes or file paths) to be encoded and sealed as templates."""
        files = [("photo", (f"photo-{i}", _photo_bytes(p), "application/octet-stream"))
                 for i, p in enumerate(photos)]
        if not files:
            raise InvalidInput("no photos to enrol")
        data = self._call("POST", _path("v1", "tenants", tenant, "subjects", subject_id,
                                        "photos"), files=files,
                          fields=_fields(face_index=face_index), request_id=request_id)
        return EnrollResult.from_dict(data)

    def subjects(self, *, tenant: str = DEFAULT_TENANT,
                 request_id: str | None = None) -> list[SubjectInfo]:
        data = self._call("GET", _path("v1", "tenants", tenant, "subjects"),
                          request_id=request_id)
        return [SubjectInfo.from_dict(s) for s in data["subjects"]]

    def erase(self, subject_id: str, *, tenant: str = DEFAULT_TENANT,
              request_id: str | None = None) -> EraseResult:
        """Erase the subject's templates and destroy its key material (crypto-shredding)."""
        data = self._call("DELETE", _path("v1", "tenants", tenant, "subjects", subject_id),
                          request_id=request_id)
        return EraseResult.from_dict(data)

    # --- matching --------------------------------------------------------------------------------

    def verify(self, subject_id: str, probe: Probe, *, tenant: str = DEFAULT_TENANT,
               threshold: float | None = None, model: str | None = None,
               face_index: int | None = None, request_id: str | None = None) -> VerifyResult:
        """1:1: is ``probe`` (a photo, or an encoding) the subject ``subject_id``?"""
        base = _path("v1", "tenants", tenant, "subjects", subject_id, "verify")
        photo, encoding = _probe(probe)
        if photo is not None:
            data = self._call("POST", base + "/photo", files=[("photo", ("probe", photo,
                                                                         "application/octet-stream"))],
                              fields=_fields(face_index=face_index, threshold=threshold),
                              request_id=request_id)
        else:
            body = _without_none(encoding=encoding, threshold=threshold, model=model)
            data = self._call("POST", base, json=body, request_id=request_id)
        return VerifyResult.from_dict(data)

    def identify(self, probe: Probe, *, tenant: str = DEFAULT_TENANT, top_k: int = 5,
                 threshold: float | None = None, model: str | None = None,
                 face_index: int | None = None,
                 request_id: str | None = None) -> IdentifyResult:
        """1:N: the ``top_k`` subjects of ``tenant`` closest to ``probe``, closest first."""
        base = _path("v1", "tenants", tenant, "identify")
        photo, encoding = _probe(probe)
        if photo is not None:
            data = self._call("POST", base + "/photo", files=[("photo", ("probe", photo,
                                                                         "application/octet-stream"))],
                              fields=_fields(face_index=face_index, threshold=threshold,
                                             top_k=top_k),
                              request_id=request_id)
        else:
            body = _without_none(encoding=encoding, top_k=top_k, threshold=threshold,
                                 model=model)
            data = self._call("POST", base, json=body, request_id=request_id)
        return IdentifyResult.from_dict(data)

    # --- batches ---------------------------------------------------------------------------------

    def enroll_many(self, subject_ids: Sequence[str], encodings: npt.ArrayLike, *,
                    tenant: str = DEFAULT_TENANT, model: str | None = None,
                    request_id: str | None = None) -> BulkEnrollResult:
        """Bulk enrolment: row ``i`` of ``encodings`` becomes a template of ``subject_ids[i]``;
        all or nothing. At most 1000 rows per call (and the server's body limit); split bigger
        imports."""
        matrix = _numbers(encodings)
        if matrix.ndim != 2 or isinstance(subject_ids, str) or len(subject_ids) != len(matrix):
            raise InvalidInput("enroll_many takes one subject id per row of a 2-D array")
        body: dict[str, Any] = {"templates": [
            {"subject_id": s, "encoding": row.tolist()} for s, row in zip(subject_ids, matrix,
                                                                           strict=True)]}
        if model is not None:
            body["model"] = model
        data = self._call("POST", _path("v1", "tenants", tenant, "batch", "enroll"), json=body,
                          request_id=request_id)
        return BulkEnrollResult.from_dict(data)

    def identify_many(self, probes: npt.ArrayLike, *, tenant: str = DEFAULT_TENANT,
                      top_k: int = 5, threshold: float | None = None, model: str | None = None,
                      request_id: str | None = None) -> list[IdentifyResult]:
        """1:N for many encodings (the rows of a 2-D array, at most 256) in one scan; results in
        probe order."""
        matrix = _numbers(probes)
        if matrix.ndim != 2:
            raise InvalidInput("identify_many takes a 2-D array: one probe encoding per row")
        body = _without_none(encodings=matrix.tolist(), top_k=top_k, threshold=threshold,
                             model=model)
        data = self._call("POST", _path("v1", "tenants", tenant, "batch", "identify"),
                          json=body, request_id=request_id)
        return [IdentifyResult.from_dict(r) for r in data["results"]]

    # --- tenants ---------------------------------------------------------------------------------

    def tenant_policy(self, tenant: str = DEFAULT_TENANT, *,
                      request_id: str | None = None) -> TenantPolicy:
        """What the tenant's answers reveal, and its configured thresholds (admin or auditor)."""
        data = self._call("GET", _path("v1", "tenants", tenant, "policy"), request_id=request_id)
        return TenantPolicy.from_dict(data)

    def set_tenant_policy(self, tenant: str = DEFAULT_TENANT, *,
                          disclosure_level: str | None = None,
                          thresholds: dict[str, float] | None = None,
                          request_id: str | None = None) -> TenantPolicy:
        """Set the tenant's disclosure (``band`` or ``decision``) and/or thresholds (admin)."""
        body = _without_none(disclosure=disclosure_level, thresholds=thresholds)
        data = self._call("PUT", _path("v1", "tenants", tenant, "policy"), json=body,
                          request_id=request_id)
        return TenantPolicy.from_dict(data)

    # --- principals ------------------------------------------------------------------------------

    def principals(self, *, request_id: str | None = None) -> list[PrincipalInfo]:
        data = self._call("GET", "/v1/principals", request_id=request_id)
        return [PrincipalInfo.from_dict(p) for p in data["principals"]]

    def add_principal(self, name: str, roles: Sequence[str], *, tenant: str | None = None,
                      all_tenants: bool = False,
                      request_id: str | None = None) -> NewPrincipalInfo:
        """Create a principal; its API key is in the result, this once."""
        body = _without_none(name=name, roles=list(roles), tenant=tenant)
        if all_tenants:
            body["all_tenants"] = True
        data = self._call("POST", "/v1/principals", json=body, request_id=request_id)
        return NewPrincipalInfo.from_dict(data)

    def revoke_principal(self, name: str, *, request_id: str | None = None) -> PrincipalInfo:
        data = self._call("DELETE", _path("v1", "principals", name), request_id=request_id)
        return PrincipalInfo.from_dict(data)

    # --- keys (admin over every tenant) ----------------------------------------------------------

    def key_status(self, *, request_id: str | None = None) -> KeyStatus:
        data = self._call("GET", "/v1/keys", request_id=request_id)
        return KeyStatus.from_dict(data)

    def rotate_kek(self, *, request_id: str | None = None) -> KekRotation:
        """New KEK version; every data key rewrapped; no record re-encrypted."""
        return KekRotation.from_dict(self._call("POST", "/v1/keys/kek/rotate",
                                                   request_id=request_id))

    def rewrap_data_keys(self, *, request_id: str | None = None) -> KekRotation:
        return KekRotation.from_dict(self._call("POST", "/v1/keys/kek/rewrap",
                                                   request_id=request_id))

    def rotate_data_keys(self, *, request_id: str | None = None) -> DataRotation:
        """New data-key version; every record re-encrypted (resumable: call again after a
        timeout to finish)."""
        return DataRotation.from_dict(self._call("POST", "/v1/keys/data/rotate",
                                         request_id=request_id))

    def retire_data_keys(self, below: int, *, request_id: str | None = None) -> Retirement:
        return Retirement.from_dict(self._call("POST", "/v1/keys/data/retire",
                                               json={"below": below}, request_id=request_id))

    # --- audit -----------------------------------------------------------------------------------

    def audit_tail(self, count: int = 20, *, tenant: str | None = None,
                   request_id: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"count": count}
        if tenant is not None:
            params["tenant"] = tenant
        data = self._call("GET", "/v1/audit/events", params=params, request_id=request_id)
        events: list[dict[str, Any]] = data["events"]
        return events

    def audit_verify(self, *, request_id: str | None = None) -> ChainReport:
        data = self._call("GET", "/v1/audit/verify", request_id=request_id)
        return ChainReport.from_dict(data)

    # --- operations ------------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether the service process answers (``/healthz``)."""
        return bool(self._call("GET", "/healthz", auth=False).get("status") == "ok")

    def ready(self) -> Readiness:
        """Whether store, key provider and audit log are reachable (``/readyz``; a 503 there is
        an answer, not an error)."""
        response = self._send("GET", "/readyz", auth=False)
        if response.status_code in (200, 503) and _media_type(response) == "application/json":
            body = response.json()
            checks = body.get("checks", {})
            shards = body.get("shards") or {}
            return Readiness({str(k): str(v) for k, v in checks.items()},
                             int(body.get("changes_behind", 0)),
                             {str(k): str(v) for k, v in shards.items()})
        raise self._error(response)

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        response = self._send("GET", "/metrics", auth=False)
        if response.status_code != 200:
            raise self._error(response)
        return response.text

    # --- plumbing --------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json: Any = None,
              files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
              fields: dict[str, str] | None = None, params: dict[str, Any] | None = None,
              request_id: str | None = None, auth: bool = True) -> dict[str, Any]:
        response = self._send(method, path, json=json, files=files, fields=fields,
                              params=params, request_id=request_id, auth=auth)
        if not 200 <= response.status_code < 300:
            raise self._error(response)
        try:
            data = response.json()
        except ValueError:
            raise ServiceUnavailable("the service answered with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ServiceUnavailable("the service answered with an unexpected document")
        return data

    def _send(self, method: str, path: str, *, json: Any = None,
              files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
              fields: dict[str, str] | None = None, params: dict[str, Any] | None = None,
              request_id: str | None = None, auth: bool = True) -> httpx.Response:
        headers: dict[str, str] = {"Accept": "application/json, application/problem+json"}
        if auth and self._key is not None:
            headers["Authorization"] = "Bearer " + self._key.reveal().decode("ascii", "replace")
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        try:
            return self._http.request(method, path, json=json, files=files, data=fields,
                                      params=params, headers=headers)
        except httpx.TimeoutException:
            raise ServiceUnavailable("the faceseal service did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"cannot reach the faceseal service ({type(exc).__name__})") from None

    @staticmethod
    def _error(response: httpx.Response) -> FacesealError:
        problem: dict[str, Any] | None = None
        if _media_type(response) in _PROBLEM_TYPES:
            try:
                document = response.json()
            except ValueError:
                document = None
            if isinstance(document, dict) and isinstance(document.get("code"), str):
                problem = document
        if problem is None:
            error: FacesealError = ServiceUnavailable(
                f"the service answered HTTP {response.status_code} without a faceseal problem "
                "document (a proxy in between?)")
            return error
        base = _CLASSES.get(problem["code"]) or (
            errors.UserError if 400 <= response.status_code < 500 else errors.InternalError)
        cls = _remote(base)
        detail = str(problem.get("detail", "")) or str(problem.get("title", "error"))
        instance = cls.__new__(cls)
        Exception.__init__(instance, detail)
        instance.status = response.status_code
        instance.request_id = problem.get("request_id") or response.headers.get("x-request-id")
        instance.problem = problem
        if isinstance(instance, errors.MultipleFacesFound):
            instance.count = 0  # how many is in the detail text
        return instance


# --- helpers -------------------------------------------------------------------------------------


def _all_error_classes() -> dict[str, type[FacesealError]]:
    found: dict[str, type[FacesealError]] = {}
    pending: list[type[FacesealError]] = [FacesealError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ == errors.__name__:
            found.setdefault(cls.code, cls)
    return found


_CLASSES = _all_error_classes()
_REMOTE: dict[type[FacesealError], type[ApiError]] = {}


def _remote(base: type[FacesealError]) -> type[ApiError]:
    """``base`` with :class:`ApiError` mixed in (``except NotFound`` and ``except ApiError``
    both catch it)."""
    cls = _REMOTE.get(base)
    if cls is None:
        cls = _REMOTE[base] = type(base.__name__, (base, ApiError), {
            "__module__": __name__, "__doc__": base.__doc__})
    return cls


def _path(*segments: str) -> str:
    """A URL path from segments, each percent-encoded (``/`` included)."""
    for segment in segments:
        if not isinstance(segment, str) or not segment:
            raise InvalidInput("ids in a URL must be non-empty strings")
        if segment in (".", "..") or "/" in segment:
            raise InvalidInput(f"{segment[:64]!r} cannot be used over HTTP: ids there may not "
                               "contain '/' or be '.' or '..'")
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _photo_bytes(photo: PhotoSource) -> bytes:
    if isinstance(photo, bytes):
        return photo
    path = Path(photo)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path.name}: no such file") from None
    except OSError:
        raise InvalidInput(f"{path.name}: cannot read the file") from None


def _probe(probe: Probe) -> tuple[bytes | None, list[float] | None]:
    """A probe as photo bytes, or as one encoding."""
    if isinstance(probe, bytes):
        return probe, None
    if isinstance(probe, str | os.PathLike):
        path = Path(probe)
        if is_encoding_file(path):
            found = load_encodings_file(path)
            if len(found) != 1:
                raise InvalidInput(f"{path.name}: a probe must hold exactly one encoding, found "
                                   f"{len(found)}")
            return None, np.asarray(found[0], dtype=np.float64).tolist()
        return _photo_bytes(path), None
    array = _numbers(probe)
    if array.ndim != 1:
        raise InvalidInput("a probe encoding must be 1-D")
    return None, array.tolist()


def _numbers(values: object) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("an encoding is a sequence of numbers (rows of equal length for "
                           "several)") from None


def _fields(**values: int | float | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _without_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", maxsplit=1)[0].strip().lower()
