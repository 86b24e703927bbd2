"""Browser sessions of the dashboard, kept in the dashboard's memory only.

The browser holds a random token in an HttpOnly, SameSite=Strict cookie; the server keeps
only its hash, so a memory dump of the table cannot be replayed as a cookie. A session ends
after a spell of inactivity or at a fixed lifetime, whichever comes first, and when the
dashboard stops. Form posts carry a CSRF token derived from the session (or, before login,
from a pre-session cookie) with a key that never leaves the process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass, field

from ..access.principals import Actor

TOKEN_BYTES = 32
MAX_SESSIONS = 10_000


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class BrowserSession:
    """One signed-in browser."""

    actor: Actor
    csrf: str
    started: float
    seen: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return f"BrowserSession({self.actor.name}, ***)"


class BrowserSessions:
    """Issued sessions by token hash, with idle and absolute expiry."""

    def __init__(self, idle_seconds: float, lifetime_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self._csrf_key = os.urandom(32)
        self._by_hash: dict[bytes, BrowserSession] = {}
        self._lock = threading.Lock()

    def start(self, actor: Actor) -> str:
        """A new session for *actor*; returns the token for the cookie."""
        token = os.urandom(TOKEN_BYTES).hex()
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if len(self._by_hash) >= MAX_SESSIONS:
                oldest = min(self._by_hash, key=lambda k: self._by_hash[k].seen)
                del self._by_hash[oldest]
            self._by_hash[_hash(token)] = BrowserSession(actor, self.csrf_token(token), now, now)
        return token

    def get(self, token: str | None) -> BrowserSession | None:
        """The live session for *token*, touched; None when unknown or expired."""
        if not token or len(token) != 2 * TOKEN_BYTES:
            return None
        now = time.monotonic()
        with self._lock:
            found = self._by_hash.get(_hash(token))
            if found is None:
                return None
            if self._expired(found, now):
                del self._by_hash[_hash(token)]
                return None
            found.seen = now
            return found

    def end(self, token: str | None) -> BrowserSession | None:
        """Forget the session for *token*; returns it when there was one."""
        if not token:
            return None
        with self._lock:
            return self._by_hash.pop(_hash(token), None)

    def end_for(self, principal: str, unless_stamp: str | None = None) -> int:
        """Forget every session of *principal* (disabled), or those begun under a password
        other than the one *unless_stamp* marks (changed); returns how many."""
        with self._lock:
            doomed = [
                k
                for k, s in self._by_hash.items()
                if s.actor.name == principal and s.actor.principal.password_stamp != unless_stamp
            ]
            for key in doomed:
                del self._by_hash[key]
        return len(doomed)

    def csrf_token(self, bound_to: str) -> str:
        """The CSRF token for forms of the session (or pre-session cookie) *bound_to*."""
        return hmac.new(self._csrf_key, bound_to.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, bound_to: str | None, given: str | None) -> bool:
        """Constant-time check of a form's CSRF token."""
        if not bound_to or not given:
            return False
        return hmac.compare_digest(self.csrf_token(bound_to), given)

    def _expired(self, found: BrowserSession, now: float) -> bool:
        return now - found.seen > self.idle_seconds or now - found.started > self.lifetime_seconds

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._by_hash.items() if self._expired(s, now)]:
            del self._by_hash[key]

    def __len__(self) -> int:
        return len(self._by_hash)
