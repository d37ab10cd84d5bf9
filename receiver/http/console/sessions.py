"""The console's sessions and CSRF tokens: signed cookies, so that every worker and replica that
shares the API token accepts them, and no session table is needed.

A cookie is ``v1.<nonce>.<issued>.<a>.<mac>``: a random nonce, when it was issued, whether it was
logged in with the token (``a`` = 1), and an HMAC-SHA256 over the rest with a key derived from
``api.token``. Changing the token ends every session. The CSRF token of a session is an HMAC of its
nonce: a page of ours carries it in each form, a page elsewhere cannot read it (nor, with
SameSite=Strict, make the browser send the cookie at all).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "receiver_console"
MAX_AGE = 12 * 3600  # seconds a session lasts; then the token is asked again


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    issued: int
    authenticated: bool


class Sessions:
    def __init__(self, token: str, *, clock: Callable[[], float] = time.time, max_age: int = MAX_AGE) -> None:
        self.token = token
        self.required = bool(token)  # without a token the console is as open as the API
        self._key = hmac.new(token.encode(), b"receiver console session v1", hashlib.sha256).digest()
        self._clock = clock
        self.max_age = max_age

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, *, authenticated: bool) -> tuple[Session, str]:
        """A new session (a new nonce: logging in never keeps the session it came with)."""
        session = Session(secrets.token_urlsafe(18), int(self._clock()), authenticated)
        payload = f"v1.{session.nonce}.{session.issued}.{int(authenticated)}"
        return session, f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None if it is missing, forged or expired."""
        if not cookie or len(cookie) > 200:
            return None
        payload, _, mac = cookie.rpartition(".")
        parts = payload.split(".")
        if (
            len(parts) != 4
            or parts[0] != "v1"
            or not hmac.compare_digest(mac.encode(), self._mac(payload).encode())
        ):
            return None
        _, nonce, issued, authenticated = parts
        if not issued.isdigit() or authenticated not in ("0", "1"):
            return None
        age = self._clock() - int(issued)
        if age >= self.max_age or age < -60:  # 60 s of clock skew between replicas
            return None
        return Session(nonce, int(issued), authenticated == "1")

    def allowed(self, session: Session | None) -> bool:
        """May this session see the console? (Always, when no token is configured.)"""
        return not self.required or (session is not None and session.authenticated)

    def token_ok(self, sent: str) -> bool:
        return self.required and hmac.compare_digest(sent.encode(), self.token.encode())

    def csrf(self, session: Session) -> str:
        return hmac.new(self._key, f"csrf.{session.nonce}".encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, session: Session | None, sent: object) -> bool:
        return (
            session is not None
            and isinstance(sent, str)
            and hmac.compare_digest(sent.encode(), self.csrf(session).encode())
        )
