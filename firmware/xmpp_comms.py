# The exchange over XMPP (docs/xmpp.md, "The meter's transport"): the meter is an IM client
# of the server with its own account, device_id@xmpp_domain; its collaborator XmppSession
# (firmware/xmpp_session.py) is one connection. The head-end is the server's component
# (xmpp_component): meters and operators never see each other's accounts.
#
# Exchange: the signed request of docs/protocol.md, sent as
#   <message to="COMPONENT"><bc xmlns="urn:backchannel:exchange" sig="HEX">BASE64</bc></message>
# when the outbox has new items, after work ran, on kick(), and at least every poll_s (the
# head-end's `next`; default heartbeat_s), one at a time until its answer (or answer_s). The
# head-end answers and pushes work the same way. The body is base64 because a server may
# re-serialise XML: the signature covers the decoded bytes, exactly as over HTTP and MQTT.
# A message is applied only when it comes from the component, its signature holds and it is
# bound (v2): it answers our latest request (`re`), or is a push for this connection's
# random nonce (`conn`); time is taken only from an answer. Anything else is refused with
# the reason in last_error (and counted in `refused`); nothing queued is lost, since the
# outbox deletes only what an applied ack covers.
#
# Presence: the meter's stated presence is its XMPP presence, directed to the component:
# available plain, available_restricted away, active dnd, available_off xa, unavailable
# unavailable, the note as the status. When the connection drops, the server tells the
# component the meter is unavailable (as MQTT's Last Will does).
#
# A dropped connection is recovered with backoff (exponential, with jitter), as over MQTT.

import asyncio
import json
import random
from binascii import a2b_base64, b2a_base64

import envelope
from comms import (
    ALIVE_MARGIN_S,
    accept_down,
    answer_overdue,
    down_keys,
    new_nonce,
    request_body,
    sign_key,
    signed_by,
    time_refusal,
)
from httpc import tls_reason
from memory_guard import Batch
from mpshim import ticks_diff, ticks_ms
from xmlmini import escape
from xmpp_session import EXPECTED_ERRORS, SaslError, XmppSession, parse_keys
from xmpp_stanza import ATTRS, NAME, TEXT, StreamEnded, child, error_text

NS = "urn:backchannel:exchange"
SHOW = {"available_restricted": "away", "active": "dnd", "available_off": "xa"}


def bare(jid):
    i = jid.find("/")
    return jid if i < 0 else jid[:i]


