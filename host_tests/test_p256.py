"""firmware/p256.py (ECDSA P-256 / SHA-256 verification) against the `cryptography` package.

Every signature is made by `cryptography` (RFC 6979 deterministic nonces, DER converted to
r||s with decode_dss_signature), and every expected result comes from `cryptography`'s own
verify, plus a stated expectation per case. One batch of cases (valid, tampered, wrong key,
out-of-range r/s, off-curve and malformed keys, Wycheproof-style edge cases: every pair of
special values 0, 1, n-1, n, n+1, p, p+1 for r and s, Q = G, Q = -G, high s, r + n, keys
crafted so that u1*G == +-u2*Q) runs through mp_scripts/p256_cases.py under the MicroPython unix
port and CPython, one process each. Hypothesis adds random keys and messages in-process
under CPython.
"""

import json
import random

import p256  # noqa: E402
import pytest
from budget import examples
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "p256_cases.py"
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def private(d):
    return ec.derive_private_key(d, ec.SECP256R1())


def public_bytes(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def sign(key, message):
    r, s = utils.decode_dss_signature(key.sign(message, ECDSA))
    return r, s


def rs(r, s, size=32):
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def oracle(public, message, signature):
    """`cryptography`'s verdict; malformed inputs it cannot even load are invalid, and so
    is any key form but the uncompressed point (the API takes only that)."""
    if len(signature) != 64 or len(public) != 65 or public[:1] != b"\x04":
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(public))
    except ValueError:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(utils.encode_dss_signature(r, s), message, ECDSA)
        return True
    except (InvalidSignature, ValueError):
        return False


def flip(data, bit):
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def x_of(d):
    """x coordinate of d*G, through `cryptography`."""
    return private(d).public_key().public_numbers().x


def crafted(msg):
    """Keys made for one signature so that the verifier's sum u1*G + u2*Q is special, as in
    Wycheproof's PointDuplication cases: u1*G == u2*Q (valid; defeats a verifier that adds
    the two products without a doubling case) and u1*G == -u2*Q (the sum is the point at
    infinity: invalid)."""
    e = int.from_bytes(hashes_sha256(msg), "big") % N
    t = 0x5EED
    r = x_of(t) % N
    s = 2 * e * pow(t, -1, N) % N        # u1 = e/s = t/2 and u2*d = r*d/s = t/2
    d = e * pow(r, -1, N) % N
    r2, s2 = 0x1234567, 0x89ABCDEF
    d2 = -e * pow(r2, -1, N) % N         # u1*G + u2*Q = (e + r2*d2)/s2 * G = infinity
    return [("point doubling u1*G = u2*Q", public_bytes(private(d)), msg, rs(r, s), True),
            ("sum at infinity u1*G = -u2*Q", public_bytes(private(d2)), msg, rs(r2, s2),
             False)]


def hashes_sha256(data):
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def build_cases():
    """[(name, public, message, signature, expected)]; the first one is valid."""
    rng = random.Random(6256)
    key = private(rng.randrange(1, N))
    other = private(rng.randrange(1, N))
    pub = public_bytes(key)
    msg = b"manifest text"
    r, s = sign(key, msg)
    x, y = int.from_bytes(pub[1:33], "big"), int.from_bytes(pub[33:], "big")
    cases = [
        ("valid", pub, msg, rs(r, s), True),
        ("tampered message", pub, msg + b" ", rs(r, s), False),
        ("message bit flipped", pub, flip(msg, 3), rs(r, s), False),
        ("tampered r", pub, msg, rs(r ^ 1, s), False),
        ("tampered s", pub, msg, rs(r, s ^ 1), False),
        ("r and s swapped", pub, msg, rs(s, r), False),
        ("wrong key", public_bytes(other), msg, rs(r, s), False),
        ("high s (n - s) is valid ECDSA", pub, msg, rs(r, N - s), True),
        ("s = 0", pub, msg, rs(r, 0), False),
        ("r = 0", pub, msg, rs(0, s), False),
        ("r = s = 0", pub, msg, rs(0, 0), False),
        ("r = n", pub, msg, rs(N, s), False),
        ("s = n", pub, msg, rs(r, N), False),
        ("r + n", pub, msg, rs(r + N, s), False) if r + N < 2 ** 256 else
        ("r = n + 1", pub, msg, rs(N + 1, s), False),
        ("r = p", pub, msg, rs(P, s), False),
        ("r = 2^256 - 1", pub, msg, rs(2 ** 256 - 1, s), False),
        ("r = s = 1", pub, msg, rs(1, 1), False),
        ("r = s = n - 1", pub, msg, rs(N - 1, N - 1), False),
        ("key off the curve (y + 1)", pub[:33] + ((y + 1) % P).to_bytes(32, "big"), msg,
         rs(r, s), False),
        ("key x = p", b"\x04" + P.to_bytes(32, "big") + pub[33:], msg, rs(r, s), False),
        ("key (0, 0)", b"\x04" + bytes(64), msg, rs(r, s), False),
        ("key prefix 05", b"\x05" + pub[1:], msg, rs(r, s), False),
        ("compressed key", bytes([2 + (y & 1)]) + pub[1:33], msg, rs(r, s), False),
        ("key 64 bytes", pub[1:], msg, rs(r, s), False),
        ("key 66 bytes", pub + b"\x00", msg, rs(r, s), False),
        ("empty key", b"", msg, rs(r, s), False),
        ("signature 63 bytes", pub, msg, rs(r, s)[:63], False),
        ("signature 65 bytes", pub, msg, rs(r, s) + b"\x00", False),
        ("signature DER", pub, msg, key.sign(msg, ECDSA), False),
        ("empty signature", pub, msg, b"", False),
        ("x coordinate of key", pub, msg, rs(x % N, s), False),
    ]
    # Q = G (d = 1): G + Q needs a doubling; Q = -G (d = n - 1): G + Q is the infinity
    for name, d in (("key = G", 1), ("key = -G", N - 1), ("key d = 2", 2)):
        k = private(d)
        cases.append((name, public_bytes(k), msg, rs(*sign(k, msg)), True))
        cases.append((name + ", wrong message", public_bytes(k), b"x", rs(*sign(k, msg)), False))
    cases += crafted(msg)
    specials = {"0": 0, "1": 1, "n-1": N - 1, "n": N, "n+1": N + 1, "p": P, "p+1": P + 1}
    for rn, rv in specials.items():
        for sn, sv in specials.items():
            cases.append(("special r=%s s=%s" % (rn, sn), pub, msg, rs(rv, sv), False))
    for label, m in (("empty message", b""), ("10 KB message", bytes(range(256)) * 40)):
        cases.append((label, pub, m, rs(*sign(key, m)), True))
    for i in range(6):  # random keys and messages
        k = private(rng.randrange(1, N))
        m = rng.randbytes(rng.randrange(0, 300))
        cases.append(("random %d" % i, public_bytes(k), m, rs(*sign(k, m)), True))
        bad = flip(rs(*sign(k, m)), rng.randrange(512))
        cases.append(("random %d, signature bit flipped" % i, public_bytes(k), m, bad, False))
    return cases


