"""Quotas and the per-address cap, attacked as an attacker would (issue 12, item 9 "Head-end
limits"): an operator token or a peer that floods one meter's queue with work, a group
command that would overflow one member, and a client that guesses tokens or device keys as
fast as the head-end answers. Every refusal is a 429 with a clear reason and Retry-After;
nothing already queued is lost and nobody else is held up."""

import time

import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter
from headend_harness import ALLOW_PEERS, Api, Headend

from headend import groups, ipgate

pytestmark = pytest.mark.unit


def _site(tmp_path, **settings):
    he = Headend(tmp_path, **settings)
    client = TestClient(he.app)
    return he, client, Api(client, he.op_token)


def test_flooding_one_meters_queue_is_refused_and_loses_nothing(tmp_path):
    he, client, op = _site(tmp_path, max_open_work=20)
    m = he.meter(client, "victim")
    he.meter(client, "other")
    codes = [op.post("/v1/devices/victim/work", json={"op": "read"}) for _ in range(25)]
    assert [r.status_code for r in codes] == [202] * 20 + [429] * 5
    r = codes[-1]
    assert r.json()["error"] == ("victim has 20 work items open (quota 20): let them run or "
                                 "expire, or cancel some")
    assert int(r.headers["Retry-After"]) > 0
    assert he.count("work", "victim") == 20                   # nothing queued was dropped
    assert op.post("/v1/devices/other/work", json={"op": "read"}).status_code == 202
    for _ in range(10):                                       # the meter works through it
        work = m.exchange()["work"]
        if not work:
            break
        m.execute(work)
    m.exchange()
    assert op.post("/v1/devices/victim/work", json={"op": "read"}).status_code == 202


def test_a_few_huge_items_hit_the_byte_quota(tmp_path):
    he, client, op = _site(tmp_path, max_open_bytes=100_000)
    he.meter(client, "victim")
    pad = {"note": "x" * 20_000}
    codes = [op.post("/v1/devices/victim/work", json={"op": "message", "args": pad}).status_code
             for _ in range(6)]
    assert codes == [202] * 4 + [429] * 2
    r = op.post("/v1/devices/victim/work", json={"op": "message", "args": pad})
    assert "bytes of work open (quota 100000)" in r.json()["error"]


def test_a_group_command_that_would_overflow_one_member_queues_nothing(tmp_path):
    he, client, op = _site(tmp_path, max_open_work=3)
    for m in ("m1", "m2", "m3"):
        he.meter(client, m)
    groups.create(he.hub.db, "g", ["m1", "m2", "m3"])
    for _ in range(3):
        op.work("m2", "read")
    r = op.post("/v1/groups/g/work", json={"op": "read"})
    assert r.status_code == 429 and r.json()["error"].startswith("m2 has 3 work items open")
    assert (he.count("work", "m1"), he.count("work", "m2"), he.count("work", "m3")) == (0, 3, 0)
    assert he.count("group_work") == 0


def test_a_peer_cannot_flood_another_meters_queue(tmp_path):
    he, client, op = _site(tmp_path, max_open_work=5, peer_rules=ALLOW_PEERS,
                           peer_sends_per_minute=100)
    a, _ = he.meter(client, "a1"), he.meter(client, "b1")
    for i in range(8):
        a.add("send", {"to": "b1", "ref": i, "op": "read", "args": {}})
    a.exchange()
    assert he.count("work", "b1") == 5
    reasons = set()
    for _ in range(4):
        work = a.exchange()["work"]
        a.execute(work)
        reasons |= {w["args"]["result"].get("reason") for w in work if w["op"] == "message"}
    assert reasons == {"b1 has 5 work items open (quota 5): let them run or expire, or "
                       "cancel some"}


# --- the per-address cap on failed authentications ---

def _gated(tmp_path, limit=10):
    he = Headend(tmp_path, unauth_per_minute=limit)
    attacker = TestClient(he.app, client=("203.0.113.9", 40000))
    honest = TestClient(he.app, client=("198.51.100.7", 40000))
    return he, attacker, honest


def test_guessing_tokens_from_one_address_is_capped(tmp_path):
    he, attacker, honest = _gated(tmp_path)
    codes = [attacker.get("/v1/devices", headers={"Authorization": "Bearer guess-%026d" % i}
                          ).status_code for i in range(14)]
    assert codes == [401] * 10 + [429] * 4
    r = attacker.get("/v1/devices", headers=Api(None, he.op_token).headers)
    assert r.status_code == 429, "a right guess after the cap must not be checked at all"
    assert "too many failed authentications from 203.0.113.9" in r.json()["error"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert honest.get("/v1/devices", headers=Api(None, he.op_token).headers).status_code == 200


def test_the_cap_lifts_after_the_minute(tmp_path, monkeypatch):
    he, attacker, honest = _gated(tmp_path, limit=3)
    for _ in range(3):
        attacker.get("/v1/devices", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
    assert attacker.get("/v1/health").status_code == 429
    later = time.monotonic() + 61
    monkeypatch.setattr(ipgate.time, "monotonic", lambda: later)
    assert attacker.get("/v1/devices", headers=Api(None, he.op_token).headers
                        ).status_code == 200


def test_guessing_device_keys_over_the_exchange_is_capped(tmp_path):
    he, attacker, honest = _gated(tmp_path, limit=5)
    real = he.meter(honest, "meter-a")
    wrong = FakeMeter(attacker, "meter-a", "00" * 32)
    for _ in range(5):
        with pytest.raises(AssertionError):
            wrong.exchange()                                  # 401 each
    r = attacker.post("/v1/exchange", content=b"{}", headers={"X-BC-Signature": "0" * 64})
    assert r.status_code == 429 and r.headers["Retry-After"]
    assert real.exchange() is not None                        # the real meter is not held up


def test_authenticated_traffic_is_never_counted(tmp_path):
    he, attacker, honest = _gated(tmp_path, limit=2)
    h = Api(None, he.op_token).headers
    for _ in range(30):
        assert honest.get("/v1/devices", headers=h).status_code == 200
    assert honest.get("/v1/devices/none", headers=h).status_code == 404     # 404 is not 401