class XmppComms:
    def __init__(self, device_id, key, host, port, domain, component, scram, outbox, inbox,
                 dispatcher, clock, ssl=None, presence=None, heartbeat_s=30,
                 backoff_base=1.0, backoff_cap=60.0, batch_items=32, batch_bytes=16384,
                 timeout_s=10):
        self.device_id = device_id
        self.key = key
        self.component = component
        self.outbox = outbox
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.presence = presence
        self.heartbeat_s = heartbeat_s
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch = Batch(batch_items, batch_bytes)    # halved after a MemoryError
        self.wait_s = 0                 # interface parity with Comms (no long-poll)
        self.poll_s = 0
        self.failures = 0
        self.link_failures = 0
        self.exchanges = 0
        self.refused = 0                # messages refused (wrong sender, signature, binding)
        self.last_ok = None
        self.last_error = None
        self.after_exchange = None
        self.heartbeat = None
        self.updater = None
        self.time_refusals = 0
        self.kicked = False
        self.rekey = None               # a key rotation in flight (rekey.py): both keys
        self.session = XmppSession(device_id, domain, parse_keys(scram), host, port, ssl,
                                   new_nonce, timeout_s=timeout_s)
        self.answer_s = 2 * timeout_s
        self.new_connection()

    def new_connection(self):
        self.conn = new_nonce()
        self.sent_nonce = None
        self.awaiting = None
        self.up_at = ticks_ms()
        self.hold_at = None
        self.hold_ms = 0
        self.want_up = True
        self.sent_next_seq = None
        self.sent_done = []
        self.sent_presence = None
        self.ids = 0

    # --- the interface app.py uses (as comms.Comms) ---
    def kick(self):
        self.kicked = True
        self.session.wake.set()

    def backoff_s(self, failures=None):
        n = self.failures if failures is None else failures
        delay = min(self.backoff_cap, self.backoff_base * (1 << min(n, 16)))
        return delay * (0.5 + random.random() / 2)

    async def run(self):
        s = self.session
        while True:
            self._alive(0)
            try:
                await self._connected()
            except Exception as exc:  # link down, login refused, stream error, bad stanza
                self.failures += 1
                if s.connected and ticks_diff(ticks_ms(), s.connected_at) >= s.ping_ms:
                    self.link_failures = 0      # it held for a ping interval: sound
                self.link_failures += 1
                self.last_error = self.reason(exc)
                log("link down: %s" % self.last_error)
                if isinstance(exc, MemoryError):
                    self.batch.shrink()
                if not (isinstance(exc, EXPECTED_ERRORS) or s.ssl is not None and
                        tls_reason(exc)):
                    from mpshim import print_exception
                    print_exception(exc)        # a bug rather than the network
            finally:
                s.close()
            delay = self.backoff_s(self.link_failures)
            self._alive(delay)
            await asyncio.sleep(delay)

    def _alive(self, wait_s):
        if self.heartbeat is not None:  # connect, 5 negotiation steps, writes: timeout_s each
            self.heartbeat(wait_s + 7 * self.session.timeout_s + ALIVE_MARGIN_S)

    def reason(self, exc):
        s = self.session
        if isinstance(exc, asyncio.TimeoutError):
            return "XMPP server timed out (connect or write)"
        tls = tls_reason(exc) if s.ssl is not None else None
        if tls:
            return "TLS with %s:%d failed: %s" % (s.host, s.port, tls)
        if isinstance(exc, (SaslError, StreamEnded)):
            return str(exc)
        return "%s: %s" % (type(exc).__name__, exc)

    # --- one connection ---
    async def _connected(self):
        s = self.session
        self.new_connection()
        await s.open()
        log("connected to %s:%d as %s" % (s.host, s.port, s.jid))
        while True:
            self._alive(0)
            s.wake.clear()
            self.step(ticks_ms())
            if s.pending():
                await s.flush()
            try:
                await asyncio.wait_for(s.wake.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    def step(self, now):
        """Take what arrived, run the timers, queue what is due (the caller flushes)."""
        for el in self.session.take(now):
            if el[NAME] == "message":
                self.on_message(el)
        self._answer_timer(now)
        self._outbound(now)

    def _refuse(self, reason):
        self.refused += 1
        self.last_error = reason
        log(reason)

    # --- what arrives ---
    def on_message(self, el):
        a = el[ATTRS]
        frm = a.get("from", "")
        if a.get("type") == "error":    # e.g. the component is not connected to the server
            self._refuse("the head-end's component did not take a message: %s"
                         % error_text(child(el, "error")))
            return
        bc = child(el, "bc", NS)
        if bc is None:
            return                      # a chat message or a receipt: not for the meter
        if bare(frm) != self.component:
            self._refuse("exchange message from %s refused: not the head-end's component %s"
                         % (frm[:64], self.component))
            return
        try:
            raw = a2b_base64(bc[TEXT])
        except ValueError:
            self._refuse("exchange message is not base64; refused")
            return
        sig = bc[ATTRS].get("sig", "")
        used = signed_by(sig, raw, down_keys(self)) if len(sig) == 64 else None
        if used is None:
            self._refuse("response signature does not match; refused")
            return
        try:
            resp = json.loads(raw)
        except ValueError:
            resp = None
        if not isinstance(resp, dict):
            self._refuse("response is not a JSON object; refused")
            return
        self._apply(resp, used)

    def _apply(self, resp, used=None):
        if "error" in resp:     # the signed time refusal of our request (docs/protocol.md)
            if self.awaiting is not None and time_refusal(self, resp, self.sent_nonce):
                self.awaiting = None
                self.want_up = True
            return
        if not envelope.bound(resp, self.device_id, self.sent_nonce, self.conn):
            self._refuse("message answers no request of this connection; refused")
            return
        accept_down(self, resp, used)

    def _answer_timer(self, now):
        answer_overdue(self, now)

    # --- what to send ---
    def _outbound(self, now):
        p = self.presence
        stated = (p.state, p.note) if p is not None else ("available", "")
        if stated != self.sent_presence:
            self.sent_presence = stated
            self.session.send(presence_stanza(self.component, stated[0], stated[1]))
        if self.awaiting is not None:
            return
        if self.hold_at is not None and ticks_diff(now, self.hold_at) < self.hold_ms:
            return
        every = (self.poll_s if self.poll_s > 0 else self.heartbeat_s) * 1000
        if (self.kicked or self.want_up or self.outbox.next_seq != self.sent_next_seq
                or ticks_diff(now, self.up_at) >= every):
            self.send_up(now)

    def send_up(self, now):
        _, done, body = request_body(self, 0)
        body["conn"] = self.conn
        self.sent_nonce = body["nonce"]
        raw = json.dumps(body).encode()
        self.kicked = self.want_up = False
        self.sent_next_seq = self.outbox.next_seq
        self.sent_done = done
        self.awaiting = self.up_at = now
        self.hold_at = None
        self.ids += 1
        sig = envelope.sign(sign_key(self), raw)
        # the body as base64 bytes, sent as a piece of its own: never decoded, stripped,
        # formatted into the stanza and joined again, each a block as large (a backlog's
        # 20 KB up needed five; the XMPP soak's MemoryError, docs/performance.md)
        b64 = b2a_base64(raw, newline=False)
        raw = body = None
        s = self.session
        s.send('<message to="%s" id="u%d"><bc xmlns="%s" sig="%s">'
               % (escape(self.component, True), self.ids, NS, sig))
        s.send(b64)
        s.send("</bc></message>")


def presence_stanza(to, state, note):
    """The meter's presence directed to the component (docs/xmpp.md)."""
    status = "<status>%s</status>" % escape(note) if note else ""
    if state == "unavailable":
        return '<presence to="%s" type="unavailable">%s</presence>' % (escape(to, True), status)
    show = SHOW.get(state)
    show = "<show>%s</show>" % show if show else ""
    return '<presence to="%s">%s%s</presence>' % (escape(to, True), show, status)


def log(msg):
    import sys

    try:
        sys.stderr.write("xmpp: %s\n" % msg)
    except Exception:   # noqa: BLE001 - a log line must never end the link
        pass
