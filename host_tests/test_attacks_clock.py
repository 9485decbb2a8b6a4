"""Attacks on a meter's clock (issue 12, items 3 and 4; docs/security.md), written as the
attacker would try them, against the real firmware (CPython, in-process) and the real
head-end (in-process through TestClient, protocol_site.py): a clock rewound by set_time, a
board clock that starts in 2000 or 2040, forged and repeated time refusals, over HTTP and
MQTT."""

import asyncio
import json
import time

import envelope
import pytest
from comms import ExchangeError
from protocol_site import (
    Y2000,
    Y2040,
    exchange_once,
    mqtt_link,
    site,  # noqa: F401 - the fixture
)

from headend import exchange

pytestmark = pytest.mark.unit


def test_operator_set_time_to_2000_is_refused(site):
    """An operator token rewinds a meter's clock by years: its next request is outside the
    replay window (and its readings carry the wrong time). set_time needs a utility token
    (403), and even a utility's is bounded on the meter."""
    meter = site.meter()
    r = site.op.post("/v1/devices/meter-a/work", json={"op": "set_time",
                                                       "args": {"unix": Y2000}})
    assert r.status_code == 403 and "utility" in r.json()["error"]
    wid = site.util.work("meter-a", "set_time", {"unix": Y2000})["id"]
    exchange_once(meter)
    exchange_once(meter)
    assert abs(meter.clock.now() - time.time()) < 3, "set_time moved the clock by years"
    assert site.op.status(wid) == "rejected"


def test_time_refusal_is_signed_bound_and_carries_the_server_time(site):
    m = site.he.meter(site.client, "meter-t")
    env = m.envelope(ts=Y2000)
    r = m.post(env)
    assert r.status_code == 409
    assert envelope.same(r.headers.get("x-bc-signature", ""),
                         envelope.sign(bytes.fromhex(m.key), r.content)), "refusal not signed"
    body = r.json()
    assert body["re"] == env["nonce"] and body["device"] == "meter-t" and body["dir"] == "down"
    assert abs(body["time"] - time.time()) < 5
    assert site.he.count("nonces", "meter-t") == 0      # nothing stored
    # a request with a bad signature gets no signed time (and no work, and nothing stored)
    r = m.post(m.envelope(ts=Y2000), sig="00" * 32)
    assert r.status_code == 401 and "x-bc-signature" not in r.headers


@pytest.mark.parametrize("start", [Y2000, Y2040], ids=["2000", "2040"])
def test_meter_with_a_wrong_board_clock_joins_within_two_exchanges(site, start):
    meter = site.meter(clock_offset=start - time.time())
    meter.outbox.offer("reading", {"t": 1})
    assert exchange_once(meter) is True             # refused with the time, adopted
    assert abs(meter.clock.now() - time.time()) < 3
    exchange_once(meter)
    assert meter.comms.exchanges == 1 and meter.outbox.depth() == 0
    assert site.he.count("items", "meter-a") >= 1


def test_a_forged_time_refusal_is_ignored(site):
    """Someone on the path answers the meter's request with a 409 claiming it is 2040."""
    meter = site.meter()
    forged = json.dumps(dict(exchange.bind("meter-a", "00" * 8), error="ts", time=Y2040))
    meter.comms.http.answer_with = (409, {"x-bc-signature": "00" * 32}, forged.encode())
    with pytest.raises(ExchangeError, match="409"):
        exchange_once(meter)
    assert abs(meter.clock.now() - time.time()) < 3




def test_a_second_time_refusal_in_a_row_backs_off_then_the_next_try_adopts(site):
    """A path slower than the replay window must not spin: refused again right after
    adopting, the meter backs off once; its next try adopts the time again."""
    meter = site.meter(clock_offset=Y2000 - time.time())
    real_now = site.he.hub.now
    assert exchange_once(meter) is True                   # adopted
    site.he.hub.now = lambda: real_now() + 1000           # the head-end's clock jumps
    with pytest.raises(ExchangeError, match="409"):
        exchange_once(meter)                              # refused again: a failure
    assert exchange_once(meter) is True                   # adopted again
    exchange_once(meter)
    assert meter.comms.exchanges == 1


def test_mqtt_time_refusal_is_adopted_and_the_up_sent_again(site):
    """Over MQTT the refusal of an up comes on `down`, signed and bound to the up's nonce."""
    meter = site.meter(clock_offset=Y2040 - time.time())
    link = mqtt_link(meter)
    body = {"v": 2, "device": "meter-a", "epoch": meter.outbox.epoch,
            "ts": int(meter.clock.now()), "nonce": "cd" * 8, "conn": link.conn, "wait": 0,
            "room": 4}
    raw = json.dumps(body).encode()
    with pytest.raises(exchange.Refused) as refused:
        asyncio.run(exchange.handle(site.he.hub, raw, envelope.sign(link.key, raw), "mqtt",
                                    topic_device="meter-a"))
    data, sig = exchange.signed(refused.value.key, refused.value.answer)
    link.awaiting, link.sent_nonce = 1, "ab" * 8          # another up is outstanding
    link.on_message(link.t_down, sig.encode() + b" " + data)
    assert abs(meter.clock.now() - time.time()) > 3600, "a refusal of another up was adopted"
    link.sent_nonce = body["nonce"]
    link.on_message(link.t_down, sig.encode() + b" " + data)
    assert abs(meter.clock.now() - time.time()) < 3
    assert link.want_up and link.awaiting is None
