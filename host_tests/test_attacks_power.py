"""Attacks on power and time (issue 12, items 2 and 4; tools/headend/policy.py), written as
the attacker would try them: an operator token that flaps one meter's relay, sweeps the
fleet's relays one meter after another, opens a whole group at once or sets the time; and a
stolen meter key that asks its peers to open their relays (peers are denied by default)."""

import envelope
import fuzz_parsers as fz
import ops
import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend
from inbox import Inbox

from headend import groups, webapp
from headend.settings import Settings

pytestmark = pytest.mark.unit

OPEN = {"state": "open"}


@pytest.fixture
def site(tmp_path):
    return _site(tmp_path)


def _site(tmp_path, **settings):
    he = Headend(tmp_path, **settings)
    client = TestClient(he.app)
    return he, client, Api(client, he.op_token), Api(client, he.util_token)


def test_operator_cannot_flap_one_meters_relay(site):
    he, client, op, util = site
    m = he.meter(client, "meter-a")
    first = op.work("meter-a", "relay", OPEN)["id"]
    for state in ("closed", "open", "closed"):
        r = op.post("/v1/devices/meter-a/work", json={"op": "relay", "args": {"state": state}})
        assert r.status_code == 409 and first in r.json()["error"], r.text
    assert he.count("work", "meter-a") == 1
    (w,) = m.exchange()["work"]
    m.execute([w], lambda w: ("done", OPEN))
    m.exchange()                                        # its outcome is in: the next may go
    assert op.work("meter-a", "relay", {"state": "closed"})["status"] == "queued"


def test_a_retried_relay_with_its_idempotency_key_is_not_refused(site):
    he, client, op, util = site
    he.meter(client, "meter-a")
    h = dict(op.headers, **{"Idempotency-Key": "k-relay-1"})
    r1 = client.post("/v1/devices/meter-a/work", headers=h, json={"op": "relay", "args": OPEN})
    r2 = client.post("/v1/devices/meter-a/work", headers=h, json={"op": "relay", "args": OPEN})
    assert (r1.status_code, r2.status_code) == (202, 202)
    assert r1.json()["id"] == r2.json()["id"] and r2.headers["Idempotent-Replayed"] == "true"


