"""Shared by the MQTT meter tests (test_mqtt_meter.py, test_mqtt_link.py): the skip when
mosquitto is missing, and the `site` fixture: a real mosquitto with passwords and the
protocol's ACL, a paho-mqtt fake head-end, and meters (the real firmware) started on demand."""

import os
import shutil
from types import SimpleNamespace

import pytest
from mqtt_helpers import Broker, FakeHeadend, MqttMeter, client, mqtt_password, wait_until

from lab import pki

needs_mosquitto = pytest.mark.skipif(not (shutil.which("mosquitto") or
                                          os.path.exists("/usr/sbin/mosquitto")),
                                     reason="mosquitto is not installed (CI installs it)")

HEADEND_PASSWORD = "headend-secret"
METERS = ("meter-a", "meter-b", "meter-c", "meter-py", "meter-x", "meter-t", "meter-rogue")
WILL = {"state": "unavailable", "note": "connection lost"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("mqtt")
    good, other = work / "pki-good", work / "pki-other"
    pki.init(good)    # the broker's cert names 127.0.0.1
    pki.init(other)   # a CA the broker's cert is not from
    keys = {m: os.urandom(16).hex() for m in METERS}
    users = {m: mqtt_password(k) for m, k in keys.items()}
    users["headend"] = HEADEND_PASSWORD
    broker = Broker(work / "broker", users, certs=(good / "server.pem", good / "server.key"))
    meters = {}
    he = None

    def start(device, **settings):
        m = meters.get(device)
        if m is None:
            m = meters[device] = MqttMeter(work, device, keys[device], broker.port, **settings)
        return m.start()

    try:
        broker.start()
        he = FakeHeadend(broker.port, HEADEND_PASSWORD, keys)
        start("meter-a", ha_discovery=True)
        online(he, "meter-a")
        yield SimpleNamespace(work=work, broker=broker, he=he, keys=keys, users=users,
                              meters=meters, start=start, good=good, other=other)
    finally:
        for m in meters.values():
            m.kill()
        if he is not None:
            he.close()
        broker.stop()


def online(he, device, timeout=20):
    """Wait for the meter's first request and its first reading (on its state topic)."""
    wait_until(lambda: he.up_count(device) and he.received("bc/%s/state" % device), timeout,
               "%s's first request and reading" % device)


def retained(site, topic, count=1, timeout=5):
    """The retained messages a fresh subscriber gets on topic (a filter), as {topic: payload}."""
    got = {}
    c = client(site.broker.port, "headend", HEADEND_PASSWORD)
    c.on_message = lambda cl, ud, msg: got.__setitem__(msg.topic, msg.payload) if msg.retain \
        else None
    try:
        c.subscribe(topic, 1)
        wait_until(lambda: len(got) >= count, timeout, "%d retained on %s" % (count, topic))
        return got
    finally:
        c.loop_stop()
        c.disconnect()


def run_op(site, device, op, args=None, **kw):
    item = site.he.push(device, op, args, **kw)
    return site.he.wait_result(device, item["id"])
