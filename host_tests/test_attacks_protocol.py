"""Attacks on the exchange protocol (issue 12, items 5 and 7; docs/security.md), written as
the attacker would try them, against the real firmware (CPython, in-process) and the real
head-end (in-process through TestClient, protocol_site.py): replayed and retyped work,
replayed responses, pushes from another connection, a v1 meter, a wiped outbox. The attacks
on the meter's clock are in test_attacks_clock.py; the same attacks with real processes over
HTTP and MQTT in test_attacks_protocol_system.py."""

import asyncio
import json
import time

import envelope
import pytest
from comms import ExchangeError
from protocol_site import (
    delivered,
    exchange_once,
    mqtt_link,
    site,  # noqa: F401 - the fixture
    skew,
)

from headend import devices, exchange, workq

pytestmark = pytest.mark.unit


# --- work: retyped, replayed ---

def test_expired_relay_open_replayed_with_expires_as_a_string_does_not_run(site):
    """The attacker captured `relay open` on its way to the meter (and dropped it); once it
    has expired, they replay it with `expires` turned into the string "1700000000"."""
    meter = site.meter()
    site.op.work("meter-a", "relay", {"state": "open"}, expires_in=60)
    meter.comms.http.answer_with = (599, {}, b"dropped by the attacker")
    with pytest.raises(ExchangeError, match="599"):
        exchange_once(meter)
    captured = [json.loads(d)["work"] for s, _, d in meter.comms.http.seen if s == 200][0][0]
    assert captured["op"] == "relay"
    skew(meter.clock, 3600)                          # an hour later: it has expired
    replayed = dict(captured, expires=str(captured["expires"]))
    status = meter.dispatcher.handle(replayed)
    assert meter.relay == "closed", "the expired relay op ran again (expires as a string)"
    assert status == "rejected"
    # and as it was signed, it is refused as expired, not run
    assert meter.dispatcher.handle(dict(captured)) == "expired"
    assert meter.relay == "closed"


def test_old_relay_open_replayed_after_a_hundred_other_items_does_not_run(site):
    """The meter forgot which work it ran after 64 ids: an old `relay open` (not expired)
    replayed after a hundred reads ran again. Work carries a per-device seq now, and the
    meter refuses anything below its window, for any expiry."""
    meter = site.meter()
    site.op.work("meter-a", "relay", {"state": "open"}, expires_in=30 * 86400)
    exchange_once(meter)
    assert meter.relay == "open"
    exchange_once(meter)        # its outcome: an operator's next relay waits for it (policy.py)
    site.op.work("meter-a", "relay", {"state": "closed"})
    for _ in range(100):
        site.op.work("meter-a", "read")
    for _ in range(60):
        if not exchange_once(meter):
            break
    assert meter.relay == "closed"
    assert sum(w["op"] == "read" for w in delivered(meter)) == 100
    old = [w for w in delivered(meter) if w["op"] == "relay"][0]
    assert meter.dispatcher.handle(dict(old)) in ("rejected", "duplicate")
    assert meter.relay == "closed", "a replayed old relay op ran again"


def test_work_signed_for_another_meter_does_not_run(site):
    """Two meters with the same key (a batch provisioned alike): work for one is not work for
    the other."""
    a = site.meter("meter-a")
    site.op.work("meter-a", "relay", {"state": "open"})
    exchange_once(a)
    item = delivered(a)[0]
    b = site.meter("meter-b")
    b.dispatcher.key = a.dispatcher.key
    assert b.dispatcher.handle(dict(item)) == "rejected"
    assert b.relay == "closed"


# --- responses bound to requests ---

def test_replayed_old_response_does_not_rewind_the_clock(site):
    """The attacker recorded a signed response from 200 s ago; once the meter's clock is
    right again, they answer its next request with the old one."""
    meter = site.meter()
    real_now = site.he.hub.now
    site.he.hub.now = lambda: real_now() - 200
    exchange_once(meter)
    old = meter.comms.http.seen[-1]
    site.he.hub.now = real_now
    exchange_once(meter)
    assert abs(meter.clock.now() - time.time()) < 3
    site.op.work("meter-a", "relay", {"state": "open"})
    meter.comms.http.answer_with = old
    with pytest.raises(ExchangeError, match="does not answer this request"):
        exchange_once(meter)
    assert abs(meter.clock.now() - time.time()) < 3, "a replayed response rewound the clock"


def test_signed_answer_to_another_meters_request_is_refused(site):
    """An answer signed for meter-a's request, replayed to meter-b sharing the key."""
    a = site.meter("meter-a")
    exchange_once(a)
    b = site.meter("meter-b")
    b.comms.key = a.comms.key
    b.comms.http.answer_with = a.comms.http.seen[-1]
    with pytest.raises(ExchangeError, match="does not answer this request"):
        exchange_once(b)