CASES = build_cases()
PUB_HEX = CASES[0][1].hex()
KEY_TEXTS = [
    (PUB_HEX, "ok"),
    (PUB_HEX.upper(), "ok"),
    (" %s\n" % PUB_HEX, "ok"),
    (PUB_HEX[:-2], "130 hex chars"),
    (PUB_HEX + "00", "130 hex chars"),
    ("", "130 hex chars"),
    ("zz" + PUB_HEX[2:], "not hex"),
    ("02" + PUB_HEX[2:], "start with 04"),
    (PUB_HEX[:-1] + ("0" if PUB_HEX[-1] != "0" else "1"), "not a point on P-256"),
]


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def run(request):
    doc = {"verify": [[n, k.hex(), m.hex(), s.hex()] for n, k, m, s, _ in CASES],
           "keys": [t for t, _ in KEY_TEXTS]}
    return json.loads(runner.run(request.param, DRIVER, stdin=json.dumps(doc).encode()))


def test_cases_agree_with_cryptography():
    for name, key, message, signature, expected in CASES:
        assert oracle(key, message, signature) is expected, name


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_verify(run, case):
    name, _, _, _, expected = case
    assert run["verify"][name] is expected


def test_public_key_from_hex(run):
    for (text, want), (kind, detail) in zip(KEY_TEXTS, run["keys"]):
        if want == "ok":
            assert [kind, detail] == ["ok", PUB_HEX], text
        else:
            assert kind == "ValueError" and want in detail, (text, detail)


def test_wrong_types_give_false_and_buffers_work(run):
    # None / str / int arguments: False, never an exception; bytearray and memoryview verify
    assert run["odd_types"] == [False] * 6 + [True]


def test_signature_from_hex():
    sig = CASES[0][3]
    assert p256.signature_from_hex(sig.hex()) == sig
    for text, want in ((sig.hex()[:-2], "128 hex chars"), ("g" * 128, "not hex"),
                       (None, "hex string")):
        with pytest.raises(ValueError, match=want):
            p256.signature_from_hex(text)


KEYS = st.integers(min_value=1, max_value=N - 1)
RANDOM = settings(max_examples=examples(40), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(d=KEYS, message=st.binary(max_size=512))
def test_random_valid_signatures_verify(d, message):
    key = private(d)
    assert p256.verify(public_bytes(key), message, rs(*sign(key, message)))


@RANDOM
@given(d=KEYS, message=st.binary(max_size=256), bit=st.integers(0, 8 * 64 + 8 * 65 - 1),
       extra=st.binary(min_size=1, max_size=4))
def test_random_tampering_matches_cryptography(d, message, bit, extra):
    key = private(d)
    pub, sig = public_bytes(key), rs(*sign(key, message))
    if bit < 512:
        sig = flip(sig, bit)
    else:
        pub = flip(pub, bit - 512)
    assert p256.verify(pub, message, sig) is oracle(pub, message, sig)
    assert p256.verify(public_bytes(key), message + extra, rs(*sign(key, message))) is False


@RANDOM
@given(d=KEYS, other=KEYS, message=st.binary(max_size=64))
def test_random_wrong_key(d, other, message):
    key = private(d)
    sig = rs(*sign(key, message))
    assert p256.verify(public_bytes(private(other)), message, sig) is (d == other)
