# The exchange over MQTT (docs/protocol.md, "MQTT transport"), on micropython-lib's
# umqtt.simple (`mpremote mip install umqtt.simple` on a board; tools/lab/mplib.py here).
# MqttComms is what the meter exchanges (this file); its collaborator MqttSession
# (firmware/mqtt_session.py) is one connection to the broker, on the wire layer of
# firmware/mqtt_wire.py.
#
# umqtt.simple encodes and decodes MQTT 3.1.1 packets on a blocking socket, and its publish()
# and subscribe() block until their PUBACK/SUBACK. Here it never touches the network: its
# `sock` is a Link, a pair of in-memory buffers. asyncio tasks move bytes between the link
# and the broker over non-blocking streams (a reader task; the session loop writes, with a
# timeout on every await), and umqtt is only asked to parse a packet once all of it has
# arrived, so the metering task never waits on the broker. What umqtt lacks, and where it is
# added:
#   - it blocks: reads are served only from the complete packet being parsed; a read past it
#     raises WouldBlock, which is how publish()/subscribe() are stopped before they wait for
#     their ack. PUBACK and SUBACK are matched here, each with a deadline.
#   - a lost ack waits forever: a QoS 1 publish or a subscribe not acked within timeout_s is
#     a dead link: close, back off (exponential, with jitter), reconnect.
#   - no keepalive: PINGREQ every keepalive/2, but at least every 25 s (NAT boxes and proxies
#     drop connections idle for 30 s; the HTTP long-poll holds 25 s for the same reason); no
#     PINGRESP within timeout_s is a dead link.
#     So a broker that stops answering is given up within keepalive/2 + timeout_s at most
#     (timeout_s = keepalive/4 within 2..10 s), sooner if a publish was waiting for its ack.
#   - acks and pings that still come while answers do not (SILENT_UPS ups in a row): the
#     broker may have lost our subscription, so the connection ends and the next one
#     subscribes afresh.
#   - a packet in pieces, and TLS: see firmware/mqtt_wire.py.
#   - `assert` for protocol checks: an AssertionError is a protocol error: reconnect.
#   - a 16-bit packet id that never wraps: wrapped here before it reaches 65536.
#
# Session: client id and user name are the device id, the password is
# hex(HMAC-SHA256(key, "mqtt-password")); while a key rotation is in flight (rekey.py) the
# broker holds the password of one of the meter's two keys (the head-end switches it to the
# new key's just before it drops the old key): a login refused for its password is tried
# with the other key's, at once and on the same node the first time (that node has just said
# which password it holds), after the back-off if that is refused too (docs/protocol.md "Key
# rotation"). clean_session=False
# with bc/<id>/down at QoS 1, so work published while the meter is offline waits in the
# broker. The Last Will sets the
# retained presence to unavailable; on connect the meter publishes its stated presence.
#
# Exchange: a signed request `<sig> <json>` on bc/<id>/up when the outbox has new items,
# after work ran, on kick(), and at least every poll_s (the head-end's `next`; default
# heartbeat_s) carrying `done`; one request at a time, until its answer on bc/<id>/down (or
# answer_s passes). Every signed message on down is applied like an HTTP response: ack,
# time, next, work through the Dispatcher (the inbox deduplicates redeliveries). A down is
# applied only when bound (v2): it answers our latest up (`re`), or is a push for this
# connection's random nonce (`conn`); time is taken only from an answer.

import asyncio
import json
import random

import enc_json
import envelope
import ha_discovery as hass
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
from mqtt_session import MqttSession
from mqtt_wire import EXPECTED_ERRORS, MAX_PACKET, LinkError, log, simple, traceback_text

WILL_STATE, WILL_NOTE = "unavailable", "connection lost"
SILENT_UPS = 3      # ups unanswered in a row that end a connection whose acks still come
OTHER_KEY_S = 0.2   # mid-rotation, a refused login's retry with the other key's password


