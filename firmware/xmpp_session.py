# One XMPP client connection for firmware/xmpp_comms.py (RFC 6120): Direct TLS (XEP-0368)
# to the server, the stream, SASL SCRAM-SHA-1 from keys computed at deploy (Scram, below),
# the stream restart, resource binding; then stanzas both ways and XEP-0199 pings. It knows
# XMPP, not what the meter exchanges: XmppComms hands it stanzas to send and takes the
# stanzas that arrive.
#
# - Every network await has a deadline (timeout_s): connect, each negotiation step, every
#   write. A reader task reads and parses (xmpp_stanza.StanzaReader, at most one network read
#   of 1 KB per step), so parsing never holds up the metering task for long.
# - Keepalive: a ping to the server every ping_ms (at most 25 s: NAT boxes and proxies drop
#   connections idle for 30 s); no answer within timeout_s is a dead link. Pings to the
#   meter (the head-end's presence probe) are answered; other queries get the error RFC 6120
#   asks for (service-unavailable).
# Every failure is an exception (EXPECTED_ERRORS): the connection is then unusable, and
# XmppComms closes it, backs off and opens a new session.

import asyncio
import hashlib
from binascii import a2b_base64, b2a_base64, hexlify, unhexlify

import netconn
from mpshim import ticks_diff, ticks_ms
from xmlmini import XmlError, escape
from xmpp_stanza import ATTRS, NAME, TEXT, StanzaReader, StreamEnded, child, error_text

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
PING_NS = "urn:xmpp:ping"
PING_MAX_MS = 25000
MAX_INBOX = 32          # stanzas read but not yet taken: more is a flood, not a meter's load


class LinkError(Exception):
    """The connection to the server is unusable: reconnect."""


# --- SASL SCRAM-SHA-1 (RFC 5802) from keys computed at deploy ---
#
# SCRAM's client derives SaltedPassword = PBKDF2-HMAC-SHA1(password, salt, i) with the
# server's salt and thousands of iterations: seconds of CPU on an ESP32. The meter never
# holds the password: `backchannel xmpp-account --meter` asks the server for the account's
# salt and iteration count once, derives ClientKey and ServerKey, and the meter keeps those
# four (config xmpp_scram, a console-only secret). At login the server's salt and count must
# be the ones provisioned; if the account was reset, the meter says so instead of failing
# with "not authorized". ServerKey lets the meter check the server's signature too: only a
# server holding the account's keys can complete the login (mutual authentication).

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


EXPECTED_ERRORS = (LinkError, OSError, EOFError, XmlError, StreamEnded, SaslError,
                   asyncio.TimeoutError)




def header(domain):
    return ('<?xml version="1.0"?><stream:stream xmlns="jabber:client" '
            'xmlns:stream="http://etherx.jabber.org/streams" to="%s" version="1.0" '
            'xml:lang="en">' % escape(domain, True))


