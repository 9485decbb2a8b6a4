# The exchange over MQTT (docs/protocol.md, "MQTT transport"), on micropython-lib's
# umqtt.simple (`mpremote mip install umqtt.simple` on a board; tools/lab/mplib.py here).
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
#   - a packet in pieces, and TLS: see firmware/mqtt_wire.py.
#   - `assert` for protocol checks: an AssertionError is a protocol error: reconnect.
#   - a 16-bit packet id that never wraps: wrapped here before it reaches 65536.
#
# Session: client id and user name are the device id, the password is
# hex(HMAC-SHA256(key, "mqtt-password")); clean_session=False with bc/<id>/down at QoS 1, so
# work published while the meter is offline waits in the broker. The Last Will sets the
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
import random

import envelope
import ha_discovery as hass
from clock import ticks_diff, ticks_ms
from comms import ALIVE_MARGIN_S
from httpc import tls_reason
from mqtt_exchange import MqttExchange
from mqtt_wire import (
    EXPECTED_ERRORS,
    MAX_PACKET,
    Link,
    LinkError,
    Net,
    WouldBlock,
    log,
    open_connection,
    refused_by,
    simple,
    traceback_text,
)

__all__ = ("MqttComms", "LinkError", "MAX_PACKET", "WILL", "CONNACK_REFUSED")

PING_MAX_MS = 25000     # below the 30 s idle limit of common NAT boxes and proxies
WILL = b'{"state":"unavailable","note":"connection lost"}'
CONNACK_REFUSED = {1: "protocol version refused", 2: "client id refused",
                   3: "broker unavailable", 4: "bad user name or password",
                   5: "not authorised"}


