"""The release key (docs/ota.md): ECDSA P-256 with SHA-256. The private key is PKCS#8 PEM
(mode 0600); the public key and signatures travel as hex: the 65-byte uncompressed point
`04 || X || Y` and the 64-byte `r || s`, as firmware/p256.py verifies them."""

import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PRIVATE_NAME = "release-key.pem"
PUBLIC_NAME = "release-key.pub"


class ReleaseError(ValueError):
    """A bad key, release or manifest: the message says what and where."""


def keygen(directory):
    """Write release-key.pem (0600) and release-key.pub into directory; never overwrites.
    Returns (private path, public hex)."""
    os.makedirs(directory, exist_ok=True)
    priv_path = os.path.join(directory, PRIVATE_NAME)
    pub_path = os.path.join(directory, PUBLIC_NAME)
    for path in (priv_path, pub_path):
        if os.path.lexists(path):
            raise ReleaseError("%s already exists: not overwriting a release key" % path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = public_hex(key.public_key())
    with open(pub_path, "w") as f:
        f.write(pub + "\n")
    return priv_path, pub


def public_hex(public_key):
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint).hex()


def load_private(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ReleaseError("%s: %s" % (path, e.strerror or e)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ReleaseError("%s: not an unencrypted PEM private key" % path) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ReleaseError("%s: not an ECDSA P-256 key" % path)
    return key


def parse_public(text, where="public key"):
    """An EllipticCurvePublicKey from 130 hex chars (04 || X || Y)."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 65 or raw[0] != 4:
        raise ReleaseError("%s: expected 130 hex chars (an uncompressed P-256 point)" % where)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ReleaseError("%s: not a point on P-256" % where) from None


def load_public(path):
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError("%s: %s" % (path, getattr(e, "strerror", None) or e)) from None
    return parse_public(text, path)


ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551    # of P-256


def sign(private_key, message):
    """Hex r || s (128 chars) over message (bytes), ECDSA P-256 SHA-256. s is the low one
    of s and n - s (both verify; the low one also passes verifiers that insist on it)."""
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    s = min(s, ORDER - s)
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


def verify(public_key, message, sig_hex):
    """True if sig_hex (r || s) is a valid signature of message by public_key."""
    try:
        raw = bytes.fromhex(sig_hex.strip())
    except ValueError:
        return False
    if len(raw) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
