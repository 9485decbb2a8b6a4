# Envelope signing and checking (docs/protocol.md): HMAC-SHA256 over raw bodies and work items.

import hashlib
from binascii import hexlify

_BLOCK = 64


def hmac_sha256(key, msg):
    """RFC 2104 HMAC with SHA-256 (MicroPython has no hmac module)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
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


def work_message(item):
    """The bytes a work item's `sig` covers. `args` is JSON text, signed as sent, so the
    meter never re-serialises it (single-precision floats would print differently)."""
    return ("%s|%s|%s|%s|%s|%s" % (item["id"], item["op"], item["role"], item["expires"],
                                   item["from"], item["args"])).encode()


def work_ok(key, item):
    sig = item.get("sig")
    return isinstance(sig, str) and same(sig, sign(key, work_message(item)))
