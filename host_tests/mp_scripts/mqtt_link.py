# Drives firmware/mqtt_comms.py and its MqttSession without a network (argv: state dir):
# umqtt.simple encodes into and parses from the in-memory link, as on a real connection.
# Prints one JSON object of findings; host_tests/test_mqtt_link.py checks them on
# MicroPython and CPython.

import json
import sys

import envelope
import mqtt_comms as M
from clock import Clock
from inbox import Inbox
from mpshim import ticks_ms
from mqtt_wire import MAX_PACKET, Link
from ops import Dispatcher
from outbox import Outbox

KEY = b"k" * 16


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def publish_packet(topic, payload, qos=1, pid=7):
    body = bytes([len(topic) >> 8, len(topic) & 0xFF]) + topic
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    body += payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


def packets(buf):
    """Split a byte string into whole MQTT packets; (types, leftover bytes)."""
    kinds = []
    i = 0
    while i < len(buf):
        n = shift = 0
        j = i + 1
        while True:
            b = buf[j]
            j += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if j + n > len(buf):
            break
        kinds.append(buf[i] & 0xF0)
        i = j + n
    return kinds, len(buf) - i


def raises(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)
    return None


def main(state):
    out = {}
    outbox = Outbox(state + "/outbox")
    inbox = Inbox(state + "/inbox")
    clock = Clock()
    c = M.MqttComms("meter-x", KEY, "127.0.0.1", 0, outbox, inbox,
                    Dispatcher(None, KEY, outbox, inbox, device_id="meter-x"), clock,
                    keepalive=20)
    s = c.session
    link = s.link

    # CONNECT: several writes by umqtt, one packet in the link, no read of the CONNACK yet
    s.connect_packet()
    out["connect_writes"] = link.writes
    tx = link.take()
    out["connect"] = packets(tx)
    out["will_in_connect"] = c.presence_body(M.WILL_STATE, M.WILL_NOTE) in tx
    out["password_in_connect"] = envelope.sign(KEY, b"mqtt-password").encode() in tx

    # QoS 1 publish: umqtt's pieces collected into one packet; its wait for the PUBACK stopped
    w = link.writes
    s.publish(b"bc/meter-x/up", b"x" * 300, False, 1)
    out["publish_writes"] = link.writes - w
    out["publish"] = packets(link.take())
    pid = s.client.pid
    out["inflight"] = list(s.inflight)

    # the PUBACK, split across two reads, clears it
    link.feed(bytes([0x40, 2, pid >> 8]))
    s.process()
    out["inflight_half_puback"] = len(s.inflight)
    link.feed(bytes([pid & 0xFF]))
    s.process()
    out["inflight_after_puback"] = len(s.inflight)

    # the packet id wraps before 65536 (umqtt would pack an overflow)
    s.client.pid = 0xFFFF
    s.publish(b"bc/meter-x/up", b"y", False, 1)
    out["wrapped_pid"] = s.client.pid
    link.take()
    s.inflight = {}

    # a signed down arriving in two halves: applied once complete, then PUBACKed
    outbox.append("reading", {"v": 1})
    raw = json.dumps({"v": 2, "dir": "down", "device": "meter-x", "conn": c.conn,
                      "epoch": outbox.epoch, "ack": 1, "next": 42,
                      "time": clock.now()}).encode()        # a push on this connection
    pkt = publish_packet(c.t_down, envelope.sign(KEY, raw).encode() + b" " + raw, 1, 9)
    link.feed(pkt[:20])
    s.process()
    out["half_down"] = [c.exchanges, len(link.tx)]
    link.feed(pkt[20:])
    s.process()
    out["down"] = [c.exchanges, outbox.acked, c.poll_s, list(link.take())]

    # a down with a bad signature is ignored (and still PUBACKed)
    pkt = publish_packet(c.t_down, b"0" * 64 + b" " + raw, 1, 10)
    link.feed(pkt)
    s.process()
    out["bad_sig"] = [c.exchanges, c.last_error, list(link.take())]

    # acks come, answers do not: SILENT_UPS unanswered ups in a row end the connection;
    # any signed down from the head-end starts the count again
    out["silent"] = silent(c, raw)
    s.link = s.client.sock = link = Link()

    # PINGREQ at keepalive/2; a PINGRESP clears it; none within timeout_s is a dead link
    now = ticks_ms()
    s.ping_at = now - 10001
    s.timers(now)
    out["ping"] = [list(link.take()), s.ping_pending]
    link.feed(b"\xd0\x00")
    s.process()
    out["pingresp"] = s.ping_pending
    s.ping_at = now - 10001
    s.timers(now)
    link.take()
    out["no_pingresp"] = raises(s.timers, now + int(s.timeout_s * 1000) + 1)
    s.ping_pending = False
    s.ping_at = now

    # a QoS 1 publish whose PUBACK never comes
    s.publish(b"bc/meter-x/state", b"z", False, 1)
    link.take()
    out["no_puback"] = raises(s.timers, ticks_ms() + int(s.timeout_s * 1000) + 50)
    s.inflight = {}

    # a refused subscription to down; a QoS 2 publish (umqtt asserts); an oversized packet
    s.subscribe(c.t_down, 1, required=True)
    link.take()
    sp = s.client.pid
    link.feed(bytes([0x90, 3, sp >> 8, sp & 0xFF, 0x80]))
    out["suback_refused"] = raises(s.process)
    for name, data in (("qos2", publish_packet(c.t_down, b"x", 2)),
                       ("oversized", b"\xb0" + varint(MAX_PACKET + 1)),
                       ("unexpected", b"\xb0\x02\x00\x01")):
        s.link = s.client.sock = link = Link()
        link.feed(data)
        err = raises(s.process)
        out[name] = err
    try:
        s.link = s.client.sock = Link()
        s.link.feed(publish_packet(c.t_down, b"x", 2))
        s.process()
    except Exception as exc:
        out["qos2_reason"] = c.reason(exc)
    out["refused"] = oversized(c)
    print(json.dumps(out))