class XmppSession:
    def __init__(self, user, domain, keys, host, port, ssl, nonce, resource="meter",
                 timeout_s=10, ping_s=25):
        """keys: parse_keys() of the provisioned SCRAM keys; nonce(): a fresh
        random text per login."""
        self.user = user
        self.domain = domain
        self.keys = keys
        self.host = host
        self.port = port
        self.ssl = ssl
        self.nonce = nonce
        self.resource = resource
        self.timeout_s = timeout_s
        self.ping_ms = min(int(ping_s * 1000), PING_MAX_MS)
        self.jid = None                 # the full JID the server bound
        self.connected = False
        self.connected_at = 0
        self.wake = asyncio.Event()     # stanzas arrived, or the reader failed
        self.writer = None
        self.rx_task = None
        self.flushes = 0
        self.pings = 0                  # pings answered for others (presence probes)
        self.reset()

    def reset(self):
        self.reader = StanzaReader()
        self.inbox = []
        self.out = []
        self.rx_error = None
        self.ping_at = ticks_ms()
        self.ping_id = None
        self.ids = 0

    # --- connect, log in, bind ---
    async def open(self):
        self.reset()
        connecting = netconn.open_connection(self.host, self.port, self.ssl,
                                             server_hostname=self.domain)
        reader, self.writer = await asyncio.wait_for(connecting, self.timeout_s)
        self.rx_task = asyncio.create_task(self._read_loop(reader))
        features = await self._start_stream()
        mechs = child(features, "mechanisms", SASL_NS)
        if mechs is None or not [m for m in mechs[2] if m[TEXT] == MECHANISM]:
            raise LinkError("the server does not offer %s" % MECHANISM)
        await self._login()
        self.reader.restart()
        features = await self._start_stream()
        if child(features, "bind", BIND_NS) is None:
            raise LinkError("the server offers no resource binding")
        self.send('<iq type="set" id="bind"><bind xmlns="%s"><resource>%s</resource></bind>'
                  '</iq>' % (BIND_NS, escape(self.resource)))
        await self.flush()
        answer = await self._next("iq")
        bound = child(answer, "bind", BIND_NS)
        jid = child(bound, "jid") if bound is not None else None
        if answer[ATTRS].get("type") != "result" or jid is None:
            raise LinkError("resource binding refused: %s" % error_text(child(answer, "error")))
        self.jid = jid[TEXT]
        self.connected = True
        self.connected_at = self.ping_at = ticks_ms()

    async def _start_stream(self):
        self.send(header(self.domain))
        await self.flush()
        return await self._next("stream:features")

    async def _login(self):
        scram = Scram(self.user, self.keys, self.nonce())
        self.send('<auth xmlns="%s" mechanism="%s">%s</auth>'
                  % (SASL_NS, MECHANISM, b64(scram.first().encode()).decode()))
        await self.flush()
        el = await self._next(None)
        if el[NAME] != "challenge":
            raise self._sasl_failed(el)
        final = scram.final(_decoded(el))
        self.send('<response xmlns="%s">%s</response>' % (SASL_NS, b64(final.encode()).decode()))
        await self.flush()
        el = await self._next(None)
        if el[NAME] != "success":
            raise self._sasl_failed(el)
        scram.verify(_decoded(el))

    def _sasl_failed(self, el):
        if el[NAME] == "failure":
            return SaslError("the server refused the login: %s" % error_text(el))
        return LinkError("unexpected <%s> during the login" % el[NAME][:32])

    async def _next(self, name):
        """The next stanza (which must be called name, if given), within timeout_s."""
        start = ticks_ms()
        while not self.inbox:
            self.wake.clear()
            if self.rx_error is not None:
                raise self.rx_error
            left = self.timeout_s - ticks_diff(ticks_ms(), start) / 1000
            if left <= 0:
                raise LinkError("no <%s> from the server within %g s"
                                % (name or "answer", self.timeout_s))
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:
                pass
        el = self.inbox.pop(0)
        if name is not None and el[NAME] != name:
            raise LinkError("expected <%s> from the server, got <%s>" % (name, el[NAME][:32]))
        return el

    # --- bytes both ways ---
    async def _read_loop(self, reader):
        try:
            while True:
                data = await reader.read(1024)
                if not data:
                    raise LinkError("the server closed the connection")
                self._arrived(self.reader.feed(data))
                self.wake.set()
        except Exception as exc:    # noqa: BLE001 - handed to the session's owner
            try:
                self._arrived(getattr(exc, "stanzas", ()))  # what came before a bad stanza
            except LinkError:
                pass
            self.rx_error = exc
            self.wake.set()

    def _arrived(self, stanzas):
        for el in stanzas:
            if len(self.inbox) >= MAX_INBOX:
                raise LinkError("more than %d stanzas waiting" % MAX_INBOX)
            self.inbox.append(el)

    def send(self, text):
        """Queue a stanza (str) or a piece of one (bytes: a large body, written as it is)."""
        self.out.append(text)

    def pending(self):
        return len(self.out) > 0

    async def flush(self):
        out, self.out = self.out, []
        self.flushes += 1
        text = []   # small stanzas go out joined, in one write; bytes pieces are not copied
        for piece in out:
            if isinstance(piece, str):
                text.append(piece)
                continue
            if text:
                self.writer.write("".join(text).encode())
                text = []
            self.writer.write(piece)
        if text:
            self.writer.write("".join(text).encode())
        await asyncio.wait_for(self.writer.drain(), self.timeout_s)

    def close(self):
        if self.connected and self.writer is not None:
            try:
                self.writer.write(b"</stream:stream>")  # courtesy; never awaited
            except OSError:
                pass
        self.connected = False
        if self.rx_task is not None:
            self.rx_task.cancel()
            self.rx_task = None
        w, self.writer = self.writer, None
        netconn.close(w)

    # --- after the login ---
    def take(self, now):
        """The stanzas that arrived (pings and queries answered here), after the timers.
        Raises what the reader found, once the stanzas that came before it are taken."""
        if self.rx_error is not None and not self.inbox:
            raise self.rx_error
        got, self.inbox = self.inbox, []
        out = []
        for el in got:
            if el[NAME] != "iq" or not self._iq(el):
                out.append(el)
        self._timers(now)
        return out

    def _iq(self, el):
        """Handle an iq; False if the caller should see it."""
        a = el[ATTRS]
        kind, iq_id = a.get("type"), a.get("id", "")
        if kind in ("result", "error"):
            if iq_id == self.ping_id and iq_id:
                self.ping_id = None         # any answer proves the link alive
            return True
        frm = escape(a.get("from", self.domain), True)
        if kind == "get" and child(el, "ping", PING_NS) is not None:
            self.pings += 1
            self.send('<iq type="result" id="%s" to="%s"/>' % (escape(iq_id, True), frm))
        else:
            self.send('<iq type="error" id="%s" to="%s"><error type="cancel">'
                      '<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
                      '</error></iq>' % (escape(iq_id, True), frm))
        return True

    def _timers(self, now):
        if self.ping_id is not None and ticks_diff(now, self.ping_at) > self.timeout_s * 1000:
            raise LinkError("no answer to a ping within %g s" % self.timeout_s)
        if self.ping_id is None and ticks_diff(now, self.ping_at) >= self.ping_ms:
            self.ids += 1
            self.ping_id = "p%d" % self.ids
            self.ping_at = now
            self.send('<iq type="get" id="%s" to="%s"><ping xmlns="%s"/></iq>'
                      % (self.ping_id, escape(self.domain, True), PING_NS))


def _decoded(el):
    """The text of a SASL challenge or success: base64 of the SCRAM message."""
    data = el[TEXT].strip()
    if not data or data == "=":
        return ""
    try:
        return a2b_base64(data).decode()
    except (ValueError, UnicodeError):
        raise SaslError("malformed SASL data from the server")
