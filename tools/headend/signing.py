"""HMAC-SHA256 envelopes and work signatures (docs/protocol.md), keys and tokens."""

import hashlib
import hmac
import json
import re
import secrets

_HEX_KEY = re.compile(r"^(?:[0-9a-fA-F]{2}){16,64}$")
_HEX_SIG = re.compile(r"[0-9a-fA-F]{64}")


def canonical(obj):
    """Sorted keys, separators "," and ":", non-ASCII as UTF-8 (as the meter computes it)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def valid_key(key_hex):
    return isinstance(key_hex, str) and bool(_HEX_KEY.match(key_hex))


def new_key():
    """A fresh per-device key: 32 random bytes as 64 hex chars."""
    return secrets.token_hex(32)


def sign(key_hex, data):
    """Hex HMAC-SHA256 of data (bytes) keyed with the decoded bytes of the hex key."""
    return hmac.new(bytes.fromhex(key_hex), data, hashlib.sha256).hexdigest()


def well_formed(sig):
    """A signature header as the protocol writes it: 64 hex digits (surrounding blanks
    allowed). Anything else (non-ASCII, another length) is refused before any key is used."""
    return isinstance(sig, str) and _HEX_SIG.fullmatch(sig.strip(" \t")) is not None


def verify(key_hex, data, sig):
    if not well_formed(sig):          # compare_digest raises TypeError on non-ASCII text
        return False
    return hmac.compare_digest(sign(key_hex, data), sig.strip(" \t").lower())


# Every field of a v2 work item with its type, in signing order (docs/protocol.md).
WORK_FIELDS = (("id", str), ("device", str), ("seq", int), ("op", str), ("role", str),
               ("from", str), ("expires", int), ("args", str))


def work_message(item):
    """What a work item's `sig` covers: "bc-work-2" then each field, typed and length-prefixed
    (`s<bytes>:<text>` or `i<int>`), joined by "|". A retyped field signs differently, so
    `expires` replayed as a string breaks the signature. Args travel as JSON text so a meter
    never re-serialises them (floats print differently on single-precision boards)."""
    parts = [b"bc-work-2"]
    for name, kind in WORK_FIELDS:
        value = item[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError("work field %s must be %s" % (name, kind.__name__))
        if kind is str:
            data = value.encode()
            parts.append(b"s%d:" % len(data) + data)
        else:
            parts.append(b"i%d" % value)
    return b"|".join(parts)


def sign_work(key_hex, item):
    return sign(key_hex, work_message(item))


def new_token():
    return secrets.token_urlsafe(32)


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()