def test_mqtt_push_bound_to_an_earlier_connection_is_refused(site):
    """A push the head-end made for the meter's previous connection (held by the broker's
    persistent session, or replayed by someone who can publish on down) reaches the meter
    on its new connection: it is not applied."""
    meter = site.meter()
    link = mqtt_link(meter)
    first = link.conn
    body = {"v": 2, "device": "meter-a", "epoch": meter.outbox.epoch, "ts": int(time.time()),
            "nonce": "ab" * 8,
            "conn": first, "wait": 0, "room": 4}
    raw = json.dumps(body).encode()
    sig = envelope.sign(link.key, raw)
    asyncio.run(exchange.handle(site.he.hub, raw, sig, "mqtt", topic_device="meter-a"))
    site.op.work("meter-a", "relay", {"state": "open"})
    push = exchange.push(site.he.hub, "meter-a")
    assert push is not None and push["work"]
    data, psig = exchange.signed(devices.get(site.he.hub.db, "meter-a")["key"], push)
    link.new_connection()                   # the meter reconnected
    link.on_message(link.t_down, psig.encode() + b" " + data)
    assert meter.relay == "closed", "a push bound to another connection ran"
    assert "no request of this connection" in (link.last_error or "")
    # on the connection it was made for, it runs
    link.conn = first
    link.on_message(link.t_down, psig.encode() + b" " + data)
    assert meter.relay == "open"


def test_mqtt_push_does_not_set_the_clock(site):
    meter = site.meter()
    link = mqtt_link(meter)
    push = dict(exchange.bind("meter-a", conn=link.conn), ack=0, work=[], more=False,
                next=30, time=time.time() - 5000)
    key = devices.get(site.he.hub.db, "meter-a")["key"]
    data, sig = exchange.signed(key, push)
    link.on_message(link.t_down, sig.encode() + b" " + data)
    assert abs(meter.clock.now() - time.time()) < 3, "a push set the clock"


# --- version ---

def test_a_v1_request_is_refused_with_a_clear_error(site):
    m = site.he.meter(site.client, "meter-old")
    env = dict(m.envelope(), v=1)
    r = m.post(env)
    assert r.status_code == 400 and "protocol version 1" in r.json()["error"]
    assert site.he.count("nonces", "meter-old") == 0


def test_wire_work_carries_device_and_seq(site):
    """Work sequences are per device, increase, and stay the same on redelivery."""
    m = site.he.meter(site.client, "meter-s")
    for _ in range(3):
        site.op.work("meter-s", "read")
    first = m.exchange(room=2)["work"]
    again = m.exchange(room=4)["work"]
    assert [w["seq"] for w in first] == [1, 2]
    assert [w["seq"] for w in again] == [1, 2, 3]          # 1, 2 redelivered, not executed
    assert all(w["device"] == "meter-s" for w in again)
    row = site.he.hub.db.one("SELECT work_seq FROM devices WHERE id = 'meter-s'")
    assert row["work_seq"] == 3 and workq.num_of(again[2]["id"]) is not None


# --- outbox epochs ---

def test_a_wiped_meter_loses_nothing(site):
    """A field crew wipes the meter's flash (or swaps the board) mid-run: its new outbox
    restarts at seq 1. Its items are stored, not taken for copies of the old ones, and the
    old life's items stay as they were."""
    first = site.meter()
    for i in range(5):
        first.outbox.offer("reading", {"life": 1, "i": i})
    exchange_once(first)
    assert first.outbox.depth() == 0
    old = site.he.hub.db.all("SELECT seq, body FROM items WHERE device = 'meter-a' AND "
                             "kind = 'reading' ORDER BY seq")
    wiped = site.meter(state="wiped")                    # the same meter, a fresh flash
    assert wiped.outbox.epoch != first.outbox.epoch
    for i in range(3):
        wiped.outbox.offer("reading", {"life": 2, "i": i})
    exchange_once(wiped)
    readings = [json.loads(r["body"]) for r in site.he.hub.db.all(
        "SELECT body FROM items WHERE device = 'meter-a' AND kind = 'reading' ORDER BY rowid")]
    assert [r["life"] for r in readings] == [1] * 5 + [2] * 3, "the new life's items were lost"
    assert site.he.hub.db.all("SELECT seq, body FROM items WHERE device = 'meter-a' AND "
                              "kind = 'reading' AND epoch = ? ORDER BY seq",
                              first.outbox.epoch) == old
    events = site.op.get("/v1/devices/meter-a/events").json()
    assert [e["body"]["previous"] for e in events
            if e["body"].get("what") == "new outbox epoch"] == [first.outbox.epoch]


def test_an_ack_of_the_old_epoch_does_not_delete_the_new_outbox(site):
    """The head-end's ack of the old life (a high seq) reaches the wiped meter: it must not
    delete its new, unsent items."""
    first = site.meter()
    for i in range(20):
        first.outbox.offer("reading", {"i": i})
    exchange_once(first)
    old_answer = first.comms.http.seen[-1]
    wiped = site.meter(state="wiped")
    wiped.outbox.offer("reading", {"i": 0})
    resp = json.loads(old_answer[2])
    resp.update(re="00" * 8)
    from comms import apply_response

    apply_response(wiped.comms, resp)
    assert wiped.outbox.depth() == 1
