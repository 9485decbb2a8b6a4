"""The exchange endpoint: ack contiguity, idempotence, signatures, rejections that store
nothing, delivery with room/more, redelivery until done, results."""

import json
import time

import pytest
from budget import examples
from fastapi.testclient import TestClient
from headend_fake_meter import hmac_hex
from headend_harness import Headend, client, headend, op  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def test_exchange_signed_and_acks_contiguous_seq(client, headend):
    m = headend.meter(client, "meter-a")
    for _ in range(3):
        m.reading()
    body = m.exchange()
    assert body["ack"] == 3 and body["work"] == [] and body["more"] is False
    assert body["next"] == 0 and abs(body["time"] - time.time()) < 5
    assert m.outbox == []
    assert headend.count("items", "meter-a") == 3


def test_gap_holds_ack_back_but_later_items_are_stored(client, headend):
    m = headend.meter(client, "meter-a")
    items = [{"seq": s, "kind": "reading", "body": {"vrms": 230.0 + s}} for s in (1, 2, 4, 5)]
    assert m.exchange(items=items)["ack"] == 2
    assert headend.count("items", "meter-a") == 4
    assert m.exchange(items=[{"seq": 3, "kind": "event", "body": {"kind": "dip"}}])["ack"] == 5
    gap = [{"seq": s, "kind": "reading", "body": {}} for s in (6, 8)]
    assert m.exchange(items=gap)["ack"] == 6


def test_resent_items_are_stored_once(client, headend):
    m = headend.meter(client, "meter-a")
    m.reading()
    m.reading()
    items = list(m.outbox)
    assert m.exchange()["ack"] == 2
    assert m.exchange(items=items)["ack"] == 2          # the response was "lost": resend
    assert headend.count("items", "meter-a") == 2
    assert len(client.get("/v1/devices/meter-a/readings",
                          headers=headend.auth(headend.op_token)).json()) == 2


def test_seqs_the_meter_skipped_do_not_hold_the_ack_forever(client, headend):
    m = headend.meter(client, "meter-a", first_seq=500)
    m.reading()
    assert m.exchange()["ack"] == 500                    # the first items set the start
    m.reading()
    m.next_seq = 533                                     # a restart skips reserved seqs
    m.reading()
    assert m.exchange()["ack"] == 501                    # 502..532 missing: held back once
    assert [i["seq"] for i in m.outbox] == [533]
    assert m.exchange()["ack"] == 533                    # oldest unacked is 533: skip the gap
    m.add("notice", {"what": "dropped_overflow", "count": 2})
    assert m.exchange()["ack"] == 534


def _stored(headend):
    return {t: headend.count(t) for t in ("items", "nonces", "work", "presence")}


@pytest.mark.parametrize("case,status", [
    ("bad_signature", 401), ("missing_signature", 401), ("unknown_device", 401),
    ("malformed_json", 400), ("not_object", 400), ("wrong_type", 400), ("missing_field", 400),
    ("bad_nonce", 400), ("stale_ts", 409), ("future_ts", 409), ("nan_ts", 400),
    ("oversize", 413),
])
def test_rejections_store_nothing(client, headend, case, status):
    m = headend.meter(client, "meter-a")
    m.reading()
    m.presence("available")
    env = m.envelope()
    before = _stored(headend)
    sig, raw = None, None
    if case == "bad_signature":
        sig = "0" * 64
    elif case == "missing_signature":
        sig = False
    elif case == "unknown_device":
        env["device"] = "meter-x"
    elif case == "malformed_json":
        raw = b'{"v": 2, "device": "meter-a",'
        sig = hmac_hex(m.key, raw)
    elif case == "not_object":
        raw = b"[1, 2]"
        sig = hmac_hex(m.key, raw)
    elif case == "wrong_type":
        env["room"] = "4"
    elif case == "missing_field":
        del env["nonce"]
    elif case == "bad_nonce":
        env["nonce"] = "xyz"
    elif case == "stale_ts":
        env["ts"] = time.time() - 400
    elif case == "future_ts":
        env["ts"] = time.time() + 400
    elif case == "nan_ts":
        raw = json.dumps(env).replace('"ts": %r' % env["ts"], '"ts": NaN').encode()
        sig = hmac_hex(m.key, raw)
    elif case == "oversize":
        env["items"].append({"seq": 3, "kind": "notice", "body": {"pad": "x" * 300_000}})
    r = m.post(env, sig=sig, raw=raw)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert _stored(headend) == before


