"""Attacks on MQTT presence (issue 12, 8: presence is signed, the bridge ignores unsigned or
forged presence). Before, anyone holding a meter's broker login (its password travels to
the broker; it is not the device key) could publish `available` on bc/<id>/presence and
release the work an operator held with `when_available`. Each test plays the attacker
against the real head-end, its bridge and mosquitto, with the meter a fake that signs as
the firmware does (host_tests/mqtt_fake_meter.py)."""

import json
import time

import pytest
from mqtt_fake_meter import presence_payload
from test_headend_mqtt import make_site, needs_mosquitto, wait_for  # noqa: F401

pytestmark = [pytest.mark.system, needs_mosquitto]


def held_site(make_site):  # noqa: F811
    """q1 connected, called in, now `available_restricted`, with a `read` held for when it
    is available again."""
    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    q.state("available_restricted", "critical process")
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "available_restricted",
             what="the restricted statement")
    w = s.op.work("q1", "read", when_available=True)
    return s, q, w


def still_held(s, w, seconds=0.5):
    time.sleep(seconds)
    assert s.op.status(w["id"]) == "held"
    assert s.op.get("/v1/devices/q1").json()["presence"] == "available_restricted"


def test_broker_login_alone_cannot_state_available(make_site):  # noqa: F811
    s, q, w = held_site(make_site)
    refused = s.bridge.counts["refused"]
    # the attacker has q1's broker password (not its key): the old unsigned statement, and
    # one dressed up with the fields of a signed one but a made-up signature
    q.publish("bc/q1/presence", b'{"state": "available", "note": ""}')
    forged = json.loads(q.presence("available"))
    forged["sig"] = "0" * 64
    q.publish("bc/q1/presence", json.dumps(forged).encode())
    # and one signed with another key (a stolen key of another meter)
    q.publish("bc/q1/presence", presence_payload("11" * 32, "q1", q.conn, 9, "available"))
    wait_for(lambda: s.bridge.counts["refused"] >= refused + 3, what="the refusals")
    still_held(s, w)
    assert s.bridge.refused["unsigned or forged presence"] >= 3


def test_replayed_available_of_an_earlier_connection_is_dropped(make_site):  # noqa: F811
    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    captured = q.presence("available")          # genuine, signed, of this connection
    q.publish("bc/q1/presence", captured)
    q.kill()                                    # the Will: unavailable
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "unavailable",
             what="the Last Will")
    q.connect()
    q.exchange()
    q.state("available_restricted", "critical process")
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "available_restricted",
             what="the restricted statement")
    w = s.op.work("q1", "read", when_available=True)
    q.publish("bc/q1/presence", captured)       # replayed on the meter's login
    still_held(s, w)


def test_replayed_statement_of_the_same_connection_is_dropped(make_site):  # noqa: F811
    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    first = q.presence("available")
    q.publish("bc/q1/presence", first)
    q.state("available_restricted", "critical process")
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "available_restricted",
             what="the restricted statement")
    w = s.op.work("q1", "read", when_available=True)
    q.publish("bc/q1/presence", first)          # its n is behind the latest: seen already
    still_held(s, w)
    assert s.bridge.counts["presence_dropped"] >= 1


def test_an_old_connections_will_does_not_cut_off_the_meter(make_site):  # noqa: F811
    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    old_will = q.presence("unavailable", "connection lost", n=0)
    q.disconnect()
    q.connect()
    q.exchange()
    q.publish("bc/q1/presence", old_will)
    time.sleep(0.5)
    assert s.op.get("/v1/devices/q1").json()["presence"] == "available"
    w = s.op.work("q1", "read")                 # still pushed at once: not taken as offline
    assert [x["id"] for x in q.next_down()["work"]] == [w["id"]]


def test_genuine_statements_and_will_still_count(make_site):  # noqa: F811
    s, q, w = held_site(make_site)
    q.state("available")                        # signed, of the current connection
    assert [x["id"] for x in q.next_down()["work"]] == [w["id"]]
    q.kill()
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "unavailable",
             what="the genuine Last Will")


def test_a_statement_replayed_after_a_head_end_restart_is_dropped(make_site):  # noqa: F811
    """What the gate has taken is durable (presence_seen): a head-end that restarts (here its
    gate's memory, started afresh over the same database) still drops the replay."""
    from headend import mqtt_presence

    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    first = q.presence("available")
    q.publish("bc/q1/presence", first)
    q.state("available_restricted", "critical process")
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "available_restricted",
             what="the restricted statement")
    w = s.op.work("q1", "read", when_available=True)
    s.bridge.presence_gate = mqtt_presence.PresenceGate(mqtt_presence.seen_in(s.h.hub.db))
    dropped = s.bridge.counts["presence_dropped"]
    q.publish("bc/q1/presence", first)          # its n is behind the latest, on record
    wait_for(lambda: s.bridge.counts["presence_dropped"] > dropped, what="the replay dropped")
    still_held(s, w)


def test_a_dead_connections_statement_after_a_restart_is_dropped(make_site):  # noqa: F811
    from headend import mqtt_presence

    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    said = q.presence("available")
    q.publish("bc/q1/presence", q.presence("unavailable", "connection lost", n=0))
    wait_for(lambda: s.op.get("/v1/devices/q1").json()["presence"] == "unavailable",
             what="the Will")
    s.bridge.presence_gate = mqtt_presence.PresenceGate(mqtt_presence.seen_in(s.h.hub.db))
    dropped = s.bridge.counts["presence_dropped"]
    q.publish("bc/q1/presence", said)           # its connection has ended, on record
    wait_for(lambda: s.bridge.counts["presence_dropped"] > dropped, what="the replay dropped")
    assert s.op.get("/v1/devices/q1").json()["presence"] == "unavailable"