class MqttComms(MqttExchange):
    def __init__(self, device_id, key, host, port, outbox, inbox, dispatcher, clock,
                 ssl=None, keepalive=60, presence=None, reading=None, state_s=10,
                 ha_discovery=False, model=hass.MODEL, heartbeat_s=30,
                 backoff_base=1.0, backoff_cap=60.0, batch_items=32, batch_bytes=16384):
        self.device_id = device_id
        self.key = key
        self.host = host
        self.port = port or (8883 if ssl is not None else 1883)
        self.ssl = ssl
        self.outbox = outbox
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.presence = presence        # Presence (state, note), published retained
        self.reading = reading          # callable: the latest reading dict or None
        self.state_s = state_s
        self.ha = ha_discovery
        self.model = model
        self.keepalive = keepalive
        self.timeout_s = min(10.0, max(2.0, keepalive / 4))  # acks, CONNACK, PINGRESP, writes
        self.ping_ms = min(keepalive * 500, PING_MAX_MS)
        self.answer_s = 2 * self.timeout_s  # the head-end's answer to an up
        self.heartbeat_s = heartbeat_s
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
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
        self.connected = False
        self.connected_at = 0
        self.flushes = 0                # stream writes (one per batch of packets)
        self.wake = asyncio.Event()
        self.kicked = False
        self.t_up = ("bc/%s/up" % device_id).encode()
        self.t_down = ("bc/%s/down" % device_id).encode()
        self.t_presence = hass.presence_topic(device_id).encode()
        self.t_state = hass.state_topic(device_id).encode()
        user = device_id.encode()
        password = envelope.sign(key, b"mqtt-password").encode()
        self.client = simple.MQTTClient(user, host, self.port, user, password, keepalive)
        self.client.set_callback(self._on_message)
        self.client.set_last_will(self.t_presence, WILL, True, 1)
        self.link = Link()
        self.writer = None
        self.rx_task = None
        self.rx_error = None
        self._reset_session()

    def _reset_session(self):
        self.inflight = {}              # pid: (ticks sent, what) awaiting PUBACK/SUBACK
        self.ping_at = ticks_ms()
        self.ping_pending = False
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
        self._new_connection()

    # --- the interface app.py uses (same as comms.Comms) ---
    def kick(self):
        """Send a request now (or as soon as the one in flight is answered)."""
        self.kicked = True
        self.wake.set()

    def backoff_s(self, failures=None):
        n = self.failures if failures is None else failures
        delay = min(self.backoff_cap, self.backoff_base * (1 << min(n, 16)))
        return delay * (0.5 + random.random() / 2)

    async def run(self):
        while True:
            self._alive(0)
            try:
                await self._session()
            except Exception as exc:  # link down, broker refused, protocol error
                self.failures += 1
                # a link that held for a ping interval was sound: back off from the start.
                # One that fails soon after CONNACK, every time, backs off further each time.
                if self.connected and ticks_diff(ticks_ms(), self.connected_at) >= self.ping_ms:
                    self.link_failures = 0
                self.link_failures += 1
                self.last_error = self._reason(exc)
                log("link down: %s" % self.last_error)
                expected = isinstance(exc, EXPECTED_ERRORS)
                if not (expected or self.ssl is not None and tls_reason(exc)):
                    # a bug rather than the network: show where
                    traceback_text(exc)
            finally:
                self._close()
            delay = self.backoff_s(self.link_failures)
            self._alive(delay)
            await asyncio.sleep(delay)

    def _alive(self, wait_s):
        # connect, CONNACK and every write each wait up to timeout_s
        if self.heartbeat is not None:
            self.heartbeat(wait_s + 3 * self.timeout_s + ALIVE_MARGIN_S)

    def _reason(self, exc):
        if isinstance(exc, AssertionError):
            return "MQTT protocol error (umqtt assertion)"
        if isinstance(exc, simple.MQTTException):
            return "broker refused: %s" % (exc,)
        if isinstance(exc, asyncio.TimeoutError):
            return "broker timed out (connect or write)"
        tls = tls_reason(exc) if self.ssl is not None else None
        if tls:
            return "TLS with %s:%d failed: %s" % (self.host, self.port, tls)
        return "%s: %s" % (type(exc).__name__, exc)

    # --- one connection ---
    async def _session(self):
        self.link = Link()
        self._reset_session()
        self.rx_error = None
        connecting = open_connection(self.host, self.port, self.ssl)
        reader, self.writer = await asyncio.wait_for(connecting, self.timeout_s)
        self.rx_task = asyncio.create_task(self._read_loop(reader))
        self._connect_packet()
        await self._flush()
        present = await self._connack()
        self.connected = True
        self.connected_at = ticks_ms()
        log("connected to %s:%d (session %s)" % (self.host, self.port,
                                                  "resumed" if present else "new"))
        self._subscribe(self.t_down, 1)
        if self.ha:
            self._subscribe(hass.STATUS_TOPIC, 0)
        while True:
            self._alive(0)
            self.wake.clear()
            if self.rx_error is not None:
                raise self.rx_error
            self._process()
            now = ticks_ms()
            self._timers(now)
            self._outbound(now)
            if self.link.tx:
                await self._flush()
            try:
                await asyncio.wait_for(self.wake.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def _read_loop(self, reader):
        try:
            while True:
                data = await reader.read(1024)
                if not data:
                    raise LinkError("the broker closed the connection")
                self.link.feed(data)
                self.wake.set()
        except Exception as exc:
            self.rx_error = exc
            self.wake.set()

    async def _flush(self):
        self.flushes += 1
        self.writer.write(self.link.take())
        await asyncio.wait_for(self.writer.drain(), self.timeout_s)

    def _close(self):
        self.connected = False
        if self.rx_task is not None:
            self.rx_task.cancel()
            self.rx_task = None
        w, self.writer = self.writer, None
        if w is not None:
            try:
                w.close()
                s = getattr(w, "s", None)  # MicroPython's Stream.close() leaves the socket
                if s is not None:
                    s.close()
            except OSError:
                pass

    def _connect_packet(self):
        net = simple.socket
        simple.socket = Net(self.link)
        try:
            self.client.connect(False)  # clean_session=False
        except WouldBlock:  # CONNECT is in the link; _connack reads the answer
            pass
        finally:
            simple.socket = net

    async def _connack(self):
        start = ticks_ms()
        link = self.link
        while True:
            self.wake.clear()
            if self.rx_error is not None:
                raise self.rx_error
            if link.packet_size():
                break
            left = self.timeout_s - ticks_diff(ticks_ms(), start) / 1000
            if left <= 0:
                raise LinkError("no CONNACK within %g s" % self.timeout_s)
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:
                pass
        rx, p = link.rx, link.pos
        if rx[p] != 0x20 or link.packet_size() != 4:
            raise LinkError("MQTT protocol error: expected CONNACK")
        if rx[p + 3]:
            raise LinkError("broker refused the connection: %s"
                            % CONNACK_REFUSED.get(rx[p + 3], rx[p + 3]))
        link.pos += 4
        link.compact()
        return rx[p + 2] & 1

    # --- packets out (umqtt encodes; the link collects; _flush sends) ---
    def _next_pid(self):
        if self.client.pid >= 0xFFFF:  # umqtt never wraps its 16-bit packet id
            self.client.pid = 0

    def _publish(self, topic, msg, retain=False, qos=0):
        self._next_pid()
        try:
            self.client.publish(topic, msg, retain, qos)
        except WouldBlock:  # QoS 1: umqtt waits for the PUBACK; _process matches it
            self.inflight[self.client.pid] = (ticks_ms(), topic)

    def _subscribe(self, topic, qos):
        self._next_pid()
        try:
            self.client.subscribe(topic, qos)
        except WouldBlock:
            self.inflight[self.client.pid] = (ticks_ms(), b"subscribe " + topic)

    # --- packets in ---
    def _process(self):
        link = self.link
        while True:
            size = link.packet_size()
            if not size:
                break
            start = link.pos
            kind = link.rx[start] & 0xF0
            link.end = start + size
            if kind == 0x30 or kind == 0xD0:  # PUBLISH (umqtt PUBACKs QoS 1), PINGRESP
                self.client.check_msg()
                if link.pos != link.end:
                    raise LinkError("MQTT protocol error: bad packet 0x%02x" % kind)
                if kind == 0xD0:
                    self.ping_pending = False
            elif kind == 0x40 or kind == 0x90:  # PUBACK, SUBACK
                if size < 4:
                    raise LinkError("MQTT protocol error: short ack")
                pid = link.rx[start + 2] << 8 | link.rx[start + 3]
                what = self.inflight.pop(pid, (0, b"?"))[1]
                if kind == 0x90 and refused_by(link.rx, start + 4, link.end):
                    if what.endswith(self.t_down):
                        raise LinkError("broker refused the subscription to %s"
                                        % self.t_down.decode())
                    self.last_error = "broker refused %s" % what.decode()
            else:
                raise LinkError("MQTT protocol error: unexpected packet 0x%02x" % kind)
            link.pos = link.end
        link.compact()
        if link.refused:
            self._refused()

    def _refused(self):
        """Acknowledge each PUBLISH the link refused as too large (so the broker drops it
        instead of sending it again), and say so: last_error and a notice for the head-end."""
        link = self.link
        for qos, pid, size in link.refused:
            if qos == 1:
                link.write(bytes((0x40, 2, pid >> 8, pid & 0xFF)))  # PUBACK
            self.last_error = ("refused a %d-byte message from the broker (at most %d)"
                               % (size, MAX_PACKET))
            log(self.last_error)
            self.outbox.offer("notice", {"what": "oversized message refused", "count": 1,
                                         "bytes": size, "limit": MAX_PACKET})
        link.refused = []

    # --- timers ---
    def _timers(self, now):
        timeout_ms = int(self.timeout_s * 1000)
        if self.ping_pending and ticks_diff(now, self.ping_at) > timeout_ms:
            raise LinkError("no PINGRESP within %g s" % self.timeout_s)
        if not self.ping_pending and ticks_diff(now, self.ping_at) >= self.ping_ms:
            self.client.ping()
            self.ping_at = now
            self.ping_pending = True
        for pid in self.inflight:
            sent, what = self.inflight[pid]
            if ticks_diff(now, sent) > timeout_ms:
                raise LinkError("no ack for %s within %g s" % (what.decode(), self.timeout_s))
        if self.awaiting is not None and ticks_diff(now, self.awaiting) > self.answer_s * 1000:
            self.awaiting = None
            self.failures += 1
            self.last_error = "no answer from the head-end within %g s" % self.answer_s
            self.hold_at = now
            self.hold_ms = int(self.backoff_s() * 1000)