def test_replayed_nonce_is_409_and_not_stored_twice(client, headend):
    m = headend.meter(client, "meter-a")
    m.reading()
    env = m.envelope()
    assert m.post(env).status_code == 200
    m2 = m.envelope(items=[{"seq": 2, "kind": "reading", "body": {}}], nonce=env["nonce"])
    r = m.post(m2)
    assert r.status_code == 409 and "nonce" in r.json()["error"]
    assert headend.count("items") == 1


def test_work_delivery_respects_room_and_more(client, headend, op):
    m = headend.meter(client, "meter-a")
    ids = [op.work("meter-a", "read")["id"] for _ in range(3)]
    body = m.exchange(room=2)
    assert [w["id"] for w in body["work"]] == ids[:2] and body["more"] is True
    w = body["work"][0]
    assert w["role"] == "operator" and w["from"] == "operator:alice"
    assert isinstance(w["expires"], int) and w["expires"] > time.time() + 3000
    assert op.status(ids[0]) == "delivered"
    body = m.exchange(room=0)
    assert body["work"] == [] and body["more"] is True


def test_redelivered_until_done_then_result_is_the_outcome(client, headend, op):
    m = headend.meter(client, "meter-a")
    wid = op.work("meter-a", "read")["id"]
    assert [w["id"] for w in m.exchange()["work"]] == [wid]
    assert [w["id"] for w in m.exchange()["work"]] == [wid]   # not in done: again
    m.done = [wid]                                            # executed, result not yet sent
    assert m.exchange()["work"] == []
    assert op.status(wid) == "delivered"
    m.result(wid, "done", {"vrms": 230.1})
    m.exchange()
    w = op.get("/v1/work/%s" % wid).json()
    assert w["status"] == "done" and w["result"] == {"vrms": 230.1} and w["deliveries"] == 2
    assert m.exchange()["work"] == []
    m.result(wid, "rejected", reason="late duplicate")       # first outcome wins
    m.exchange()
    assert op.status(wid) == "done"


def test_rejected_and_unknown_op_results(client, headend, op):
    m = headend.meter(client, "meter-a")
    a = op.work("meter-a", "set_config", {"changes": {"dip_pct": 5}})["id"]
    b = op.work("meter-a", "fly")["id"]
    m.exchange()
    m.result(a, "rejected", reason="dip_pct must be between 50.0 and 99.0")
    m.result(b, "unknown_op")
    m.done = [a, b]
    m.exchange()
    assert op.get("/v1/work/%s" % a).json()["reason"].startswith("dip_pct")
    assert op.status(a) == "rejected" and op.status(b) == "unknown_op"


def test_the_devices_poll_is_next(client, headend, op):
    m = headend.meter(client, "meter-a")
    assert m.exchange()["next"] == 0
    assert op.patch("/v1/devices/meter-a", json={"poll": 90}).status_code == 200
    assert m.exchange()["next"] == 90
    assert op.patch("/v1/devices/meter-a", json={"poll": 0}).status_code == 200
    assert m.exchange()["next"] == 0


