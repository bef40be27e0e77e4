"""Server-side console sessions: a random token in an HttpOnly cookie names a session held in
this process's memory. The session keeps the vault view its sign-in bound (the principal's
credential, i.e. the key id and the key's hash, never the key) and the session's CSRF token.

Sessions are per process: a restart signs everyone out, and behind a load balancer each replica
knows only the sessions signed in on it (pin the console to one replica, or sign in again).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from faceseal.access.principals import Principal
from faceseal.vault import Vault

#: Bytes of randomness in a session token and a CSRF token (256 bits).
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _digest(token: str) -> bytes:
    # The table is keyed by a hash of the token: a dump of the table does not hold live cookies.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Session:
    """One signed-in browser."""

    view: Vault = field(repr=False)
    principal: Principal
    csrf: str = field(repr=False)
    created: float
    last_seen: float


class SessionStore:
    """Sessions by token, with an idle timeout, a lifetime and a cap on how many are held."""

    def __init__(self, *, idle_timeout: float, lifetime: float, max_sessions: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        #: Where "now" comes from (tests move it forward to expire a session).
        self.clock = clock
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, view: Vault, principal: Principal) -> tuple[str, Session]:
        """A new session for ``view``; returns its token (for the cookie) and the session."""
        token = new_token()
        now = self.clock()
        session = Session(view, principal, new_token(), now, now)
        with self._lock:
            self._sessions[_digest(token)] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return token, session

    def lookup(self, token: str | None) -> tuple[Session | None, bool]:
        """The live session of ``token`` (its idle clock restarted), or None; and whether the
        token named a session that has just expired (the sign-in page says so)."""
        if not token:
            return None, False
        key = _digest(token)
        now = self.clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None, False
            if (now - session.last_seen > self.idle_timeout
                    or now - session.created > self.lifetime):
                del self._sessions[key]
                return None, True
            session.last_seen = now
            self._sessions.move_to_end(key)
            return session, False

    def end(self, token: str | None) -> None:
        """Forget the session of ``token`` (sign-out): the cookie no longer works anywhere."""
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._sessions)
