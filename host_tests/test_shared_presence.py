"""Signed presence when several bridges share a meter's messages (issue 19, item 3; a NATS
queue group): the statement a meter makes on connecting may reach one head-end process while
the first up of that connection, which the gate waits for, is handled by another. The
waiting bridge looks at the device's connection in the database again (every 0.5 s, for
10 s) and takes the statement once the other process has recorded that up; a bridge alone
on its broker (mosquitto) keeps waiting for an up of its own. In process, with a link that
is not a network (the queue group itself: test_nats_bridges.py)."""

import asyncio
import threading

import pytest
from headend_harness import Headend

from headend import devices, mqtt_bridge, mqtt_presence

pytestmark = pytest.mark.unit


class Link:
    def __init__(self, shared):
        self.shared = shared
        self.connected = True
        self.ready = threading.Event()
        self.where = "in process"

    async def start(self, bridge):
        self.ready.set()

    async def stop(self):
        pass

    def publish(self, topic, payload):
        pass

    def ack(self, token):
        pass


def _statements(hub, device):
    return [(r["state"], r["source"]) for r in hub.db.all(
        "SELECT state, source FROM presence WHERE device = ? AND source = 'meter' ORDER BY id",
        device)]


async def _offer_then_up_elsewhere(h, key, shared):
    bridge = mqtt_bridge.MqttBridge(h.hub, h.settings, link=Link(shared))
    await bridge.start()
    try:
        with h.hub.tx() as db:
            db.run("UPDATE devices SET conn = 'old-conn' WHERE id = 'm1'")
        said = mqtt_presence.sign_presence(key, "m1", "new-conn", 1, "available_off", "fuse")
        bridge.received("bc/m1/presence", said, True, None)
        await asyncio.sleep(0.3)
        before = _statements(h.hub, "m1")
        # another process handles the connection's first up: devices.conn is the new one
        with h.hub.tx() as db:
            db.run("UPDATE devices SET conn = 'new-conn' WHERE id = 'm1'")
        for _ in range(40):
            if _statements(h.hub, "m1"):
                break
            await asyncio.sleep(0.05)
        return before, _statements(h.hub, "m1"), dict(bridge.counts)
    finally:
        await bridge.stop()


@pytest.mark.parametrize("shared", [True, False])
def test_a_statement_waiting_for_an_up_handled_elsewhere(tmp_path, shared):
    h = Headend(tmp_path)
    key = devices.create(h.hub.db, "m1")
    before, after, counts = asyncio.run(_offer_then_up_elsewhere(h, key, shared))
    assert before == []                          # its connection had not begun: it waits
    if shared:
        assert after == [("available_off", "meter")]
    else:
        assert after == []                       # one bridge: its own up releases it
    assert counts.get("presence") == 1 and not counts.get("presence_dropped")
