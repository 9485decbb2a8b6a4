# One MQTT connection to the broker, for firmware/mqtt_comms.py: umqtt.simple encodes and
# parses the packets in an in-memory Link (firmware/mqtt_wire.py); asyncio moves the bytes.
# It knows MQTT (CONNECT/CONNACK, PUBACK/SUBACK matching, keepalive), not what the meter
# exchanges: that is MqttComms, which hands it the messages to publish and takes each
# PUBLISH that arrives (on_message, called by umqtt before it sends the PUBACK).
#
# Every failure is an exception (LinkError, OSError, a timeout, umqtt's assertion): the
# connection is then unusable, and MqttComms closes it, backs off and opens a new session.

import asyncio

import netconn
from mpshim import ticks_diff, ticks_ms
from mqtt_wire import Link, LinkError, Net, WouldBlock, refused_by, simple

PING_MAX_MS = 25000     # below the 30 s idle limit of common NAT boxes and proxies


def brokers(host, port):
    """[(host, port)] from mqtt_host: one broker, or a cluster's nodes separated by ','
    (tried in turn: the next after each failed link), each `host` or `host:port` (one ':'
    only: an IPv6 literal keeps its colons and takes `port`)."""
    out = []
    for part in host.split(","):
        part = part.strip()
        if part.count(":") == 1:
            name, num = part.split(":")
            out.append((name, int(num)))
        elif part:
            out.append((part, port))
    return out


CONNACK_REFUSED = {1: "protocol version refused", 2: "client id refused",
                   3: "broker unavailable", 4: "bad user name or password",
                   5: "not authorised"}


class MqttSession:
    def __init__(self, client_id, password, host, port, ssl, keepalive, will_topic, will,
                 on_message, on_refused):
        """on_message(topic, msg): each PUBLISH received; on_refused(size): a PUBLISH larger
        than MAX_PACKET was refused (and acknowledged, so the broker drops it)."""
        self.brokers = brokers(host, port)
        self.broker_i = 0
        self.host, self.port = self.brokers[0]
        self.ssl = ssl
        self.keepalive = keepalive
        self.timeout_s = min(10.0, max(2.0, keepalive / 4))  # acks, CONNACK, PINGRESP, writes
        self.ping_ms = min(keepalive * 500, PING_MAX_MS)
        self.on_refused = on_refused
        self.client = simple.MQTTClient(client_id, host, port, client_id, password, keepalive)
        self.client.set_callback(on_message)
        self.client.set_last_will(will_topic, will, True, 1)
        self.required = []              # topics whose refused subscription ends the session
        self.connected = False
        self.connected_at = 0
        self.flushes = 0                # stream writes (one per batch of packets)
        self.wake = asyncio.Event()     # bytes arrived, or the reader failed
        self.writer = None
        self.rx_task = None
        self.reset()

    def next_broker(self):
        """The next node of a cluster (mqtt_host "a,b,c"), for the next open()."""
        self.broker_i = (self.broker_i + 1) % len(self.brokers)
        self.host, self.port = self.brokers[self.broker_i]

    def reset(self):
        self.link = Link()
        self.refused_code = None        # the CONNACK's refusal (4: bad user name or password)
        self.rx_error = None
        self.inflight = {}              # pid: (ticks sent, what) awaiting PUBACK/SUBACK
        self.ping_at = ticks_ms()
        self.ping_pending = False

    async def open(self):
        """Connect and wait for the CONNACK; True if the broker kept our session."""
        self.reset()
        connecting = netconn.open_connection(self.host, self.port, self.ssl)
        reader, self.writer = await asyncio.wait_for(connecting, self.timeout_s)
        self.rx_task = asyncio.create_task(self._read_loop(reader))
        self.connect_packet()
        await self.flush()
        present = await self._connack()
        self.connected = True
        self.connected_at = ticks_ms()
        return present

    def check(self, now):
        """Raise what the reader found; take every complete packet; run the timers."""
        if self.rx_error is not None:
            raise self.rx_error
        self.process()
        self.timers(now)

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

    async def flush(self):
        self.flushes += 1
        self.writer.write(self.link.take())
        await asyncio.wait_for(self.writer.drain(), self.timeout_s)

    def close(self):
        self.connected = False
        if self.rx_task is not None:
            self.rx_task.cancel()
            self.rx_task = None
        w, self.writer = self.writer, None
        netconn.close(w)

    def connect_packet(self):
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
            if link.packet_size():      # before a close that follows it (a refusal)
                break
            if self.rx_error is not None:
                raise self.rx_error
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
        self.refused_code = rx[p + 3]
        if rx[p + 3]:
            raise LinkError("broker refused the connection: %s"
                            % CONNACK_REFUSED.get(rx[p + 3], rx[p + 3]))
        link.pos += 4
        link.compact()
        return rx[p + 2] & 1

    # --- packets out (umqtt encodes; the link collects; flush sends) ---
    def _next_pid(self):
        if self.client.pid >= 0xFFFF:  # umqtt never wraps its 16-bit packet id
            self.client.pid = 0

    def publish(self, topic, msg, retain=False, qos=0):
        self._next_pid()
        try:
            self.client.publish(topic, msg, retain, qos)
        except WouldBlock:  # QoS 1: umqtt waits for the PUBACK; process() matches it
            self.inflight[self.client.pid] = (ticks_ms(), topic)

    def subscribe(self, topic, qos, required=False):
        """required: a refusal ends the session (else it is only reported)."""
        self._next_pid()
        try:
            self.client.subscribe(topic, qos)
        except WouldBlock:
            self.inflight[self.client.pid] = (ticks_ms(), b"subscribe " + topic)
        if required and topic not in self.required:
            self.required.append(topic)

    def pending(self):
        return len(self.link.tx) > 0

    # --- packets in ---
    def process(self):
        """Take every complete packet in the link. Returns what the broker refused to
        subscribe us to (an optional subscription), or None."""
        link = self.link
        refused = None
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
                    if what[10:] in self.required:
                        raise LinkError("broker refused the subscription to %s"
                                        % what[10:].decode())
                    refused = "broker refused %s" % what.decode()
            else:
                raise LinkError("MQTT protocol error: unexpected packet 0x%02x" % kind)
            link.pos = link.end
        link.compact()
        if link.refused:
            self._refused()
        return refused

    def _refused(self):
        """Acknowledge each PUBLISH the link refused as too large, so the broker drops it
        instead of sending it again, and report it."""
        link = self.link
        for qos, pid, size in link.refused:
            if qos == 1:
                link.write(bytes((0x40, 2, pid >> 8, pid & 0xFF)))  # PUBACK
            self.on_refused(size)
        link.refused = []

    # --- timers ---
    def timers(self, now):
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
