"""Rendezvous: meter A sends work to meter B through the head-end; B's result comes back
to A as a `message` work item, through the transform hook."""

import headend_hooks
import pytest
from fastapi.testclient import TestClient
from headend_harness import ALLOW_PEERS, Api, Headend

pytestmark = pytest.mark.unit


def _pair(tmp_path, **kw):
    h = Headend(tmp_path, **dict(dict(peer_rules=ALLOW_PEERS), **kw))
    c = TestClient(h.app)
    return h, c, h.meter(c, "meter-a"), h.meter(c, "meter-b"), Api(c, h.op_token)


def test_rendezvous_a_to_b_to_a_with_transform_hook(tmp_path):
    headend_hooks.CALLS.clear()
    h, c, a, b, op = _pair(tmp_path, transform="headend_hooks:tag")
    a.add("send", {"to": "meter-b", "ref": "a-7", "op": "read", "args": {}})
    assert a.exchange()["ack"] == 1
    work = b.exchange()["work"]
    assert len(work) == 1
    w = work[0]
    assert (w["op"], w["role"], w["from"]) == ("read", "peer", "device:meter-a")
    b.execute(work, lambda w: ("done", {"vrms": 230.1, "secret": "x"}))
    b.exchange()
    assert op.status(w["id"]) == "done"
    msgs = a.exchange()["work"]
    assert len(msgs) == 1
    m = msgs[0]
    assert m["op"] == "message" and m["role"] == "operator" and m["from"] == "device:meter-b"
    assert m["args"] == {"from": "meter-b", "ref": "a-7", "routed": "meter-b->meter-a",
                         "result": {"status": "done", "body": {"vrms": 230.1}}}
    assert headend_hooks.CALLS == [("meter-a", "meter-b")]
    a.execute(msgs)
    a.exchange()
    assert op.status(m["id"]) == "done"
    assert b.exchange()["work"] == [] and a.exchange()["work"] == []


def test_resent_send_routes_once(tmp_path):
    h, c, a, b, op = _pair(tmp_path)
    a.add("send", {"to": "meter-b", "ref": 1, "op": "get_events", "args": {"limit": 3}})
    items = list(a.outbox)
    a.exchange()
    a.exchange(items=items)
    assert len(b.exchange(room=10)["work"]) == 1


def test_unknown_target_and_non_peer_op_are_rejected_back_to_sender(tmp_path):
    h, c, a, b, op = _pair(tmp_path)
    a.add("send", {"to": "meter-z", "ref": "r1", "op": "read", "args": {}})
    a.add("send", {"to": "meter-b", "ref": "r2", "op": "reset_energy", "args": {}})
    a.exchange()
    msgs = {m["args"]["ref"]: m["args"] for m in a.exchange()["work"]}
    assert msgs["r1"]["result"]["status"] == "rejected"
    assert "unknown device" in msgs["r1"]["result"]["reason"]
    assert "never allowed from a peer" in msgs["r2"]["result"]["reason"]
    assert b.exchange()["work"] == []


def test_peer_work_expiring_or_cancelled_tells_the_sender(tmp_path):
    h, c, a, b, op = _pair(tmp_path)
    a.add("send", {"to": "meter-b", "ref": "r", "op": "read", "args": {}})
    a.exchange()
    wid = h.hub.db.one("SELECT num FROM work WHERE device = 'meter-b'")["num"]
    assert op.delete("/v1/work/w-%08d" % wid).json()["status"] == "cancelled"
    (m,) = a.exchange()["work"]
    assert m["args"]["result"] == {"status": "cancelled", "reason": "cancelled by operator"}


def test_failing_hook_fails_closed(tmp_path):
    h, c, a, b, op = _pair(tmp_path, transform="headend_hooks:broken")
    a.add("send", {"to": "meter-b", "ref": "r", "op": "read", "args": {}})
    a.exchange()
    b.execute(b.exchange()["work"], lambda w: ("done", {"secret": 1}))
    b.exchange()
    (m,) = a.exchange()["work"]
    assert m["args"]["result"] == {"status": "rejected", "reason": "transform failed"}


def test_transform_callable_passed_to_create_app(tmp_path):
    h = Headend(tmp_path, transform=lambda msg, s, t: dict(msg, seen=True),
                peer_rules=ALLOW_PEERS)
    c = TestClient(h.app)
    a, b = h.meter(c, "meter-a"), h.meter(c, "meter-b")
    a.add("send", {"to": "meter-b", "ref": "r", "op": "read", "args": {}})
    a.exchange()
    b.execute(b.exchange()["work"])
    b.exchange()
    assert a.exchange()["work"][0]["args"]["seen"] is True
