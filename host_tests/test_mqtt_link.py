"""The meter's MQTT link (firmware/mqtt_comms.py): driven without a network on both
interpreters (host_tests/mp_scripts/mqtt_link.py), and against a broker that stops answering
(mosquitto SIGSTOPped, a port that never answers) while metering goes on."""

import json
import os
import socket
import time

import pytest
from mqtt_helpers import Broker, FakeHeadend, MqttMeter, mqtt_password, wait_until
from mqtt_site import HEADEND_PASSWORD, needs_mosquitto

from lab import runner

pytestmark = [pytest.mark.system, needs_mosquitto]

MP_SCRIPTS = runner.ROOT / "host_tests" / "mp_scripts"


# --- the link, without a network, on both interpreters ---

def test_link_coalesces_packets_and_bounds_every_wait(interpreter, tmp_path):
    out = json.loads(runner.run(interpreter, MP_SCRIPTS / "mqtt_link.py", str(tmp_path)))
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
    # answers that stop while acks come: a dead link after SILENT_UPS ups in a row (a broker
    # that lost the meter's subscription, seen on nats-server 2.9); a down resets the count
    assert out["silent"] == [2, 0, "LinkError: no answer to 3 requests on this connection"]
    # keepalive: PINGREQ, PINGRESP; silence and lost acks are dead links
    assert out["ping"] == [[0xC0, 0], True] and out["pingresp"] is False
    assert "no PINGRESP" in out["no_pingresp"]
    assert "no ack for bc/meter-x/state" in out["no_puback"]
    assert "refused the subscription" in out["suback_refused"]
    assert out["qos2"].startswith("AssertionError")      # umqtt's own check ...
    assert out["qos2_reason"] == "MQTT protocol error (umqtt assertion)"  # ... a reconnect
    assert "refused" in out["oversized"] and "unexpected packet 0xb0" in out["unexpected"]
    # an oversized PUBLISH is dropped as it arrives, acknowledged (the broker then drops it),
    # and noticed; the link carries on with the next packet
    r = out["refused"]
    assert r["largest_rx"] <= 2048 and r["got"] == [5], r
    assert r["pubacks"] == [[0x40, 2, 321 >> 8, 321 & 0xFF], [0x40, 2, 322 >> 8, 322 & 0xFF]], r
    size = 32 * 1024 + 100 + 2 + len("bc/meter-x/down") + 2     # payload, topic, packet id
    assert r["notice"] == {"what": "oversized message refused", "count": 1, "bytes": size,
                           "limit": 32 * 1024}, r
    assert "refused a" in r["error"]


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


# --- a broker that acks every up, while the answers never reach the meter ---

def test_answers_that_stop_coming_end_the_connection(tmp_path):
    """nats-server 2.9 once lost a node's interest in a meter's resumed subscription after a
    reload: the meter's ups were acked and reached the head-end, its answers never came back,
    and the connection stayed up for good. Here the head-end stops answering: after
    SILENT_UPS unanswered ups on one connection the meter connects again (and subscribes
    afresh), and is answered once answers flow."""
    key = os.urandom(16).hex()
    broker = Broker(tmp_path / "broker", {"meter-s": mqtt_password(key),
                                          "headend": HEADEND_PASSWORD})
    he = meter = None
    try:
        broker.start()
        he = FakeHeadend(broker.port, HEADEND_PASSWORD, {"meter-s": key}, next_s=2)
        meter = MqttMeter(tmp_path, "meter-s", key, broker.port).start()
        wait_until(lambda: he.answered.get("meter-s"), 30, "the meter's first answer")
        he.answering = False
        since = len(he.ups["meter-s"])

        def conns():
            with he.lock:
                return [body["conn"] for _, body in he.ups["meter-s"][since:]]
        # 10 s keepalive: answer_s 5 s, back-off 1..2, 2..4 s between unanswered ups
        wait_until(lambda: len(set(conns())) >= 2, 90, "a new connection after silent ups")
        first = conns()[0]
        assert conns().count(first) == 3, conns()
        assert "link down: LinkError: no answer to 3 requests on this connection" in meter.log()
        he.answering = True
        # answered again: ups every `next` (2 s) on one connection, more of them than
        # SILENT_UPS, so the meter took the answers
        since = len(he.ups["meter-s"])
        wait_until(lambda: conns() and conns().count(conns()[-1]) > 4, 60,
                   "ups answered on one connection")
        assert meter.log().count("no answer to 3 requests") == 1
    finally:
        if meter is not None:
            meter.kill()
        if he is not None:
            he.close()
        broker.stop()
