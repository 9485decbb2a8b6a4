"""Idempotency-Key for the operator's work POSTs (docs/headend.md, "Idempotent retries").

The key (1..64 visible ASCII characters) is scoped to the operator (the token's name) and
stored with a fingerprint of the request in the same transaction as the work it queued, so
a retry after any failure, a head-end crash between COMMIT and the 202 included, finds it
and gets the original work back instead of queuing it again. Keys are kept 24 h."""

import hashlib
import json
import re

from fastapi import Header, HTTPException

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"    # on the answer to a retry that queued nothing
KEEP_S = 86400
_KEY = re.compile(r"^[\x21-\x7e]{1,64}$")

KeyHeader = Header(None, alias=HEADER, description="1..64 visible ASCII characters; a retry "
                   "with the same key and request returns the original work (kept 24 h)")


def check(value):
    """The key, None if absent; 400 if malformed."""
    if value is None:
        return None
    if not _KEY.match(value):
        raise HTTPException(400, "%s must be 1..64 visible ASCII characters (no spaces)"
                            % HEADER)
    return value


def fingerprint(request, body):
    """SHA-256 of the method, path and the validated body (defaults filled in)."""
    text = json.dumps([request.method, request.url.path, body.model_dump(mode="json")],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def replay(db, operator, key, fp):
    """The reference (work id, group command id) stored for this key, or None; 422 if the
    key was used for a different request."""
    if key is None:
        return None
    row = db.one("SELECT fingerprint, ref FROM idempotency WHERE operator = ? AND key = ?",
                 operator, key)
    if row is None:
        return None
    if row["fingerprint"] != fp:
        raise HTTPException(422, "%s %r was already used for a different request; use a new "
                            "key for a new request" % (HEADER, key))
    return row["ref"]


def remember(db, operator, key, fp, ref, now):
    """Store the key with what it produced (in the caller's transaction); forget old keys."""
    if key is None:
        return
    db.run("DELETE FROM idempotency WHERE created < ?", now - KEEP_S)
    db.run("INSERT INTO idempotency(operator, key, fingerprint, ref, created) "
           "VALUES (?, ?, ?, ?, ?)", operator, key, fp, ref, now)
