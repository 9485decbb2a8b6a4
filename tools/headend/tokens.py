"""Operator, utility and admin bearer tokens in the database: stored as their SHA-256 only,
each with a role, an optional expiry, optional group scopes (the meters it may see and act
on) and a revocation time. An expired or revoked token is answered exactly like an unknown
one (401 `invalid token`): nobody learns which tokens once existed.

A token's public id is the first 12 hex digits of its hash: enough to list and revoke it,
useless for guessing the token (256 random bits)."""

import time

from . import signing
from .db import dumps, loads
from .settings import ROLES

ID_LEN = 12
MAX_LIFETIME_S = 10 * 365 * 86400


def public_id(token_hash):
    return token_hash[:ID_LEN]


def id_of(token):
    return public_id(signing.token_hash(token))


def create(db, name, role, token=None, expires_in=None, groups=None, now=None):
    """Store a token (hashed) and return it. expires_in: seconds (None: never);
    groups: the group names it is confined to (None: every meter)."""
    if role not in ROLES:
        raise ValueError("role must be one of: %s" % ", ".join(ROLES))
    if not name or not isinstance(name, str) or len(name) > 100:
        raise ValueError("token name must be 1 to 100 characters")
    if token is not None and len(token) < 16:
        raise ValueError("a token must be at least 16 characters")
    if expires_in is not None and not 0 < expires_in <= MAX_LIFETIME_S:
        raise ValueError("expiry must be between 1 s and 10 years")
    if groups is not None:
        groups = sorted(set(groups))
        if not groups:
            raise ValueError("a scoped token needs at least one group")
    now = time.time() if now is None else now
    token = token or signing.new_token()
    expires = None if expires_in is None else now + expires_in
    with db.tx():
        db.run("INSERT INTO tokens(hash, name, role, created, expires, groups, revoked) "
               "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (hash) DO UPDATE SET name = "
               "excluded.name, role = excluded.role, created = excluded.created, expires = "
               "excluded.expires, groups = excluded.groups, revoked = NULL",
               signing.token_hash(token), name, role, now, expires,
               None if groups is None else dumps(groups))
    return token


def lookup(db, token, now=None):
    """(name, role, groups) of a live stored token, or None (unknown, expired or revoked)."""
    row = db.one("SELECT name, role, expires, groups, revoked FROM tokens WHERE hash = ?",
                 signing.token_hash(token))
    if row is None or row["revoked"] is not None:
        return None
    now = time.time() if now is None else now
    if row["expires"] is not None and now >= row["expires"]:
        return None
    groups = loads(row["groups"])
    return (row["name"], row["role"], None if groups is None else tuple(groups))


def listing(db, now=None):
    """Every stored token (never the token itself): id, name, role, created, expires,
    groups, revoked, and its state: live, expired or revoked."""
    now = time.time() if now is None else now
    out = []
    for r in db.all("SELECT * FROM tokens ORDER BY created, hash"):
        state = "live"
        if r["revoked"] is not None:
            state = "revoked"
        elif r["expires"] is not None and now >= r["expires"]:
            state = "expired"
        out.append({"id": public_id(r["hash"]), "name": r["name"], "role": r["role"],
                    "created": r["created"], "expires": r["expires"],
                    "groups": loads(r["groups"]), "revoked": r["revoked"], "state": state})
    return out


def revoke(db, which, now=None):
    """Revoke the token with public id `which`, or every token named `which`; returns the
    ids revoked (empty: no such token). Revoking twice keeps the first time."""
    now = time.time() if now is None else now
    with db.tx():
        rows = db.all("SELECT hash FROM tokens WHERE substr(hash, 1, ?) = ?", ID_LEN, which)
        if not rows:
            rows = db.all("SELECT hash FROM tokens WHERE name = ?", which)
        for r in rows:
            db.run("UPDATE tokens SET revoked = ? WHERE hash = ? AND revoked IS NULL",
                   now, r["hash"])
    return [public_id(r["hash"]) for r in rows]


def parse_duration(text):
    """Seconds from `90`, `90s`, `30m`, `12h`, `30d`, `52w`; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = (text or "").strip().lower()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    if not number.isdigit() or int(number) == 0:
        raise ValueError("expiry must be a positive whole number with s, m, h, d or w: %r"
                         % text)
    return int(number) * (scale or 1)
