"""Group commands: an outcome per member; when_available holds items until the member is
available (not while available_restricted), up to a deadline."""

import time

import pytest
from headend_harness import Api, client, headend, op  # noqa: F401

pytestmark = pytest.mark.unit


def _meters(headend, client, *names):
    return {n: headend.meter(client, n) for n in names}


def test_group_command_outcome_per_member(client, headend, op):
    ms = _meters(headend, client, "m1", "m2", "m3")
    r = op.post("/v1/groups", json={"name": "feeder-7", "members": ["m1", "m2", "m3"]})
    assert r.status_code == 201 and r.json()["members"] == ["m1", "m2", "m3"]
    r = op.post("/v1/groups/feeder-7/work", json={"op": "read", "args": {}})
    assert r.status_code == 202
    gid, work = r.json()["gid"], r.json()["work"]
    assert sorted(work) == ["m1", "m2", "m3"]
    ms["m1"].execute(ms["m1"].exchange()["work"])
    ms["m1"].exchange()
    ms["m2"].execute(ms["m2"].exchange()["work"], lambda w: ("unknown_op", {}))
    ms["m2"].exchange()
    op.delete("/v1/work/%s" % work["m3"])
    s = op.get("/v1/groups/feeder-7/work/%d" % gid).json()
    assert {d: o["status"] for d, o in s["outcomes"].items()} == {
        "m1": "done", "m2": "unknown_op", "m3": "cancelled"}
    assert s["counts"] == {"done": 1, "unknown_op": 1, "cancelled": 1}
    assert s["outcomes"]["m1"]["result"] == {"op": "read"}


def test_when_available_held_while_restricted_then_delivered(client, headend, op):
    ms = _meters(headend, client, "m1", "m2")
    op.post("/v1/groups", json={"name": "g", "members": ["m1", "m2"]})
    ms["m1"].presence("available_restricted", "critical process until 13:03")
    ms["m1"].exchange()
    ms["m2"].presence("available")
    ms["m2"].exchange()
    util = Api(client, headend.util_token)      # relay to a group: utility only (policy.py)
    r = util.post("/v1/groups/g/work", json={"op": "relay", "args": {"state": "open"},
                                             "when_available": True, "expires_in": 600})
    gid = r.json()["gid"]
    assert ms["m1"].exchange()["work"] == []
    assert len(ms["m2"].exchange()["work"]) == 1
    s = op.get("/v1/groups/g/work/%d" % gid).json()
    assert {d: o["status"] for d, o in s["outcomes"].items()} == {"m1": "held", "m2": "delivered"}
    ms["m1"].presence("available")
    (w,) = ms["m1"].exchange()["work"]                 # available again: delivered at once
    assert w["op"] == "relay"
    assert op.get("/v1/groups/g/work/%d" % gid).json()["outcomes"]["m1"]["status"] == "delivered"


def test_when_available_deadline_expires_held_items(client, headend, op):
    ms = _meters(headend, client, "m1")
    op.post("/v1/groups", json={"name": "g", "members": ["m1"]})
    ms["m1"].presence("unavailable")
    ms["m1"].exchange()
    r = op.post("/v1/groups/g/work", json={"op": "read", "when_available": True,
                                           "deadline": time.time() + 0.5})
    gid = r.json()["gid"]
    assert op.get("/v1/groups/g/work/%d" % gid).json()["counts"] == {"held": 1}
    deadline = time.time() + 4
    while True:
        s = op.get("/v1/groups/g/work/%d" % gid).json()
        if s["counts"] == {"expired": 1}:
            break
        assert time.time() < deadline, s
        time.sleep(0.1)
    assert "not available" in s["outcomes"]["m1"]["reason"]
    ms["m1"].presence("available")
    assert ms["m1"].exchange()["work"] == []


def test_group_errors(client, headend, op):
    _meters(headend, client, "m1")
    assert op.post("/v1/groups", json={"name": "g", "members": ["m1", "nope"]}).status_code == 404
    assert op.post("/v1/groups", json={"name": "g", "members": []}).status_code == 422
    assert op.post("/v1/groups", json={"name": "g", "members": ["m1"]}).status_code == 201
    assert op.post("/v1/groups", json={"name": "g", "members": ["m1"]}).status_code == 409
    assert op.post("/v1/groups/none/work", json={"op": "read"}).status_code == 404
    assert op.get("/v1/groups/g/work/99").status_code == 404
    assert op.get("/v1/groups/g/work/abc").status_code == 422
    r = op.post("/v1/groups/g/work", json={"op": "read", "deadline": time.time() - 5})
    assert r.status_code == 400
    r = op.post("/v1/groups/g/work", json={"op": "reset_energy"})
    assert r.status_code == 403


def test_group_cancel_cancels_undelivered(client, headend, op):
    ms = _meters(headend, client, "m1", "m2")
    op.post("/v1/groups", json={"name": "g", "members": ["m1", "m2"]})
    gid = op.post("/v1/groups/g/work", json={"op": "read"}).json()["gid"]
    ms["m1"].exchange()
    s = op.delete("/v1/groups/g/work/%d" % gid).json()
    assert s["counts"] == {"delivered": 1, "cancelled": 1}
