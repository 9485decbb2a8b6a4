"""Dashboard sessions: a bearer token exchanged at login for a random session id in a
cookie (HttpOnly, SameSite=Strict, Secure under TLS). The token stays on the server and is
looked up again on every request, so a token removed from the head-end ends its sessions,
and the role is always the token's. Sessions live in memory: a restart logs everyone out.

CSRF: every form carries the session's random csrf value (the login form: a value the
browser also holds in a short-lived cookie, double submit), compared in constant time."""

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "bc_session"
LOGIN_COOKIE = "bc_login"
TTL_S = 8 * 3600
MAX_SESSIONS = 10000


@dataclass
class Session:
    token: str
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seen: float = 0.0          # last request (a page, or the live stream's check)


class Sessions:
    def __init__(self, ttl=TTL_S):
        self.ttl = ttl
        self.by_id = {}

    def create(self, token, now=None):
        now = time.time() if now is None else now
        if len(self.by_id) >= MAX_SESSIONS:
            self.sweep(now)
            if len(self.by_id) >= MAX_SESSIONS:         # drop the oldest
                del self.by_id[min(self.by_id, key=lambda k: self.by_id[k].expires)]
        sid = secrets.token_urlsafe(32)
        self.by_id[sid] = Session(token, now + self.ttl, seen=now)
        return sid

    def get(self, sid, now=None):
        if not sid:
            return None
        s = self.by_id.get(sid)
        if s is None:
            return None
        now = time.time() if now is None else now
        if s.expires <= now:
            del self.by_id[sid]
            return None
        s.seen = now
        return s

    def recent(self, now, within):
        """The sessions that made a request within the last `within` seconds."""
        return [s for s in self.by_id.values() if s.seen >= now - within and s.expires > now]

    def drop(self, sid):
        self.by_id.pop(sid, None)

    def sweep(self, now):
        for sid in [k for k, s in self.by_id.items() if s.expires <= now]:
            del self.by_id[sid]


def same(a, b):
    """Constant-time equality of two optional strings (None never matches)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def cookie_args(request, max_age):
    return {"httponly": True, "samesite": "strict", "path": "/ui",
            "secure": request.url.scheme == "https", "max_age": max_age}


def new_csrf():
    return secrets.token_urlsafe(32)