def test_expiry_before_delivery_and_before_result(client, headend, op):
    m = headend.meter(client, "meter-a")
    undelivered = op.work("meter-a", "read", expires_in=1)["id"]
    m2 = headend.meter(client, "meter-b")
    unanswered = op.work("meter-b", "read", expires_in=1)["id"]
    assert [w["id"] for w in m2.exchange()["work"]] == [unanswered]
    # expires is whole seconds (up to 2 s from now), then the next sweep: on PostgreSQL the
    # elected leader's, a busy CI machine's scheduling on top
    deadline = time.time() + 6
    while op.status(unanswered) != "expired" or op.status(undelivered) != "expired":
        assert time.time() < deadline
        time.sleep(0.05)
    w = op.get("/v1/work/%s" % undelivered).json()
    assert w["status"] == "expired" and w["reason"] == "expired before delivery"
    assert op.get("/v1/work/%s" % unanswered).json()["reason"] == "no result before expiry"
    assert m.exchange()["work"] == [] and m2.exchange()["work"] == []


def test_expiry_checked_at_exchange_time_without_the_background_task(tmp_path):
    h = Headend(tmp_path, sweep_interval=3600)
    c = TestClient(h.app)       # no lifespan: no background task at all
    m = h.meter(c, "meter-a")
    r = c.post("/v1/devices/meter-a/work", json={"op": "read", "expires_in": 1},
               headers=h.auth(h.op_token))
    time.sleep(2.05)            # expires is whole seconds, at least expires_in from now
    assert m.exchange()["work"] == []
    assert c.get("/v1/work/%s" % r.json()["id"],
                 headers=h.auth(h.op_token)).json()["status"] == "expired"


def test_cancel_before_delivery_only(client, headend, op):
    m = headend.meter(client, "meter-a")
    a = op.work("meter-a", "read")["id"]
    b = op.work("meter-a", "relay", {"state": "open"})["id"]
    r = op.delete("/v1/work/%s" % b)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert [w["id"] for w in m.exchange()["work"]] == [a]
    r = op.delete("/v1/work/%s" % a)
    assert r.status_code == 409 and "delivered" in r.json()["error"]
    assert op.delete("/v1/work/w-99999999").status_code == 404
    assert op.delete("/v1/work/nonsense").status_code == 404


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), data=st.data())
def test_ack_is_highest_contiguous_seq_property(tmp_path_factory, n, data):
    h = Headend(tmp_path_factory.mktemp("ack"))
    c = TestClient(h.app)
    m = h.meter(c, "meter-a")
    sent = set()
    batches = data.draw(st.lists(st.sets(st.integers(1, n), min_size=1), min_size=1, max_size=6))
    expect = None
    for batch in batches:
        items = [{"seq": s, "kind": "reading", "body": {"s": s}} for s in sorted(batch)]
        ack = m.exchange(items=items)["ack"]
        sent |= batch
        # nothing below the request's first item can still come; above it, contiguity
        expect = max(expect if expect is not None else 0, min(batch) - 1)
        while expect + 1 in sent:
            expect += 1
        assert ack == expect
    assert h.count("items") == len(sent)
    h.hub.db.close()


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8)
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)
_fields = st.sampled_from(["work", "status", "body", "reason", "state", "note", "to", "ref",
                           "op", "args", "expires_in", "seqs"])


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["result", "presence", "send", "notice", "reading", "other"]),
       body=st.dictionaries(_fields, _json, max_size=5))
def test_odd_item_bodies_are_stored_and_acked_never_500(tmp_path_factory, kind, body):
    h = Headend(tmp_path_factory.mktemp("odd"))
    c = TestClient(h.app)
    m = h.meter(c, "meter-a")
    h.meter(c, "meter-b")
    m.add(kind, body)
    assert m.exchange()["ack"] == 1
    h.hub.db.close()


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(["v", "ts", "nonce", "wait", "room", "done",
                                                "items"]), _json, min_size=1, max_size=3))
def test_signed_but_odd_envelopes_get_400_or_409_never_500(tmp_path_factory, changes):
    h = Headend(tmp_path_factory.mktemp("env"))
    c = TestClient(h.app)
    m = h.meter(c, "meter-a")
    env = dict(m.envelope(), **changes)
    r = m.post(env)
    assert r.status_code in (200, 400, 409), r.text
    if r.status_code != 200:
        assert r.json()["error"] and h.count("nonces") == 0
    h.hub.db.close()