def silent(c, raw):
    """[silent_ups after SILENT_UPS - 1 overdue ups, after a signed down, the error the
    SILENT_UPS-th overdue up in a row raises]."""
    s = c.session
    s.link = s.client.sock = Link()
    found = []

    def overdue():
        c.awaiting = ticks_ms() - int(c.answer_s * 1000) - 10
        c.hold_at = None
        c.step(ticks_ms())
        s.link.take()
    for _ in range(M.SILENT_UPS - 1):
        overdue()
    found.append(c.silent_ups)
    s.link.feed(publish_packet(c.t_down, envelope.sign(KEY, raw).encode() + b" " + raw, 1, 11))
    c.step(ticks_ms())
    s.link.take()
    found.append(c.silent_ups)
    for _ in range(M.SILENT_UPS - 1):
        overdue()
    found.append(raises(overdue))
    s.inflight = {}     # what step() published is never acked here
    return found


def oversized(c):
    """A PUBLISH over MAX_PACKET on down, arriving in 1 KB reads, then a small one: the big
    one is dropped as it arrives (rx stays small), PUBACKed, noticed; the next is taken."""
    s = c.session
    s.link = s.client.sock = link = Link()
    got = []
    s.client.set_callback(lambda topic, msg: got.append(len(msg)))
    big = publish_packet(c.t_down, b"x" * (MAX_PACKET + 100), 1, pid=321)
    data = big + publish_packet(c.t_down, b"small", 1, pid=322)
    depth = c.outbox.depth()
    largest = 0
    for k in range(0, len(data), 1024):
        link.feed(data[k:k + 1024])
        largest = max(largest, len(link.rx))
        s.process()
    tx = bytes(link.take())
    notices = c.outbox.peek(100, 1 << 20)[depth:]
    return {"largest_rx": largest, "got": got, "pubacks": [list(tx[i:i + 4])
                                                          for i in range(0, len(tx), 4)],
            "notice": notices[-1]["body"] if notices else None, "error": c.last_error}


if __name__ == "__main__":
    main(sys.argv[1])
