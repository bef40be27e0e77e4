"""The one error hierarchy of faceseal.

Three families, so that callers (the CLI, the HTTP service, applications) can react without
parsing messages:

* :class:`UserError` (``family = "user"``): the caller can fix it (bad input, denied, not found).
  HTTP 4xx; CLI exit status 2, 3 or 4.
* :class:`InternalError` (``family = "internal"``): the deployment is unwell (key provider down
  or keyring unusable, database unreachable, audit log unwritable, encoder not installed).
  HTTP 5xx; CLI exit status 5. Never reported as a user mistake, and never the other way
  round: a network fault must not look like a wrong key.
* :class:`DecryptionError`: every failure to open sealed data. It carries one fixed message and no
  detail, whatever went wrong (bad tag, wrong key, truncation, wrong associated data), so that it
  cannot be used as an oracle. Family ``internal``.

Each class has a stable ``code`` and a ``family``; nothing here knows about transports. The HTTP
status and the CLI exit status of each class are mapped at the edges, in one table each
(``faceseal.http.problems.HTTP_STATUS``, ``faceseal.cli.output.EXIT_CODES``), and a test checks
that every class is in both and agrees with its family (docs/http.md lists them all).

Messages never contain key material, passphrases, API keys or encoding values; they may contain
identifiers the caller supplied (subject ids, file names).
"""

from __future__ import annotations

from typing import ClassVar, Literal

Family = Literal["user", "internal"]


class FacesealError(Exception):
    """Base class of every error faceseal raises on purpose."""

    #: Stable machine-readable code, used in JSON output and HTTP problem details.
    code: str = "error"
    #: Who can fix it: ``"user"`` (the caller) or ``"internal"`` (the deployment). The front ends
    #: map each class to an HTTP status (``faceseal.http.problems.HTTP_STATUS``) and a CLI exit
    #: status (``faceseal.cli.output.EXIT_CODES``); this layer knows neither.
    family: ClassVar[Family] = "internal"
    #: Whether the refusal looks like probing the vault (its ``failed`` audit event is marked
    #: ``suspicious`` for a SIEM to alert on; see docs/audit.md).
    suspicious: bool = False


# --- user errors ---------------------------------------------------------------------------------


class UserError(FacesealError):
    """The request cannot be served as asked; the caller can fix it."""

    code = "user_error"
    family = "user"


class InvalidInput(UserError):
    """Input that is malformed, out of range, or not what the operation accepts."""

    code = "invalid_input"


class ImageUnreadable(InvalidInput):
    """The photo cannot be decoded as an image."""

    code = "image_unreadable"


class ImageTooLarge(InvalidInput):
    """The photo is larger than the configured pixel or byte limit (refused before decoding)."""

    code = "image_too_large"


class NoFaceFound(InvalidInput):
    """The photo contains no detectable face."""

    code = "no_face"


class MultipleFacesFound(InvalidInput):
    """The photo contains several faces and the caller did not pick one."""

    code = "multiple_faces"

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class BadSources(InvalidInput):
    """Several sources of one enrolment cannot be used; ``problems`` names each one and why."""

    code = "bad_sources"

    def __init__(self, total: int, problems: list[dict[str, str]], *, skip_bad: bool) -> None:
        what = (f"none of the {total} sources can be enrolled" if skip_bad else
                f"{len(problems)} of {total} sources cannot be enrolled, so nothing was "
                "enrolled (--skip-bad enrols the others)")
        super().__init__(f"{what}: " + "; ".join(p["reason"] for p in problems))
        self.problems = problems


class InvalidEncoding(InvalidInput):
    """An encoding with the wrong dimension, dtype, shape, or non-finite values."""

    code = "invalid_encoding"




class AuthenticationFailed(UserError):
    """No credential, or one that is unknown, revoked or malformed."""

    code = "unauthenticated"


class AccessDenied(UserError):
    """The principal is known but its role or tenant does not allow the operation."""

    code = "forbidden"


