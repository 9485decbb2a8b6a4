# ECDSA P-256 (secp256r1) signature verification with SHA-256, in pure (Micro)Python.
#   verify(public_key, message, signature) -> bool
# public_key: 65 bytes 04||X||Y; signature: 64 bytes r||s, big-endian. Bad input of any kind
# gives False, never an exception. Runs once per update, so big ints are fine; the point
# arithmetic uses Jacobian coordinates (no inversion per step) and Shamir's trick
# (u1*G + u2*Q in one pass of 256 doublings).

import hashlib
from binascii import unhexlify

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def on_curve(x, y):
    """y^2 = x^3 - 3x + b (mod p), coordinates in range."""
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(x1, y1, z1):
    # dbl-2001-b (a = -3)
    if z1 == 0 or y1 == 0:
        return 0, 1, 0
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add_affine(x1, y1, z1, x2, y2):
    # Jacobian (x1, y1, z1) + affine (x2, y2); handles infinity, P + P and P + (-P)
    if z1 == 0:
        return x2, y2, 1
    zz = z1 * z1 % P
    h = (x2 * zz - x1) % P
    r = (y2 * zz * z1 - y1) % P
    if h == 0:
        if r == 0:
            return _double(x1, y1, z1)
        return 0, 1, 0
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    return x3, y3, z1 * h % P


def _to_affine(x, y, z):
    zi = pow(z, P - 2, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def _shamir(u1, u2, qx, qy):
    """u1*G + u2*Q as Jacobian (x, y, z); z == 0 is the point at infinity."""
    sx, sy, sz = _add_affine(GX, GY, 1, qx, qy)  # G + Q, made affine for the mixed adds
    if sz != 0:
        sx, sy = _to_affine(sx, sy, sz)
    table = (None, (GX, GY), (qx, qy), (sx, sy) if sz != 0 else None)
    a = u1.to_bytes(32, "big")
    b = u2.to_bytes(32, "big")
    x, y, z = 0, 1, 0
    for k in range(32):
        ak = a[k]
        bk = b[k]
        for bit in (128, 64, 32, 16, 8, 4, 2, 1):
            x, y, z = _double(x, y, z)
            pt = table[(1 if ak & bit else 0) | (2 if bk & bit else 0)]
            if pt is not None:
                x, y, z = _add_affine(x, y, z, pt[0], pt[1])
    return x, y, z


def _point(public_key):
    """(x, y) of a 65-byte uncompressed key on the curve, or None."""
    if len(public_key) != 65 or public_key[0] != 4:
        return None
    x = int.from_bytes(bytes(public_key[1:33]), "big")
    y = int.from_bytes(bytes(public_key[33:]), "big")
    return (x, y) if on_curve(x, y) else None


def verify(public_key, message, signature):
    """True when `signature` (r||s) over `message` verifies with `public_key` (04||X||Y)."""
    try:
        q = _point(public_key)
        if q is None or len(signature) != 64:
            return False
        r = int.from_bytes(bytes(signature[:32]), "big")
        s = int.from_bytes(bytes(signature[32:]), "big")
        if not (0 < r < N and 0 < s < N):
            return False
        e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    except (TypeError, ValueError):
        return False
    w = pow(s, N - 2, N)
    x, y, z = _shamir(e * w % N, r * w % N, q[0], q[1])
    if z == 0:
        return False
    return _to_affine(x, y, z)[0] % N == r


def public_key_from_hex(text):
    """The 65-byte key from its 130-hex-char form (04||X||Y); ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError("public key must be a hex string")
    text = text.strip()
    if len(text) != 130:
        raise ValueError("public key must be 130 hex chars (04||X||Y), got %d" % len(text))
    try:
        key = unhexlify(text)
    except ValueError:
        raise ValueError("public key is not hex")
    if key[0] != 4:
        raise ValueError("public key must start with 04 (uncompressed point)")
    if _point(key) is None:
        raise ValueError("public key is not a point on P-256")
    return key


def signature_from_hex(text):
    """The 64-byte r||s from its 128-hex-char form; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError("signature must be a hex string")
    text = text.strip()
    if len(text) != 128:
        raise ValueError("signature must be 128 hex chars (r||s), got %d" % len(text))
    try:
        return unhexlify(text)
    except ValueError:
        raise ValueError("signature is not hex")


def public_of(k):
    """k*G as the 65-byte uncompressed point (04||X||Y): the public half of scalar k."""
    if not 0 < k < N:
        raise ValueError("scalar out of range")
    x, y = _to_affine(*_shamir(k, 0, GX, GY))
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def shared_x(k, public_key):
    """ECDH: the X coordinate (32 bytes) of k times the peer's public key, which is checked
    to be on the curve first (an off-curve point would leak k); ValueError when it is not."""
    q = _point(bytes(public_key)) if not isinstance(public_key, str) else None
    if q is None or not 0 < k < N:
        raise ValueError("peer key is not a point on P-256")
    x, y, z = _shamir(0, k, q[0], q[1])
    if z == 0:
        raise ValueError("peer key gives the point at infinity")
    return _to_affine(x, y, z)[0].to_bytes(32, "big")
