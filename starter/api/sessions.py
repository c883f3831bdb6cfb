"""Browser sessions of the approval page: signed in once with an API token, then a cookie.

The token is checked against the API's tokens and forgotten; the session keeps only who it
is (the token's `Principal`), a CSRF token its forms must send back, and one message to show
on the next page (the result of a decision). Sessions live in this process's memory for
`SESSION_SECONDS`, so a restart signs everyone out; the cookie holds a random id, nothing else.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from starter.api.auth import Principal

SESSION_SECONDS = 8 * 3600
COOKIE = "reclaim_session"
LOGIN_CSRF_COOKIE = "reclaim_login_csrf"


@dataclass
class Flash:
    ok: bool
    text: str


@dataclass
class Session:
    principal: Principal
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: Flash | None = None

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), (presented or "").encode())


class Sessions:
    def __init__(self, lifetime: float = SESSION_SECONDS, limit: int = 10_000) -> None:
        self.lifetime = lifetime
        self._limit = limit
        self._by_id: dict[str, Session] = {}

    def open(self, principal: Principal) -> tuple[str, Session]:
        now = time.monotonic()
        self._sweep(now)
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, now + self.lifetime)
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if session.expires < time.monotonic():
            self._by_id.pop(session_id or "", None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[key]
        while len(self._by_id) >= self._limit:  # the oldest go first (dicts keep insertion order)
            del self._by_id[next(iter(self._by_id))]
