"""Peer rules managed through the API (issue 12, 4: the utility configures allow rules,
sender group -> target group -> ops; peers are denied by default; relay, set_config,
update, reset_energy, reboot and key or URL changes are never allowed from peers). Each test
is the attacker's try, in-process against the real head-end: an operator or a scoped token
that widens what peers may do, a rule that would let peers cut power or re-home meters, a
rule slipped into the database behind the API's back, a stolen meter key after a rule is
removed."""

import json

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend

from headend import devices, groups, peer_rules

pytestmark = pytest.mark.unit

FORBIDDEN = ("relay", "set_config", "update", "reset_energy", "reboot", "set_time",
             "update_key", "rotate_key", "set_url")


@pytest.fixture
def site(tmp_path):
    he = Headend(tmp_path)
    client = TestClient(he.app)
    a, b = he.meter(client, "a1"), he.meter(client, "b1")
    groups.create(he.hub.db, "site-a", ["a1"])
    groups.create(he.hub.db, "site-b", ["b1"])
    return he, client, a, b


def _messages(meter):
    work = meter.exchange()["work"]
    meter.execute(work)
    return {w["args"]["ref"]: w["args"]["result"] for w in work if w["op"] == "message"}


def _send(a, b, ref, op="read"):
    a.add("send", {"to": "b1", "ref": ref, "op": op, "args": {}})
    a.exchange()
    return [w for w in b.exchange()["work"] if w["role"] == "peer"], _messages(a)


def test_peers_are_denied_until_the_utility_adds_a_rule_and_again_once_removed(site):
    he, client, a, b = site
    util = Api(client, he.util_token)
    got, msgs = _send(a, b, "before")
    assert got == [] and msgs["before"]["reason"] == "no peer rule allows a1 to send read to b1"
    r = util.post("/v1/peer-rules", json={"from": "site-a", "to": "site-b", "ops": ["read"]})
    assert r.status_code == 201, r.text
    rule = r.json()
    assert (rule["from"], rule["to"], rule["ops"], rule["by"]) == \
        ("site-a", "site-b", ["read"], "operator:uma")
    got, _ = _send(a, b, "allowed")
    assert [(w["op"], w["from"]) for w in got] == [("read", "device:a1")]
    b.execute(got)
    assert util.get("/v1/peer-rules").json() == [rule]
    assert util.delete("/v1/peer-rules/%d" % rule["id"]).status_code == 200
    got, msgs = _send(a, b, "after")
    assert got == [] and msgs["after"]["status"] == "rejected"
    assert util.delete("/v1/peer-rules/%d" % rule["id"]).status_code == 404


@pytest.mark.parametrize("op", FORBIDDEN)
def test_no_rule_can_let_peers_cut_power_or_re_home_meters(site, op):
    he, client, a, b = site
    util = Api(client, he.util_token)
    r = util.post("/v1/peer-rules", json={"from": "*", "to": "*", "ops": ["read", op]})
    assert r.status_code == 400 and r.json()["error"] in (
        "peer rule: %s is never allowed from a peer" % op,
        "peer rule: %s is not a peer op (read, get_events, set_presence)" % op), r.text
    assert util.get("/v1/peer-rules").json() == []
    # and a stolen key asking for it anyway is refused with the reason
    got, msgs = _send(a, b, "try", op)
    assert got == [] and msgs["try"]["status"] == "rejected"


@pytest.mark.parametrize("body, status, why", [
    ({"from": "site-a", "to": "nowhere", "ops": ["read"]}, 404, "unknown group nowhere"),
    ({"from": "site-a", "to": "site-b", "ops": ["dance"]}, 400, "dance is not a peer op"),
    ({"from": "site-a", "to": "site-b", "ops": []}, 422, None),
    ({"from": "", "to": "site-b", "ops": ["read"]}, 422, None),
    ({"from": "site-a", "to": "site-b", "ops": "read"}, 422, None),
])
def test_malformed_rules_get_a_clear_refusal(site, body, status, why):
    he, client, _, _ = site
    r = Api(client, he.util_token).post("/v1/peer-rules", json=body)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    if why:
        assert why in r.json()["error"]


def test_only_a_fleet_wide_utility_token_changes_the_rules(site):
    he, client, a, b = site
    scoped = devices.add_token(he.hub.db, "north", "utility", groups=["site-a"])
    rule = {"from": "*", "to": "*", "ops": ["read"]}
    for token in (he.op_token, he.admin_token, scoped):
        r = Api(client, token).post("/v1/peer-rules", json=rule)
        assert r.status_code == 403 and "utility token for every meter" in r.json()["error"]
    made = Api(client, he.util_token).post("/v1/peer-rules", json=rule).json()
    for token in (he.op_token, he.admin_token, scoped):
        r = Api(client, token).delete("/v1/peer-rules/%d" % made["id"])
        assert r.status_code == 403
    assert Api(client, he.op_token).get("/v1/peer-rules").status_code == 403
    assert Api(client, he.admin_token).get("/v1/peer-rules").status_code == 200
    assert client.post("/v1/peer-rules", json=rule).status_code == 401
    # every try is in the audit log, with who and the outcome
    log = Api(client, he.util_token).get("/v1/audit", params={"limit": 50}).json()
    tries = [(e["who"], e["outcome"][:3]) for e in log if e["action"] == "add_peer_rule"]
    assert ("uma", "ok") in tries and ("alice", "403") in tries and ("ada", "403") in tries


def test_a_rule_written_into_the_database_behind_the_apis_back_never_lets_relay_through(site):
    he, client, a, b = site
    he.hub.db.run("INSERT INTO peer_rules(src, dst, ops, created, by) VALUES "
                  "('*', '*', ?, 0, 'intruder')", json.dumps(["relay", "read"]))
    got, msgs = _send(a, b, "cut", "relay")
    assert got == [] and msgs["cut"]["reason"] == "op relay is never allowed from a peer"
    assert peer_rules.in_force(he.hub) == []      # the whole rule is ignored, not just relay
    got, msgs = _send(a, b, "look")
    assert got == [] and msgs["look"]["status"] == "rejected"
