"""A meter's XMPP login keys, computed at deploy (docs/xmpp.md): the meter never holds its
account's password, only what SCRAM-SHA-1 (RFC 5802) derives from it.

PBKDF2 with the server's salt and thousands of iterations would block an ESP32 for seconds,
and the salt is the server's (Prosody draws one per account): so this asks the server for
them, as any client's login starts (a SCRAM client-first message over Direct TLS, then the
stream is closed before any proof is sent), derives ClientKey and ServerKey here, and gives
the meter `ITERATIONS:SALT:CLIENT_KEY:SERVER_KEY` (its console-only secret `xmpp_scram`)."""

import base64
import hashlib
import hmac
import re
import secrets
import socket
import ssl

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class ProbeError(Exception):
    """One line for the user."""


def keys(password, salt, iterations):
    """(client_key, server_key) of RFC 5802 for a password, salt (bytes) and count."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    return (hmac.new(salted, b"Client Key", "sha1").digest(),
            hmac.new(salted, b"Server Key", "sha1").digest())


def scram_config(password, salt, iterations):
    """The meter's xmpp_scram value."""
    client, server = keys(password, salt, iterations)
    return "%d:%s:%s:%s" % (iterations, base64.b64encode(salt).decode(), client.hex(),
                            server.hex())


def _read_until(sock, pattern, limit=65536):
    data = b""
    while not re.search(pattern, data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ProbeError("the XMPP server closed the connection: %r" % data[-200:])
        data += chunk
        if len(data) > limit:
            raise ProbeError("the XMPP server sent more than %d bytes" % limit)
    return data


def probe(host, port, domain, user, cafile, timeout=10.0):
    """(salt bytes, iterations) of user@domain's SCRAM-SHA-1 credentials, from the server
    at host:port (Direct TLS, verified against cafile)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False      # the server may be reached by address; the CA is pinned
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw) as sock:
            sock.sendall(('<?xml version="1.0"?><stream:stream xmlns="jabber:client" '
                          'xmlns:stream="http://etherx.jabber.org/streams" to="%s" '
                          'version="1.0">' % domain).encode())
            features = _read_until(sock, rb"</stream:features>")
            if b"SCRAM-SHA-1<" not in features:
                raise ProbeError("%s:%d does not offer SCRAM-SHA-1" % (host, port))
            first = "n,,n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"),
                                      secrets.token_hex(12))
            sock.sendall(('<auth xmlns="%s" mechanism="SCRAM-SHA-1">%s</auth>'
                          % (NS_SASL, base64.b64encode(first.encode()).decode())).encode())
            answer = _read_until(sock, rb"</challenge>|</failure>|<failure[^>]*/>")
            sock.sendall(b'<abort xmlns="%s"/></stream:stream>' % NS_SASL.encode())
    except (OSError, ssl.SSLError) as e:
        raise ProbeError("cannot ask %s:%d for the account's salt: %s" % (host, port, e)) \
            from None
    m = re.search(rb"<challenge[^>]*>([A-Za-z0-9+/=]+)</challenge>", answer)
    if m is None:
        raise ProbeError("%s:%d refused to start a SCRAM login for %s@%s"
                         % (host, port, user, domain))
    fields = dict(p.split("=", 1) for p in base64.b64decode(m.group(1)).decode().split(",")
                  if "=" in p)
    try:
        return base64.b64decode(fields["s"]), int(fields["i"])
    except (KeyError, ValueError):
        raise ProbeError("malformed SCRAM challenge from %s:%d" % (host, port)) from None


def main(argv=None):
    """For a meter's account on a server this project does not run: read its password from
    stdin, print the meter's xmpp_scram (the password is not kept)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m headend.xmpp_meter_keys",
                                 description="a meter's XMPP login keys (xmpp_scram); the "
                                             "account's password on stdin")
    ap.add_argument("jid", help="the meter's account, ID@DOMAIN")
    ap.add_argument("--server", required=True, help="the server's address")
    ap.add_argument("--port", type=int, default=5223, help="its Direct TLS port")
    ap.add_argument("--cacert", required=True, help="the CA its certificate is from")
    a = ap.parse_args(argv)
    user, _, domain = a.jid.partition("@")
    if not user or not domain:
        ap.error("not a JID: %r (ID@DOMAIN)" % a.jid)
    password = sys.stdin.readline().rstrip("\n")
    try:
        salt, iterations = probe(a.server, a.port, domain, user, a.cacert)
    except ProbeError as e:
        print("xmpp_meter_keys: %s" % e, file=sys.stderr)
        return 1
    print(scram_config(password, salt, iterations))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
