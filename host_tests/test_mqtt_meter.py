"""The MQTT transport of the meter (docs/protocol.md, "MQTT transport"): the real firmware on
the MicroPython unix port (and once on CPython) against a real mosquitto with passwords and
the protocol's ACL, with a paho-mqtt fake head-end that answers `up` with signed `down`s and
pushes work. Also firmware/mqtt_comms.py's link, driven without a network on both
interpreters (host_tests/drivers/mqtt_link.py)."""

import contextlib
import json
import os
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import fw
from mqtt_helpers import (Broker, FakeHeadend, MqttMeter, client, mqtt_password,
                          wait_until)

sys.path.insert(0, str(fw.ROOT / "tools"))
import pki  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("mosquitto") or
                                     os.path.exists("/usr/sbin/mosquitto")),
                                reason="mosquitto is not installed (CI installs it)")

DRIVERS = fw.ROOT / "host_tests" / "drivers"
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


# --- the link, without a network, on both interpreters ---

def test_link_coalesces_packets_and_bounds_every_wait(interpreter, tmp_path):
    out = json.loads(fw.run(interpreter, DRIVERS / "mqtt_link.py", str(tmp_path)))
    # umqtt writes a packet in pieces; the link hands the stream one whole packet
    assert out["connect_writes"] > 5 and out["connect"] == [[0x10], 0]
    assert out["publish_writes"] >= 4 and out["publish"] == [[0x30], 0]
    assert out["will_in_connect"] and out["password_in_connect"]
    # the QoS 1 publish did not wait for its PUBACK; a PUBACK arriving in pieces clears it
    assert out["inflight"] == [1]
    assert out["inflight_half_puback"] == 1 and out["inflight_after_puback"] == 0
    assert out["wrapped_pid"] == 1
    # a signed down is applied once complete (ack, next), then PUBACKed; a forged one is not
    assert out["half_down"] == [0, 0]
    assert out["down"] == [1, 1, 42, [0x40, 2, 0, 9]]
    assert out["bad_sig"][0] == 1 and "signature" in out["bad_sig"][1]
    assert out["bad_sig"][2] == [0x40, 2, 0, 10]
    # keepalive: PINGREQ, PINGRESP; silence and lost acks are dead links
    assert out["ping"] == [[0xC0, 0], True] and out["pingresp"] is False
    assert "no PINGRESP" in out["no_pingresp"]
    assert "no ack for bc/meter-x/state" in out["no_puback"]
    assert "refused the subscription" in out["suback_refused"]
    assert out["qos2"].startswith("AssertionError")      # umqtt's own check ...
    assert out["qos2_reason"] == "MQTT protocol error (umqtt assertion)"  # ... a reconnect
    assert "refused" in out["oversized"] and "unexpected packet 0xb0" in out["unexpected"]


# --- against mosquitto ---