class MqttComms:
    def __init__(self, device_id, key, host, port, outbox, inbox, dispatcher, clock,
                 ssl=None, keepalive=60, presence=None, reading=None, state_s=10,
                 ha_discovery=False, model=hass.MODEL, heartbeat_s=30,
                 backoff_base=1.0, backoff_cap=60.0, batch_items=32, batch_bytes=16384):
        self.device_id = device_id
        self.key = key
        self.outbox = outbox
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.presence = presence        # Presence (state, note), published retained
        self.reading = reading          # callable: the latest reading dict or None
        self.state_s = state_s
        self.ha = ha_discovery
        self.model = model
        self.heartbeat_s = heartbeat_s
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch = Batch(batch_items, batch_bytes)    # halved after a MemoryError
        self.wait_s = 0                 # interface parity with Comms (MQTT needs no long-poll)
        self.poll_s = 0                 # the head-end's `next`; 0: heartbeat_s
        self.failures = 0               # consecutive failed links or unanswered requests
        self.link_failures = 0          # consecutive failed links (reconnect back-off)
        self.exchanges = 0              # signed responses applied
        self.last_ok = None
        self.last_error = None
        self.after_exchange = None
        self.heartbeat = None           # callback(s), as comms.Comms
        self.updater = None  # firmware download (docs/ota.md)
        self.time_refusals = 0  # signed time refusals adopted since the last answer
        self.kicked = False
        self.rekey = None               # a key rotation in flight (rekey.py): both keys
        self.login_other = False        # log in with the rotation's other key (refused)
        self.refused_in_row = 0         # logins refused for the password since one was taken
        self.t_up = ("bc/%s/up" % device_id).encode()
        self.t_down = ("bc/%s/down" % device_id).encode()
        self.t_presence = hass.presence_topic(device_id).encode()
        self.t_state = hass.state_topic(device_id).encode()
        self.session = MqttSession(
            device_id.encode(), self.login_password(), host,
            port or (8883 if ssl is not None else 1883), ssl, keepalive,
            self.t_presence, b"", self.on_message, self.on_refused)
        self.answer_s = 2 * self.session.timeout_s  # the head-end's answer to an up
        self.new_connection()

    def login_password(self):
        """The broker password: of our key, or mid-rotation of the key the broker last took
        (the other one after a login refused for its password)."""
        keys = down_keys(self)
        if len(keys) == 1:
            self.login_other = False
        key = keys[-1] if self.login_other and len(keys) > 1 else keys[0]
        return envelope.sign(key, b"mqtt-password").encode()

    def login_refused(self, code):
        """The broker's CONNACK refusal (None: none): a bad password mid-rotation means the
        broker holds the other key's. True: try that at once, on the same node (the first
        refusal since a login was taken); a second in a row backs off as any failure does."""
        if code not in (4, 5):
            return False
        self.login_other = not self.login_other
        self.refused_in_row += 1
        return self.refused_in_row == 1 and len(down_keys(self)) > 1

    def new_connection(self):
        """Forget what was sent on the previous connection."""
        # a random nonce per connection, held in RAM only: no flash write per push
        self.conn = new_nonce()
        self.presence_n = 0             # statements signed on this connection (0: the Will)
        self.session.client.set_last_will(self.t_presence, self.presence_body(
            WILL_STATE, WILL_NOTE), True, 1)
        self.sent_nonce = None
        self.silent_ups = 0             # ups unanswered in a row on this connection
        self.awaiting = None            # ticks the up in flight was sent (until a down)
        self.up_at = ticks_ms()
        self.hold_at = None             # after an unanswered up: no up for hold_ms
        self.hold_ms = 0
        self.want_up = True
        self.sent_next_seq = None
        self.sent_done = []
        self.sent_presence = None
        self.sent_reading = None
        self.state_at = None
        self.discovery_due = self.ha

    # --- the interface app.py uses (same as comms.Comms) ---
    def kick(self):
        """Send a request now (or as soon as the one in flight is answered)."""
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
            other_now = False
            try:
                await self._connected()
            except Exception as exc:  # link down, broker refused, protocol error
                self.failures += 1
                if s.connected:         # this login was taken
                    self.refused_in_row = 0
                # a link that held for a ping interval was sound: back off from the start.
                # One that fails soon after CONNACK, every time, backs off further each time.
                if s.connected and ticks_diff(ticks_ms(), s.connected_at) >= s.ping_ms:
                    self.link_failures = 0
                self.link_failures += 1
                self.last_error = self.reason(exc)
                log("link down: %s" % self.last_error)
                other_now = self.login_refused(s.refused_code)
                if isinstance(exc, MemoryError):
                    self.batch.shrink()
                expected = isinstance(exc, EXPECTED_ERRORS)
                if not (expected or s.ssl is not None and tls_reason(exc)):
                    # a bug rather than the network: show where
                    traceback_text(exc)
            finally:
                s.close()
            if other_now:
                log("login refused mid-rotation: the other key's password, at once")
                delay = OTHER_KEY_S
            else:
                s.next_broker()     # a cluster (mqtt_host "a,b,c"): the next node
                delay = self.backoff_s(self.link_failures)
            self._alive(delay)
            await asyncio.sleep(delay)

    def _alive(self, wait_s):
        # connect, CONNACK and every write each wait up to timeout_s
        if self.heartbeat is not None:
            self.heartbeat(wait_s + 3 * self.session.timeout_s + ALIVE_MARGIN_S)

    def reason(self, exc):
        """One line for a session that ended with exc."""
        s = self.session
        if isinstance(exc, AssertionError):
            return "MQTT protocol error (umqtt assertion)"
        if isinstance(exc, simple.MQTTException):
            return "broker refused: %s" % (exc,)
        if isinstance(exc, asyncio.TimeoutError):
            return "broker timed out (connect or write)"
        tls = tls_reason(exc) if s.ssl is not None else None
        if tls:
            return "TLS with %s:%d failed: %s" % (s.host, s.port, tls)
        return "%s: %s" % (type(exc).__name__, exc)

    # --- one connection ---
    async def _connected(self):
        s = self.session
        self.new_connection()
        s.client.pswd = self.login_password()
        present = await s.open()
        log("connected to %s:%d (session %s)" % (s.host, s.port,
                                                  "resumed" if present else "new"))
        s.subscribe(self.t_down, 1, required=True)
        if self.ha:
            s.subscribe(hass.STATUS_TOPIC, 0)
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
        refused = self.session.check(now)
        if refused:
            self.last_error = refused
        self._answer_timer(now)
        self._outbound(now)

    def on_refused(self, size):
        self.last_error = ("refused a %d-byte message from the broker (at most %d)"
                           % (size, MAX_PACKET))
        log(self.last_error)
        self.outbox.offer("notice", {"what": "oversized message refused", "count": 1,
                                     "bytes": size, "limit": MAX_PACKET})

    # --- what arrives ---
    def on_message(self, topic, msg):
        """umqtt's callback; runs inside the session's process(), before the PUBACK."""
        if topic == self.t_down:
            self._down(msg)
        elif topic == hass.STATUS_TOPIC and msg == b"online":
            self.discovery_due = True

    def _down(self, msg):
        i = msg.find(b" ")
        sig, raw = msg[:i], msg[i + 1:]
        try:
            used = signed_by(sig.decode(), raw, down_keys(self)) if i == 64 else None
        except (UnicodeError, ValueError):
            used = None
        if used is None:
            self.last_error = "response signature does not match; ignored"
            return
        try:
            resp = json.loads(raw)
        except ValueError:
            resp = None
        if not isinstance(resp, dict):
            self.last_error = "response is not a JSON object; ignored"
            return
        self.silent_ups = 0     # the head-end's messages reach us
        if "error" in resp:     # the signed time refusal of our up (docs/protocol.md)
            if self.awaiting is not None and time_refusal(self, resp, self.sent_nonce):
                self.awaiting = None
                self.want_up = True
            return
        # bound (v2): the answer to our latest up, or a push on this very connection
        if not envelope.bound(resp, self.device_id, self.sent_nonce, self.conn):
            self.last_error = "down answers no request of this connection; ignored"
            return
        accept_down(self, resp, used)

    def _answer_timer(self, now):
        # Acks and pings still come, answers do not: the broker may have lost our
        # subscription (nats-server 2.9 lost a node's interest in it after a reload,
        # docs/scaling.md). A new connection subscribes afresh, on a cluster's next node.
        if answer_overdue(self, now):
            self.silent_ups += 1
            if self.silent_ups >= SILENT_UPS:
                raise LinkError("no answer to %d requests on this connection" % SILENT_UPS)

    # --- what to send ---
    def _outbound(self, now):
        publish = self.session.publish
        if self.discovery_due:
            self.discovery_due = False
            for topic, payload in hass.messages(self.device_id, self.model):
                publish(topic, payload, True, 1)
        p = self.presence
        stated = (p.state, p.note) if p is not None else ("available", "")
        if stated != self.sent_presence:
            self.sent_presence = stated
            self.presence_n += 1
            publish(self.t_presence, self.presence_body(stated[0], stated[1]), True, 1)
        if self.reading is not None and (self.state_at is None or
                                         ticks_diff(now, self.state_at) >= self.state_s * 1000):
            r = self.reading()
            if r is not None and r is not self.sent_reading:
                self.sent_reading = r
                self.state_at = now
                publish(self.t_state, json.dumps(r).encode(), True, 0)
        if self.awaiting is not None:
            return
        if self.hold_at is not None and ticks_diff(now, self.hold_at) < self.hold_ms:
            return
        every = (self.poll_s if self.poll_s > 0 else self.heartbeat_s) * 1000
        if (self.kicked or self.want_up or self.outbox.next_seq != self.sent_next_seq
                or ticks_diff(now, self.up_at) >= every):
            self.send_up(now)

    def presence_body(self, state, note):
        """Signed presence, bound to this connection and numbered within it: the bridge
        takes only the Will and statements of the meter's current connection, each once.
        Still JSON with `state` on top, as Home Assistant's availability template reads it."""
        sig = envelope.sign(sign_key(self), envelope.presence_message(
            self.device_id, self.conn, self.presence_n, state, note))
        return json.dumps({"state": state, "note": note, "device": self.device_id,
                           "conn": self.conn, "n": self.presence_n, "sig": sig}).encode()

    def send_up(self, now):
        """Publish the signed exchange request (docs/protocol.md) on up. The outbox's records
        are spliced in as stored (enc_json.parts), never parsed and dumped again: the
        payload is made once, in one block, from pieces (docs/performance.md)."""
        _, done, body = request_body(self, 0, raw=True)
        body["conn"] = self.conn    # pushes on this connection are bound to it
        self.sent_nonce = body["nonce"]
        pieces = enc_json.parts(body)
        sig = envelope.sign(sign_key(self), pieces)
        pieces.insert(0, sig.encode() + b" ")
        payload = b"".join(pieces)
        del pieces
        self.kicked = self.want_up = False
        self.sent_next_seq = self.outbox.next_seq
        self.sent_done = done
        self.awaiting = self.up_at = now
        self.hold_at = None
        self.session.publish(self.t_up, payload, False, 1)
