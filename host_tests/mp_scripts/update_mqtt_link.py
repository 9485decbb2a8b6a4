# The MQTT transport carries a firmware download like HTTP does (docs/ota.md): the up
# request holds the updater's `fetch` (and wait 0) only while one runs, and a down's `chunk`
# goes to the updater. No network: umqtt over the in-memory link. Prints JSON findings for
# host_tests/test_update_meter.py (argv: state dir).

import json
import sys

import envelope
import mqtt_comms as M
from clock import Clock
from inbox import Inbox
from mqtt_link import publish_packet
from ops import Dispatcher
from outbox import Outbox

KEY = b"k" * 16


class StubUpdater:
    def __init__(self):
        self.next = None
        self.chunks = []

    def fetch(self, most=None):
        return self.next

    def chunk(self, c):
        self.chunks.append(c)
        return True


def up_body(link):
    data = bytes(link.take())
    i = data.find(b"{")  # the signed JSON after the topic and the signature
    return json.loads(data[i:])


def main(state):
    outbox = Outbox(state + "/outbox")
    inbox = Inbox(state + "/inbox")
    clock = Clock()
    c = M.MqttComms("meter-x", KEY, "127.0.0.1", 0, outbox, inbox,
                    Dispatcher(None, KEY, outbox, inbox, device_id="meter-x"), clock,
                    keepalive=20)
    c.updater = StubUpdater()
    c.session.connect_packet()
    c.session.link.take()
    out = {}
    c.send_up(0)
    out["idle"] = up_body(c.session.link)
    c.awaiting = None
    c.updater.next = {"version": "1.0.0", "path": "a.py", "offset": 0, "len": 4096}
    c.send_up(0)
    out["downloading"] = up_body(c.session.link)
    chunk = {"version": "1.0.0", "path": "a.py", "offset": 0, "size": 3, "data": "QUJD"}
    raw = json.dumps({"v": 2, "dir": "down", "device": "meter-x", "conn": c.conn,
                      "ack": 0, "chunk": chunk}).encode()
    c.want_up = False
    signed = envelope.sign(KEY, raw).encode() + b" " + raw
    c.session.link.feed(publish_packet(c.t_down, signed, 1, 9))
    c.session.process()
    out["chunks"] = c.updater.chunks
    out["want_up"] = c.want_up
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