def test_work_and_results_round_trip(site):
    he = site.he
    r = run_op(site, "meter-a", "read")
    assert r["status"] == "done" and r["body"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    assert run_op(site, "meter-a", "no_such_op")["status"] == "unknown_op"
    forged = he.work("meter-a", "read")
    forged["sig"] = "0" * 64
    he.down("meter-a", [forged])
    bad = he.wait_result("meter-a", forged["id"])
    assert bad["status"] == "rejected" and bad["reason"] == "bad signature"
    # every request was signed, and is a v1 request with wait 0 that lists executed work
    assert he.bad == []
    bodies = [b for _, b in he.ups["meter-a"]]
    assert all(b["v"] == 1 and b["device"] == "meter-a" and b["wait"] == 0 for b in bodies)
    assert r["work"] in he.done_ids("meter-a")
    assert run_op(site, "meter-a", "set_poll", {"seconds": 30})["body"] == {"seconds": 30}


def test_relay_changes_presence_published_retained(site):
    he = site.he
    assert run_op(site, "meter-a", "relay", {"state": "open"})["body"] == {"state": "open"}
    wait_until(lambda: json.loads(retained(site, "bc/meter-a/presence")["bc/meter-a/presence"])
               ["state"] == "available_off", 5, "presence available_off")
    assert run_op(site, "meter-a", "relay", {"state": "closed"})["body"] == {"state": "closed"}
    wait_until(lambda: any(json.loads(p)["state"] == "active"
                           for _, p, _ in he.received("bc/meter-a/presence")), 5,
               "presence active")


def test_cpython_meter_round_trip(site):
    m = site.start("meter-py", interpreter="cpython")
    try:
        online(site.he, "meter-py")
        r = run_op(site, "meter-py", "read")
        assert r["status"] == "done"
        assert r["body"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    finally:
        m.kill()  # metering in CPython takes a core; the later timings need it


def test_presence_retained_and_last_will_on_kill(site):
    he = site.he
    m = site.start("meter-b")
    wait_until(lambda: he.up_count("meter-b"), 20, "meter-b's first request")
    topic = "bc/meter-b/presence"
    assert json.loads(retained(site, topic)[topic]) == {"state": "available", "note": ""}
    m.kill()  # SIGKILL: no DISCONNECT, so the broker publishes the Last Will
    wait_until(lambda: he.received(topic) and json.loads(he.received(topic)[-1][1]) == WILL,
               10, "meter-b's Last Will")
    assert json.loads(retained(site, topic)[topic]) == WILL
    m = site.start("meter-b")
    try:
        wait_until(lambda: json.loads(he.received(topic)[-1][1])["state"] == "available", 20,
                   "meter-b's presence after restart")
        assert json.loads(retained(site, topic)[topic])["state"] == "available"
    finally:
        m.kill()


def test_work_published_while_offline_arrives_on_reconnect(site):
    he = site.he
    m = site.start("meter-c")
    wait_until(lambda: he.up_count("meter-c"), 20, "meter-c's first request")
    m.kill()
    wait_until(lambda: he.received("bc/meter-c/presence") and
               json.loads(he.received("bc/meter-c/presence")[-1][1]) == WILL, 10,
               "meter-c's Last Will")
    # published (QoS 1, PUBACKed by the broker) while meter-c is down; the fake head-end's
    # answers never carry work, so only the broker's persistent session can deliver it
    item = he.push("meter-c", "read")
    time.sleep(0.3)
    assert he.results("meter-c", item["id"]) == []
    site.start("meter-c")
    try:
        r = he.wait_result("meter-c", item["id"], timeout=20)
        assert r["status"] == "done"
        assert "session resumed" in m.log()
    finally:
        m.kill()


def test_duplicate_delivery_runs_once(site):
    he = site.he
    args = {"to": "meter-b", "op": "read", "ref": "dup-%d" % time.monotonic_ns()}
    item = he.work("meter-a", "send", args)
    he.down("meter-a", [item]).wait_for_publish(5)
    he.down("meter-a", [item]).wait_for_publish(5)
    he.wait_result("meter-a", item["id"])
    again = he.up_count("meter-a")
    he.down("meter-a", [item]).wait_for_publish(5)  # after its result was acked
    wait_until(lambda: he.up_count("meter-a") >= again + 2, 10, "requests after redelivery")
    assert len(he.results("meter-a", item["id"])) == 1
    sends = [i for i in he.items["meter-a"].values()
             if i["kind"] == "send" and i["body"]["ref"] == args["ref"]]
    assert len(sends) == 1   # the op itself ran once
    assert item["id"] in he.done_ids("meter-a")


def test_acl_keeps_a_meter_to_its_own_topics(site):
    """meter-x, logged in with its own credentials, tries other meters' topics. mosquitto
    drops a denied publish silently (QoS 1 still gets its PUBACK) and grants a denied
    subscription but delivers nothing on it; both are checked by what arrives, behind a
    message the probe may send or receive (same connection, so in order)."""
    he = site.he
    probe = client(site.broker.port, "meter-x", site.users["meter-x"], client_id="probe-x")
    got, granted = [], {}
    probe.on_message = lambda cl, ud, msg: got.append(msg.topic)
    probe.on_subscribe = lambda cl, ud, mid, codes, props: granted.__setitem__(
        mid, [c.is_failure for c in codes])
    try:
        denied = ["bc/meter-b/up", "bc/meter-b/presence", "bc/meter-b/state",
                  "homeassistant/sensor/meter-b/power/config", "bc/meter-x/down",
                  "homeassistant/status"]
        for topic in denied:
            probe.publish(topic, b"forged", qos=1, retain=topic.endswith("presence"))
        marker = probe.publish("bc/meter-x/state", b"marker", qos=1)
        marker.wait_for_publish(5)
        wait_until(lambda: he.received("bc/meter-x/state"), 5, "the probe's allowed publish")
        for topic in denied:
            assert not [p for _, p, _ in he.received(topic) if p == b"forged"], topic
        assert json.loads(retained(site, "bc/meter-b/presence")["bc/meter-b/presence"])
        # reading: mosquitto 2.0 grants the SUBACK (file ACLs are checked per message), but
        # never delivers another meter's down, directly or through a wildcard
        mid_other = probe.subscribe("bc/meter-b/down", 1)[1]
        mid_all = probe.subscribe("bc/#", 1)[1]
        wait_until(lambda: mid_other in granted and mid_all in granted, 5, "SUBACKs")
        he.c.publish("bc/meter-b/down", b"not for meter-x", qos=1).wait_for_publish(5)
        he.c.publish("bc/meter-x/down", b"for meter-x", qos=1).wait_for_publish(5)
        wait_until(lambda: "bc/meter-x/down" in got, 5, "meter-x's own down")
        assert "bc/meter-b/down" not in got and "bc/meter-a/up" not in got
    finally:
        probe.loop_stop()
        probe.disconnect()


def test_home_assistant_discovery(site):
    he = site.he
    configs = retained(site, "homeassistant/sensor/meter-a/+/config", count=6)
    keys = {t.split("/")[3]: json.loads(p) for t, p in configs.items()}
    assert set(keys) == {"voltage", "current", "power", "power_factor", "frequency", "energy"}
    for key, c in keys.items():
        assert c["unique_id"] == "meter-a_" + key
        assert c["device"] == {"identifiers": ["meter-a"], "name": "meter-a",
                               "manufacturer": "backchannel", "model": "backchannel meter"}
        assert c["state_topic"] == "bc/meter-a/state"
        assert c["value_template"].startswith("{{ value_json.")
        assert c["availability_topic"] == "bc/meter-a/presence"
        assert c["payload_available"] == "online" and c["payload_not_available"] == "offline"
        assert "value_json.state == 'unavailable'" in c["availability_template"]
        assert c["device_class"] == key
    assert keys["energy"]["state_class"] == "total_increasing"
    assert keys["energy"]["unit_of_measurement"] in ("Wh", "kWh")
    assert keys["voltage"]["unit_of_measurement"] == "V"
    assert keys["frequency"]["unit_of_measurement"] == "Hz"
    assert "unit_of_measurement" not in keys["power_factor"]
    # each template's field is in the retained state the meter publishes
    state = json.loads(retained(site, "bc/meter-a/state")["bc/meter-a/state"])
    for c in keys.values():
        field = c["value_template"].split("value_json.")[1].split()[0]
        assert isinstance(state[field], float), field
    # Home Assistant's birth message brings the configs again
    before = len([m for m in he.messages if m[1].startswith("homeassistant/sensor/meter-a/")])
    he.c.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
    wait_until(lambda: len([m for m in he.messages
                            if m[1].startswith("homeassistant/sensor/meter-a/")]) >= before + 6,
               10, "the configs published again")


def test_round_trip_not_held_by_nagle(site):
    """Work pushed on down to its result on up, on loopback: with each packet in one write
    and TCP_NODELAY, a few ms; a packet split behind Nagle and a delayed ACK costs 40 ms."""
    he = site.he
    times = []
    for _ in range(15):
        t0 = time.monotonic()
        item = he.push("meter-a", "get_messages")
        he.wait_result("meter-a", item["id"])
        with he.lock:
            t1 = min(t for t, body in he.ups["meter-a"]
                     if any(i["kind"] == "result" and i["body"].get("work") == item["id"]
                            for i in body["items"]))
        times.append(t1 - t0)
    print("round trips (ms):", sorted(round(t * 1000, 1) for t in times))
    assert statistics.median(times) < 0.040, times


def test_tcp_nodelay_is_set(site, tmp_path):
    strace = shutil.which("strace")
    if not strace:
        pytest.skip("strace is not installed")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"device_id": "meter-x", "device_key": site.keys["meter-x"],
                               "transport": "mqtt", "mqtt_host": "127.0.0.1",
                               "mqtt_port": site.broker.port}))
    cmd, env = fw.command("micropython", fw.BOARDS / "sim_meter.py", str(cfg),
                          str(tmp_path / "state"))
    # its own process group: killing strace alone would leave the traced meter running
    p = subprocess.Popen([strace, "-f", "-e", "trace=setsockopt", "-o", str(tmp_path / "st")]
                         + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        wait_until(lambda: "TCP_NODELAY" in _text(tmp_path / "st") or p.poll() is not None,
                   10, "the meter's connection")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    text = _text(tmp_path / "st")
    if "TCP_NODELAY" not in text:
        pytest.skip("strace could not trace here: %s" % p.stderr.read()[-200:])
    assert "SOL_TCP, TCP_NODELAY, [1], 4) = 0" in text


def _text(path):
    return path.read_text(errors="replace") if path.exists() else ""


def test_tls_with_pinned_ca(site):
    he = site.he
    m = site.start("meter-t", mqtt_tls=True, mqtt_port=site.broker.tls_port,
                   ca_file=str(site.good / "ca.der"))
    online(he, "meter-t")
    r = run_op(site, "meter-t", "read")
    assert r["status"] == "done"
    rogue = site.start("meter-rogue", mqtt_tls=True, mqtt_port=site.broker.tls_port,
                       ca_file=str(site.other / "ca.der"))
    wait_until(lambda: "TLS with 127.0.0.1:%d failed" % site.broker.tls_port in rogue.log(),
               15, "the rogue meter's TLS failure")
    assert ("certificate verification failed" in rogue.log() or
            "CERT_VERIFY_FAILED" in rogue.log())
    assert he.up_count("meter-rogue") == 0 and "connected" in m.log()


# --- a broker that stops answering ---

def _gaps(meter, since, until):
    times = [t for t, _ in meter.readings(since) if t <= until]
    return len(times), max(b - a for a, b in zip(times, times[1:]))


def test_frozen_broker_never_stalls_metering(tmp_path):
    """SIGSTOP the broker mid-session, and point a second meter at a port that accepts
    connections and never answers: readings (1 s) keep coming at the normal rate while the
    link times out, backs off and reconnects once the broker is back."""
    keys = {"meter-f": os.urandom(16).hex(), "meter-h": os.urandom(16).hex()}
    users = {m: mqtt_password(k) for m, k in keys.items()}
    users["headend"] = HEADEND_PASSWORD
    broker = Broker(tmp_path / "broker", users)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
    meters, he = [], None
    try:
        broker.start()
        he = FakeHeadend(broker.port, HEADEND_PASSWORD, keys)
        f = MqttMeter(tmp_path, "meter-f", keys["meter-f"], broker.port).start()
        h = MqttMeter(tmp_path, "meter-h", keys["meter-h"], hole.getsockname()[1]).start()
        meters += [f, h]
        wait_until(lambda: he.up_count("meter-f"), 20, "meter-f's first request")
        t0 = time.monotonic()
        broker.freeze()
        # no PUBACK or PINGRESP: the link is declared dead within keepalive/2 + timeout_s
        # (10 s keepalive: 5 + 2.5 s); then connects time out (no CONNACK) and back off
        wait_until(lambda: "link down: " in f.log(), 12, "meter-f to give up the link")
        time.sleep(2.0)
        broker.thaw()
        t1 = time.monotonic()
        count, gap = _gaps(f, t0, t1)
        assert count >= (t1 - t0) - 1.5 and gap < 1.6, (count, gap)
        ups = he.up_count("meter-f")
        wait_until(lambda: he.up_count("meter-f") > ups and f.log().count("connected to") >= 2,
                   20, "meter-f back on the broker")
        count, gap = _gaps(h, t0, t1)
        assert count >= (t1 - t0) - 1.5 and gap < 1.6, (count, gap)
        assert "no CONNACK" in h.log()
    finally:
        for m in meters:
            m.kill()
        if he is not None:
            he.close()
        broker.stop()
        hole.close()