def test_operator_sweeping_the_fleet_one_meter_at_a_time_is_rate_limited(site):
    he, client, op, util = site
    fleet = ["m-%02d" % i for i in range(10)]
    for m in fleet:
        he.meter(client, m)
    codes = [op.post("/v1/devices/%s/work" % m, json={"op": "relay", "args": OPEN})
             for m in fleet]
    assert [r.status_code for r in codes] == [202] * 6 + [429] * 4
    refused = codes[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "6 relay commands a minute" in refused.json()["error"]
    assert he.count("work") == 6
    # per token: another operator, and the utility, are not held up by this one
    other = Api(client, __import__("headend").tokens.create(he.hub.db, "bob", "operator"))
    assert other.post("/v1/devices/m-07/work", json={"op": "relay", "args": OPEN}
                      ).status_code == 202
    assert util.post("/v1/devices/m-08/work", json={"op": "relay", "args": OPEN}
                     ).status_code == 202


def test_operator_cannot_open_a_whole_group_at_once(site):
    he, client, op, util = site
    for m in ("m1", "m2", "m3"):
        he.meter(client, m)
    groups.create(he.hub.db, "street", ["m1", "m2", "m3"])
    r = op.post("/v1/groups/street/work", json={"op": "relay", "args": OPEN})
    assert r.status_code == 403 and "utility" in r.json()["error"]
    assert he.count("work") == 0
    assert util.post("/v1/groups/street/work", json={"op": "relay", "args": OPEN}
                     ).status_code == 202
    assert he.count("work") == 3


@pytest.mark.parametrize("where", ["/v1/devices/m1/work", "/v1/groups/street/work"])
def test_operator_cannot_set_the_time(site, where):
    he, client, op, util = site
    he.meter(client, "m1")
    groups.create(he.hub.db, "street", ["m1"])
    r = op.post(where, json={"op": "set_time", "args": {"unix": 946684800}})
    assert r.status_code == 403 and "set_time requires a utility token" in r.json()["error"]
    assert he.count("work") == 0
    assert util.post(where, json={"op": "set_time", "args": {"unix": "1765000000"}}
                     ).status_code == 202


def test_the_meter_itself_refuses_operator_set_time_and_peer_relay(tmp_path):
    """Defence in depth: a correctly signed item the head-end should never have queued."""
    outbox = fz.FakeOutbox()
    d = ops.Dispatcher(fz.FakeApp(outbox), fz.KEY, outbox, Inbox(str(tmp_path / "inbox")))
    for n, (op, args, role) in enumerate((("set_time", '{"unix":"1765000000"}', "operator"),
                                          ("relay", '{"state":"open"}', "peer")), 1):
        item = {"id": "w-%d" % n, "device": fz.DEVICE, "seq": n, "op": op, "role": role,
                "expires": 2 * 10 ** 9, "from": "device:thief", "args": args}
        item["sig"] = envelope.sign(fz.KEY, envelope.work_message(item))
        assert d.handle(item) == "rejected"
        assert "may not run %s" % op in outbox.items[-1][1]["reason"]


# --- peers: a stolen meter key asks its neighbours ---

def _messages(meter):
    work = meter.exchange()["work"]
    meter.execute(work)             # acknowledged: the next exchange brings the next ones
    return {w["args"]["ref"]: w["args"]["result"] for w in work if w["op"] == "message"}


def test_stolen_meter_key_cannot_open_its_peers_relays(site):
    he, client, op, util = site
    thief, victim = he.meter(client, "thief"), he.meter(client, "victim")
    thief.add("send", {"to": "victim", "ref": "cut", "op": "relay", "args": OPEN})
    thief.add("send", {"to": "victim", "ref": "look", "op": "read", "args": {}})
    thief.add("send", {"to": "nowhere", "ref": "probe", "op": "read", "args": {}})
    thief.exchange()
    assert victim.exchange()["work"] == []
    got = _messages(thief)
    assert got["cut"] == {"status": "rejected", "reason": "op relay is never allowed from a peer"}
    assert got["look"]["reason"] == "no peer rule allows thief to send read to victim"
    # an unknown target answers the same way: peers cannot enumerate the fleet
    assert got["probe"]["reason"] == "no peer rule allows thief to send read to nowhere"


def test_peer_rules_allow_only_their_groups_and_ops(tmp_path):
    rules = [{"from": "site-a", "to": "site-b", "ops": ["read"]}]
    he, client, op, util = _site(tmp_path, peer_rules=rules)
    a, b, c = (he.meter(client, m) for m in ("a1", "b1", "c1"))
    groups.create(he.hub.db, "site-a", ["a1"])
    groups.create(he.hub.db, "site-b", ["b1"])
    a.add("send", {"to": "b1", "ref": "ok", "op": "read", "args": {}})
    a.add("send", {"to": "b1", "ref": "ev", "op": "get_events", "args": {}})
    a.add("send", {"to": "c1", "ref": "out", "op": "read", "args": {}})
    b.add("send", {"to": "a1", "ref": "back", "op": "read", "args": {}})
    a.exchange()
    b.exchange()
    (w,) = b.exchange()["work"][:1]
    assert (w["op"], w["role"], w["from"]) == ("read", "peer", "device:a1")
    got = _messages(a)
    assert got["ev"]["status"] == got["out"]["status"] == "rejected"
    assert _messages(b)["back"]["reason"] == "no peer rule allows b1 to send read to a1"


def test_a_meter_flooding_its_peers_is_rate_limited(tmp_path):
    rules = [{"from": "*", "to": "*", "ops": ["read"]}]
    he, client, op, util = _site(tmp_path, peer_rules=rules)
    a, _ = he.meter(client, "a1"), he.meter(client, "b1")
    for i in range(35):
        a.add("send", {"to": "b1", "ref": i, "op": "read", "args": {}})
    a.exchange()
    assert he.hub.db.one("SELECT COUNT(*) AS n FROM work WHERE device = 'b1'")["n"] == 30
    got = {}
    for _ in range(5):
        got.update(_messages(a))
    assert sorted(got) == list(range(30, 35))
    assert all("30 peer requests a minute" in g["reason"] for g in got.values())


@pytest.mark.parametrize("rule, why", [
    ({"from": "*", "to": "*", "ops": ["relay"]}, "relay is never allowed from a peer"),
    ({"from": "*", "to": "*", "ops": ["reset_energy"]}, "never allowed from a peer"),
    ({"from": "*", "to": "*", "ops": ["set_config"]}, "never allowed from a peer"),
    ({"from": "*", "to": "*", "ops": ["dance"]}, "not a peer op"),
    ({"from": "", "to": "*", "ops": ["read"]}, "group name or *"),
    ({"from": "*", "to": "*"}, "from, to and ops"),
])
def test_a_rule_that_would_let_peers_cut_power_stops_the_head_end(tmp_path, rule, why):
    with pytest.raises(ValueError, match=why):
        webapp.create_app(Settings(db=str(tmp_path / "h.db"), peer_rules=[rule]))
