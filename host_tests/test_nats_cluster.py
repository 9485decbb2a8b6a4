"""MQTT at scale on a three-node NATS cluster (issue 19, item 3; docs/scaling.md "A NATS
cluster"): Debian's nats-server with JetStream and its MQTT gateway, configured by
`backchannel nats-config`, a head-end bridging with `serve --nats-dir` (nats-py, a queue
group), and the real firmware under MicroPython speaking MQTT to node 1 first.

kill -9 of node 1: the meter moves to the next node of its mqtt_host list, its session
(JetStream, 3 replicas) is still there, and nothing is lost or stored twice; its retained
presence is still served by the nodes left. Real processes throughout."""

import asyncio
import json
import os
import re
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from headend import broker
from lab import nats_site, processes

pytestmark = pytest.mark.system


def require_nats():
    """Skip without nats-server (fail when CI is set): shared by the NATS cluster tests."""
    reason = nats_site.missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + reason, pytrace=False)
        pytest.skip(reason)


def _readings(api):
    return [r["seq"] for r in api.get("/v1/devices/meter-m/readings?limit=1000").json()]


def _mqtt(site, node, user, password, client_id):
    """A connected paho client (None if refused) and the SUBACK codes it gets."""
    subacks, done = [], threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, ud, fl, rc, pr: done.set()
    c.on_subscribe = lambda cl, ud, mid, rcs, pr: subacks.append([rc.is_failure for rc in rcs])
    c.connect("127.0.0.1", site.mqtt_port(node), 30)
    c.loop_start()
    done.wait(20)
    return c, subacks


def _retained_presence(site, node, timeout=60):
    """The retained bc/meter-m/presence a new MQTT client gets from `node` (the bridge's
    user may read every topic). QoS 0: no JetStream consumer to make; tried again while
    the cluster is still electing leaders after the kill (JetStream requests time out)."""
    info = json.loads((site.dir / "nats.json").read_text())
    deadline = time.monotonic() + timeout
    while True:
        got, done = [], threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="presence-reader",
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set(info["user"], info["password"])
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("bc/meter-m/presence", 0)

        def on_message(cl, ud, msg, got=got, done=done):
            got.append((msg.retain, json.loads(msg.payload)))
            done.set()
        c.on_message = on_message
        c.connect("127.0.0.1", site.mqtt_port(node), 30)
        c.loop_start()
        try:
            done.wait(5)
        finally:
            c.disconnect()
            c.loop_stop()
        if got or time.monotonic() > deadline:
            return got


async def _nats_login(site, user, password):
    import nats
    nc = await nats.connect("nats://127.0.0.1:%d" % site.ports["client"][2], user=user,
                            password=password, allow_reconnect=False, connect_timeout=5,
                            max_reconnect_attempts=0)
    await nc.close()


def _node_of(site, log):
    """The node the meter's log says it connected to last."""
    found = re.findall(r"connected to 127\.0\.0\.1:(\d+)", log)
    by_port = {site.mqtt_port(n): n for n in ("node1", "node2", "node3")}
    return by_port.get(int(found[-1])) if found else None


def test_the_meter_fails_over_to_another_node_and_nothing_is_lost(tmp_path):
    require_nats()
    he = processes.Headend(tmp_path)
    site = meter = None
    try:
        key = he.add_device("meter-m")
        api = he.api(he.add_token("alice", "operator"))
        site = nats_site.NatsSite(tmp_path, he.db).start()
        he.extra += site.serve_args()
        he.start(60)
        meter = processes.Meter(tmp_path, "meter-m", key, "",
                                **site.meter_settings(first="node1")).start()
        assert processes.run_work(api, "meter-m", "read", timeout=90)["status"] == "done"
        # node 1 first, or the next when node 1 did not answer its CONNECT within 2.5 s (a
        # loaded machine making the session's JetStream streams): the node it is on now
        first = _node_of(site, meter.log())
        assert first is not None, meter.log()
        before = set(processes.wait_until(lambda: _readings(api) or None, 30, "readings"))

        site.kill(first)
        others = [n for n in ("node1", "node2", "node3") if n != first]
        # another node of the list takes the meter, with its session (JetStream, R3)
        assert processes.run_work(api, "meter-m", "read", timeout=90)["status"] == "done"
        moved = meter.log().rsplit("link down", 1)[-1]
        assert any("connected to 127.0.0.1:%d (session resumed)" % site.mqtt_port(n) in moved
                   for n in others), meter.log()[-2000:]
        processes.wait_until(lambda: len(_readings(api)) > len(before) + 2, 60,
                             "readings after the failover")
        seqs = _readings(api)
        assert len(seqs) == len(set(seqs)), "a reading stored twice"
        assert before <= set(seqs), "a reading lost"
        # every outbox item the meter numbered (readings, results, presence) is stored
        with sqlite3.connect(he.db) as db:
            items = [r[0] for r in db.execute(
                "SELECT seq FROM items WHERE device = 'meter-m' ORDER BY seq")]
        assert items == list(range(1, max(items) + 1)), "an item lost: %s" % items
        # the retained presence outlived the node the meter had published it on
        retained = _retained_presence(site, others[-1])
        assert retained and retained[0][0] is True
        assert retained[0][1]["device"] == "meter-m"
        assert retained[0][1]["state"] == "available"
        # the meter's login reads its own down only, and only over MQTT
        c, subacks = _mqtt(site, others[-1], "meter-m", broker.meter_password(key),
                           "meter-m-spy")
        try:
            # QoS 0: the permissions are checked alike, and no JetStream consumer is made
            # (the cluster may still be electing leaders after the kill)
            for topic in ("bc/+/down", "$MQTT/sub/#", "bc/meter-m/down"):
                c.subscribe(topic, 0)
            processes.wait_until(lambda: len(subacks) == 3, 20, "three SUBACKs")
            assert subacks == [[True], [True], [False]]
        finally:
            c.disconnect()
            c.loop_stop()
        with pytest.raises(Exception, match="[Aa]uthorization"):
            asyncio.run(_nats_login(site, "meter-m", broker.meter_password(key)))
        bridge = api.get("/v1/mqtt").json()
        assert bridge["connected"] and bridge["counts"]["answered"] >= 2
    finally:
        if meter is not None:
            meter.kill()
        he.kill()
        if site is not None:
            site.stop()
