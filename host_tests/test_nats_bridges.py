"""Two head-end bridges on one NATS cluster share a meter's ups without double handling
(issue 19, item 3; headend/nats_link.py): each NatsLink joins the queue group on bc.*.up, a
meter's login publishes 60 ups at QoS 1 over MQTT, and every up reaches exactly one of the
two, both taking some; an answer published by a link reaches the meter's MQTT subscription.
Real nats-server nodes (lab/nats_site.py); the bridges' handling itself is the head-end's
(test_nats_cluster.py runs it whole)."""

import asyncio
import os
import threading

import paho.mqtt.client as mqtt
import pytest

from headend import broker, devices, nats_link
from headend import settings as settings_mod
from headend.db import Database
from lab import nats_site

pytestmark = pytest.mark.system
UPS = 60


class Taker:
    """What the bridge is to its link: received() and link_ready()."""

    def __init__(self):
        self.got = []

    def received(self, topic, payload, retain, token):
        self.got.append((topic, payload))

    def link_ready(self):
        pass


def _meter(port, password, downs):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="meter-a", clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set("meter-a", password)
    ready = threading.Event()
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("bc/meter-a/down", 1)
    c.on_subscribe = lambda cl, ud, mid, rcs, pr: ready.set()
    c.on_message = lambda cl, ud, msg: downs.append(msg.payload)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    assert ready.wait(30), "the meter's subscription"
    return c


async def _share(site, password):
    settings = settings_mod.Settings(nats_dir=str(site.dir))
    links = [nats_link.NatsLink(settings) for _ in range(2)]
    takers = [Taker() for _ in links]
    for link, taker in zip(links, takers):
        await link.start(taker)
    downs = []
    meter = None
    try:
        for link in links:
            await asyncio.to_thread(link.ready.wait, 30)
            assert link.connected
        meter = await asyncio.to_thread(_meter, site.mqtt_port("node2"), password, downs)
        for n in range(UPS):
            info = meter.publish("bc/meter-a/up", b"up %d" % n, qos=1)
            await asyncio.to_thread(info.wait_for_publish, 10)
        for _ in range(200):
            if sum(len(t.got) for t in takers) >= UPS:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)          # a second delivery would arrive by now
        links[1].publish("bc/meter-a/down", b"answer")
        for _ in range(200):
            if downs:
                break
            await asyncio.sleep(0.05)
    finally:
        if meter is not None:
            meter.disconnect()
            meter.loop_stop()
        for link in links:
            await link.stop()
    return takers, downs


def test_two_bridges_share_the_ups_and_none_is_handled_twice(tmp_path):
    reason = nats_site.missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + reason, pytrace=False)
        pytest.skip(reason)
    db = Database(str(tmp_path / "hub.db"))
    key = devices.create(db, "meter-a")
    site = nats_site.NatsSite(tmp_path, tmp_path / "hub.db")
    try:
        site.start()
        takers, downs = asyncio.run(_share(site, broker.meter_password(key)))
    finally:
        site.stop()
    got = [p for t in takers for topic, p in t.got]
    assert all(topic == "bc/meter-a/up" for t in takers for topic, _ in t.got)
    assert sorted(got) == sorted(b"up %d" % n for n in range(UPS)), "lost or twice"
    assert all(t.got for t in takers), [len(t.got) for t in takers]
    assert downs == [b"answer"]