class NotFound(UserError):
    """The subject, template, principal or vault does not exist."""

    code = "not_found"


class Conflict(UserError):
    """The operation conflicts with the current state (already exists, still in use)."""

    code = "conflict"




class RateLimited(UserError):
    """Too many failed attempts; try again later."""

    code = "rate_limited"


class BudgetExceeded(RateLimited):
    """A principal or subject has used up its query budget for the current window."""

    code = "budget_exceeded"
    suspicious = True


class ImplausibleProbe(InvalidInput):
    """A probe encoding does not look like an output of its model (the origin, a unit vector, a
    constant vector, a norm no face gives): a reconstruction attack, not a face."""

    code = "implausible_probe"
    suspicious = True


class ThresholdTooLoose(InvalidInput):
    """A caller asked for a looser threshold than the vault's configured one."""

    code = "threshold_too_loose"
    suspicious = True


class MalformedRequest(UserError):
    """A request the HTTP service cannot parse (not JSON, not multipart, a bad header)."""

    code = "malformed_request"


class UnsupportedMediaType(UserError):
    """The request body is not of the media type the operation takes."""

    code = "unsupported_media_type"


class RequestTooLarge(UserError):
    """The request body is larger than the service accepts (refused before it is all read)."""

    code = "request_too_large"


# --- internal errors -----------------------------------------------------------------------------


class InternalError(FacesealError):
    """The deployment failed to serve a valid request."""

    code = "internal_error"
    family = "internal"


class KeyringError(InternalError):
    """The keyring is missing, unreadable, misplaced, or does not belong to this vault; or its
    passphrase, PIN or token is wrong or unset.

    Internal, not a user error: the request was valid, and only whoever runs the deployment can
    fix its key custody (an HTTP client never can, and a CLI user who can is acting as that
    operator). HTTP 500, exit status 5, like the other key provider failures.
    """

    code = "keyring_error"


class EncoderUnavailable(InternalError):
    """The optional face encoder is not installed where the vault runs (HTTP 501: the service
    does not implement photo operations; only its operator can install the ``faces`` extra)."""

    code = "encoder_unavailable"


class KeyProviderUnavailable(InternalError):
    """The key provider (keyring file, HSM, KMS) cannot be reached or refused to work."""

    code = "key_provider_unavailable"


class StorageUnavailable(InternalError):
    """The template store cannot be reached or failed to read or write."""

    code = "storage_unavailable"


class StorageMisconfigured(StorageUnavailable):
    """The store is reachable but set up so that its guarantees do not hold (e.g. PostgreSQL with
    ``fsync=off``, a superuser login, or a schema without row-level security); faceseal refuses
    to use it unless explicitly forced."""

    code = "storage_misconfigured"


class AuditWriteFailed(InternalError):
    """The audit event could not be written; the operation was not carried out (fail-closed)."""

    code = "audit_unavailable"


class IntegrityFailure(InternalError):
    """Stored data failed its integrity check and nothing usable remained for the request."""

    code = "integrity_failure"


class ServiceTimeout(InternalError):
    """The service did not finish the request within its time limit. The operation may still
    have been carried out: look its request id up in the audit log."""

    code = "timeout"


class ServiceUnavailable(InternalError):
    """The HTTP service cannot be reached or answered with something that is not faceseal's
    (raised by :mod:`faceseal.client`; never a bad key)."""

    code = "service_unavailable"


class ShardUnavailable(InternalError):
    """A shard of a sharded gallery (``faceseal serve --shards``) is down, restarting or not
    caught up with the change log; identify is refused rather than answered from the other
    shards (a partial answer could turn a match into "no match")."""

    code = "shard_unavailable"


# --- the opaque one ---------------------------------------------------------------------------


class DecryptionError(FacesealError):
    """Sealed data could not be opened. Deliberately carries no detail."""

    code = "decryption_failed"
    MESSAGE = "decryption failed"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
