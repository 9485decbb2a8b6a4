# SASL SCRAM-SHA-1 (RFC 5802) for the meter's XMPP login, from keys computed at deploy.
#
# SCRAM's client derives SaltedPassword = PBKDF2-HMAC-SHA1(password, salt, i) with the
# server's salt and thousands of iterations: seconds of CPU on an ESP32. The meter never
# holds the password: `backchannel xmpp-account --meter` asks the server for the account's
# salt and iteration count once, derives ClientKey and ServerKey, and the meter keeps those
# four (config xmpp_scram, a console-only secret). At login the server's salt and count must
# be the ones provisioned; if the account was reset, the meter says so instead of failing
# with "not authorized". ServerKey lets the meter check the server's signature too: only a
# server holding the account's keys can complete the login (mutual authentication).

import hashlib
from binascii import a2b_base64, b2a_base64, hexlify, unhexlify

MECHANISM = "SCRAM-SHA-1"
_BLOCK = 64


class SaslError(Exception):
    pass


def hmac_sha1(key, msg):
    """RFC 2104 HMAC with SHA-1 (MicroPython has no hmac module)."""
    if len(key) > _BLOCK:
        key = hashlib.sha1(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha1(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha1(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def b64(data):
    return b2a_base64(data).strip()


def parse_keys(text):
    """(iterations, salt, client_key, server_key) from config xmpp_scram
    "ITERATIONS:SALT_BASE64:CLIENT_KEY_HEX:SERVER_KEY_HEX"; ValueError with the reason."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError("xmpp_scram must be ITERATIONS:SALT:CLIENT_KEY:SERVER_KEY "
                         "(from backchannel xmpp-account --meter)")
    try:
        iterations = int(parts[0])
        salt = a2b_base64(parts[1])
        client_key = unhexlify(parts[2])
        server_key = unhexlify(parts[3])
    except ValueError:
        raise ValueError("xmpp_scram: iterations must be a number, the salt base64 and "
                         "the keys hex")
    if iterations < 1 or not salt or len(client_key) != 20 or len(server_key) != 20:
        raise ValueError("xmpp_scram: the keys are 40 hex digits each (SHA-1)")
    return iterations, salt, client_key, server_key


def _saslname(user):
    return user.replace("=", "=3D").replace(",", "=2C")


def _fields(msg):
    out = {}
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise SaslError("malformed SCRAM message from the server")
        out[part[0]] = part[2:]
    return out


class Scram:
    """One login. first() -> client-first; final(server-first) -> client-final;
    verify(server-final) raises SaslError unless the server proved it holds the keys.
    Messages are text; the caller base64-encodes them into the XML."""

    def __init__(self, user, keys, nonce):
        self.iterations, self.salt, self.client_key, self.server_key = keys
        self.user = user
        self.nonce = nonce
        self.bare = None
        self.server_signature = None

    def first(self):
        self.bare = "n=%s,r=%s" % (_saslname(self.user), self.nonce)
        return "n,," + self.bare

    def final(self, server_first):
        f = _fields(server_first)
        r, s, i = f.get("r", ""), f.get("s", ""), f.get("i", "")
        if not r.startswith(self.nonce) or len(r) <= len(self.nonce):
            raise SaslError("the server's SCRAM nonce does not extend ours")
        try:
            salt, iterations = a2b_base64(s), int(i)
        except ValueError:
            raise SaslError("malformed SCRAM salt or iteration count from the server")
        if salt != self.salt or iterations != self.iterations:
            raise SaslError("the account's SCRAM salt or iteration count (%d) is not the one "
                            "provisioned (%d): the account was reset; provision the meter "
                            "again (backchannel xmpp-account --meter)"
                            % (iterations, self.iterations))
        without_proof = "c=biws,r=" + r
        auth = ("%s,%s,%s" % (self.bare, server_first, without_proof)).encode()
        stored_key = hashlib.sha1(self.client_key).digest()
        signature = hmac_sha1(stored_key, auth)
        proof = bytes(a ^ b for a, b in zip(self.client_key, signature))
        self.server_signature = hmac_sha1(self.server_key, auth)
        return without_proof + ",p=" + b64(proof).decode()

    def verify(self, server_final):
        f = _fields(server_final)
        if "e" in f:
            raise SaslError("the server refused the login: %s" % f["e"][:64])
        try:
            got = a2b_base64(f.get("v", ""))
        except ValueError:
            got = b""
        if hexlify(got) != hexlify(self.server_signature or b"?"):
            raise SaslError("the server's SCRAM signature is wrong: not the account's server")
