"""Whether a request's API key gets in: the failed-authentication limits, then the key itself.

One blocking call, run in the service's thread pool once per request: the limits may live in
the vault's store or in Redis, and the key check reads the principal; neither may stall the
event loop, and doing both in one hop costs one thread hand-off instead of three.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import AuthenticationFailed, FacesealError, RateLimited
from faceseal.http.ratelimit import AuthRateLimiter
from faceseal.vault import Vault

NO_KEY = "no API key: send one as Authorization: Bearer fsk_..."


@dataclass(frozen=True)
class Admission:
    """The outcome: a bound view, or the error to answer with (and its ``Retry-After``)."""

    view: Vault | None = None
    error: FacesealError | None = None
    retry_after: int | None = None
    #: The failure was already counted against the client and key id.
    counted_failure: bool = False

    def __repr__(self) -> str:
        return f"Admission(admitted={self.view is not None})"


def admit(vault: Vault, limiter: AuthRateLimiter, *, client: str | None, key_id: str | None,
          secret: SecretBytes | None, request_id: str) -> Admission:
    """Check the limits, then bind ``secret``'s view of ``vault`` (refusals are audited by the
    vault). A client address that has failed too often does not stop a valid key (everyone
    behind one NAT would be locked out by one guesser): only its keyless requests are refused
    at once, and a wrong key it presents is answered 429 instead of 401."""
    key_wait = limiter.key_retry_after(key_id)
    client_wait = limiter.client_retry_after(client)
    if key_wait is not None or (client_wait is not None and secret is None):
        try:
            vault.refuse_rate_limited(key_id=key_id, request_id=request_id)
        except RateLimited as error:
            wait = max(w for w in (key_wait, client_wait) if w is not None)
            return Admission(error=error, retry_after=wait)
        raise AssertionError("refuse_rate_limited returned")  # pragma: no cover
    try:
        return Admission(view=vault.as_key(secret, request_id=request_id))
    except AuthenticationFailed as error:
        limiter.failed(client, key_id)
        if client_wait is not None:
            return Admission(error=RateLimited("too many failed authentication attempts; "
                                               "retry later"),
                             retry_after=client_wait, counted_failure=True)
        return Admission(error=error if secret is not None else AuthenticationFailed(NO_KEY),
                         counted_failure=True)
