"""The MQTT transport of the meter (docs/protocol.md, "MQTT transport"): the real firmware on
the MicroPython unix port (and once on CPython) against a real mosquitto with passwords and
the protocol's ACL, with a paho-mqtt fake head-end that answers `up` with signed `down`s and
pushes work (mqtt_site.py). The link without a network and a frozen broker:
test_mqtt_link.py."""

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import time

import pytest
from mqtt_helpers import client, wait_until
from mqtt_site import WILL, needs_mosquitto, online, retained, run_op, site  # noqa: F401

from lab import runner
from sim import METER_MAIN

pytestmark = [pytest.mark.system, needs_mosquitto]


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
    # every request was signed, and is a v2 request with wait 0 that lists executed work
    assert he.bad == []
    bodies = [b for _, b in he.ups["meter-a"]]
    assert all(b["v"] == 2 and b["device"] == "meter-a" and b["wait"] == 0 for b in bodies)
    assert r["work"] in he.done_ids("meter-a")
    # the poll rate is the head-end's: the meter has no set_poll op (issue 13, item 5)
    assert run_op(site, "meter-a", "set_poll", {"seconds": 30})["status"] == "unknown_op"


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


def stated(payload):
    """What a signed presence message states (it also carries device, conn, n, sig)."""
    body = json.loads(payload)
    assert set(body) == {"state", "note", "device", "conn", "n", "sig"}, body
    return {"state": body["state"], "note": body["note"]}


def test_presence_retained_and_last_will_on_kill(site):
    he = site.he
    m = site.start("meter-b")
    wait_until(lambda: he.up_count("meter-b"), 20, "meter-b's first request")
    topic = "bc/meter-b/presence"
    assert stated(retained(site, topic)[topic]) == {"state": "available", "note": ""}
    m.kill()  # SIGKILL: no DISCONNECT, so the broker publishes the Last Will
    wait_until(lambda: he.received(topic) and stated(he.received(topic)[-1][1]) == WILL,
               10, "meter-b's Last Will")
    assert stated(retained(site, topic)[topic]) == WILL
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
               stated(he.received("bc/meter-c/presence")[-1][1]) == WILL, 10,
               "meter-c's Last Will")
    # published (QoS 1, PUBACKed by the broker) while meter-c is down: the broker's
    # persistent session delivers it on reconnect, but it is bound to the connection that
    # died (v2), so the meter refuses it; work pushed on its new connection runs
    old = he.latest["meter-c"]["conn"]
    item = he.push("meter-c", "read")
    time.sleep(0.3)
    assert he.results("meter-c", item["id"]) == []
    site.start("meter-c")
    try:
        wait_until(lambda: he.latest["meter-c"]["conn"] != old, 20, "meter-c's new connection")
        time.sleep(1.0)
        assert he.results("meter-c", item["id"]) == [], "a push for another connection ran"
        again = he.push("meter-c", "read")
        r = he.wait_result("meter-c", again["id"], timeout=20)
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
    # meter-b's own retained presence, whatever other tests ran before (or in another worker)
    genuine = b'{"state": "available", "note": ""}'
    he.c.publish("bc/meter-b/presence", genuine, qos=1, retain=True).wait_for_publish(5)
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
        kept = retained(site, "bc/meter-b/presence")["bc/meter-b/presence"]
        assert kept != b"forged" and json.loads(kept), kept
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
                            for i in body.get("items", [])))
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
                               "mqtt_port": site.broker.port, "mqtt_tls": False}))
    cmd, env = runner.command("micropython", METER_MAIN, str(cfg),
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
