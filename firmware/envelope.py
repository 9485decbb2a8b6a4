# Envelope signing and checking (docs/protocol.md): HMAC-SHA256 over raw bodies and work items.

import hashlib
from binascii import hexlify

_BLOCK = 64


def hmac_sha256(key, msg):
    """RFC 2104 HMAC with SHA-256 (MicroPython has no hmac module). msg: bytes, or a list of
    bytes-like pieces (a request body written in pieces, comms), signed as if joined."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    if isinstance(msg, list):
        for part in msg:
            inner.update(part)
    else:
        inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def sign(key, body):
    return hexlify(hmac_sha256(key, body)).decode()


def same(a, b):
    """Constant-time comparison of two hex strings."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= ord(x) ^ ord(y)
    return diff == 0


# A v2 work item has exactly these fields (and `sig`), each of this type: the signature
# covers every one with its type, so none can be dropped, added or retyped (an `expires`
# replayed as the string "1700000000" no longer matches).
WORK_FIELDS = (("id", str), ("device", str), ("seq", int), ("op", str), ("role", str),
               ("from", str), ("expires", int), ("args", str))


def _typed(value):
    # s<bytes>:<text> or i<digits>: length-prefixed, so no field can run into the next
    if isinstance(value, str):
        data = value.encode()
        return ("s%d:" % len(data)).encode() + data
    return ("i%d" % value).encode()


def work_message(item):
    """The bytes a v2 work item's `sig` covers; ValueError when a field is missing, extra or
    of the wrong type. `args` is JSON text, signed as sent, so the meter never re-serialises
    it (single-precision floats would print differently)."""
    if not isinstance(item, dict) or len(item) != len(WORK_FIELDS) + ("sig" in item):
        raise ValueError("work item fields")
    parts = [b"bc-work-2"]
    for name, kind in WORK_FIELDS:
        value = item.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError("work field %s" % name)
        parts.append(_typed(value))
    return b"|".join(parts)


def presence_message(device, conn, n, state, note):
    """What a signed MQTT presence message's `sig` covers (docs/protocol.md "Signed
    presence"): typed like work, so no field runs into the next. n 0 is the Last Will."""
    return b"|".join((b"bc-presence-2", _typed(device), _typed(conn), _typed(n),
                      _typed(state), _typed(note)))


def work_ok(key, item):
    sig = item.get("sig") if isinstance(item, dict) else None
    if not isinstance(sig, str):
        return False
    try:
        return same(sig, sign(key, work_message(item)))
    except ValueError:
        return False


def bound(resp, device, nonce=None, conn=None):
    """A response's binding (docs/protocol.md, v2): head-end to meter, for this device, and
    either answering the request `nonce` or pushed on the connection `conn`. The MAC over
    the body covers these fields."""
    if resp.get("v") != 2 or resp.get("dir") != "down" or resp.get("device") != device:
        return False
    re = resp.get("re")
    if re is not None:
        return nonce is not None and re == nonce
    return conn is not None and resp.get("conn") == conn
