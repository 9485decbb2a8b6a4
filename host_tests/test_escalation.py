"""Alarms and escalation (tools/headend/escalation.py): a meter's event raises an alarm for
each of its groups with a list; it goes to the first available operator, on to the next
after the timeout, round once more, then to everyone and `unacknowledged`; ack from any
channel; state kept across a head-end restart; roles and scopes as the REST API's. Time is
driven by calling tick() with explicit times (the background sweep calls it with now)."""

import time

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend, client, headend, op  # noqa: F401

from headend import devices, duty, escalation
from headend.webapp import create_app

pytestmark = pytest.mark.unit

ALWAYS = ["always"]


@pytest.fixture
def util(client, headend):
    return Api(client, headend.util_token)


@pytest.fixture
def site(client, headend, util, op):
    """Meter m1 in group feeder-7; operators bob (off duty), carol and dave (on duty)."""
    for name in ("bob", "carol", "dave"):
        devices.add_token(headend.hub.db, name, "operator")
    m1 = headend.meter(client, "m1")
    assert op.post("/v1/groups", json={"name": "feeder-7", "members": ["m1"]}).status_code == 201
    for name in ("carol", "dave"):
        assert util.put("/v1/operators/%s/duty" % name, json={"windows": ALWAYS}).status_code == 200
    r = util.put("/v1/escalation/feeder-7", json={"operators": ["bob", "carol", "dave"],
                                                  "timeout_s": 120})
    assert r.status_code == 200, r.text
    return m1


def interruption(meter):
    meter.add("event_start", {"kind": "interruption", "start_s": int(time.time())})
    meter.exchange()


def steps(alarm):
    return [(s["step"], s["operator"]) for s in alarm["steps"]]


def test_an_interruption_goes_to_the_first_available_operator(site, headend, op):
    interruption(site)
    (alarm,) = op.get("/v1/alarms").json()
    alarm = op.get("/v1/alarms/%d" % alarm["id"]).json()
    assert alarm["state"] == "open" and alarm["operator"] == "carol"
    assert alarm["kind"] == "interruption" and alarm["device"] == "m1"
    assert steps(alarm) == [("raised", None), ("skipped", "bob"), ("notified", "carol")]
    assert "on duty" in alarm["steps"][-1]["detail"]


def test_a_dip_raises_nothing_by_default(site, op):
    site.add("event_start", {"kind": "dip", "start_s": 1})
    site.exchange()
    assert op.get("/v1/alarms").json() == []


def test_no_ack_moves_on_repeats_once_then_everyone_unacknowledged(site, headend, op):
    hub = headend.hub
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    t = a["deadline"]
    assert escalation.tick(hub, t - 1) == 0               # not yet
    assert escalation.tick(hub, t) == 1                   # carol timed out: dave
    assert escalation.get(hub.db, a["id"])["operator"] == "dave"
    escalation.tick(hub, t + 120)                         # dave timed out: round 2, carol
    assert escalation.get(hub.db, a["id"])["operator"] == "carol"
    escalation.tick(hub, t + 240)
    escalation.tick(hub, t + 360)                         # end of the second round
    alarm = op.get("/v1/alarms/%d" % a["id"]).json()
    assert alarm["state"] == "unacknowledged" and alarm["operator"] is None
    assert steps(alarm) == [
        ("raised", None), ("skipped", "bob"), ("notified", "carol"),
        ("timeout", "carol"), ("notified", "dave"), ("timeout", "dave"),
        ("repeat", None), ("skipped", "bob"), ("notified", "carol"),
        ("timeout", "carol"), ("notified", "dave"), ("timeout", "dave"),
        ("everyone", "bob"), ("everyone", "carol"), ("everyone", "dave"),
        ("unacknowledged", None)]
    assert escalation.tick(hub, t + 10_000) == 0          # nothing more to do
    # still acknowledgeable afterwards
    r = Api(op.http, headend.op_token).post("/v1/alarms/%d/ack" % a["id"])
    assert r.status_code == 200 and r.json()["acked_by"] == "alice"


def test_ack_stops_the_escalation_and_a_second_ack_is_refused(site, headend, op):
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    r = op.post("/v1/alarms/%d/ack" % a["id"], json={"channel": "xmpp"})
    assert r.status_code == 200 and r.json()["state"] == "acked"
    assert escalation.tick(headend.hub, a["deadline"] + 1) == 0
    alarm = op.get("/v1/alarms/%d" % a["id"]).json()
    assert steps(alarm)[-1] == ("acked", "alice") and "over xmpp" in alarm["steps"][-1]["detail"]
    r = op.post("/v1/alarms/%d/ack" % a["id"])
    assert r.status_code == 409 and "acknowledged by alice" in r.json()["error"]
    assert op.post("/v1/alarms/999/ack").status_code == 404
    logged = headend.hub.db.all("SELECT who, outcome FROM audit WHERE target = ? ORDER BY id",
                                "alarm:%d" % a["id"])
    assert [(r["who"], r["outcome"][:3]) for r in logged] == [("alice", "ok"), ("alice", "409")]


def test_nobody_available_goes_round_twice_then_everyone(site, headend, util, op):
    for name in ("carol", "dave"):
        assert util.delete("/v1/operators/%s/duty" % name).status_code == 204
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    assert a["state"] == "unacknowledged"
    kinds = [s for s, _ in steps(op.get("/v1/alarms/%d" % a["id"]).json())]
    assert kinds.count("skipped") == 6 and kinds.count("everyone") == 3


def test_an_open_dashboard_makes_an_operator_available(site, headend, client, op):
    bob = devices.add_token(headend.hub.db, "bob2", "operator")
    Api(client, headend.util_token).put("/v1/escalation/feeder-7",
                                        json={"operators": ["bob2", "carol"]})
    assert escalation.available(headend.hub, "bob2", time.time()) is None
    page = client.get("/ui/login")
    csrf = page.cookies.get("bc_login") or client.cookies.get("bc_login")
    r = client.post("/ui/login", data={"token": bob, "csrf": csrf}, follow_redirects=False)
    assert r.status_code in (302, 303), r.text
    assert escalation.available(headend.hub, "bob2", time.time()) == "dashboard open"
    assert escalation.available(headend.hub, "bob2", time.time() + 3600) is None  # went quiet
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    assert a["operator"] == "bob2"


def test_state_survives_a_head_end_restart(site, headend, tmp_path, op):
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    again = create_app(headend.settings)              # a new process on the same database
    hub = again.state.hub
    assert escalation.tick(hub, a["deadline"]) == 1
    with TestClient(again) as c:
        alarm = Api(c, headend.op_token).get("/v1/alarms/%d" % a["id"]).json()
    assert alarm["operator"] == "dave" and steps(alarm)[-2:] == [("timeout", "carol"),
                                                                 ("notified", "dave")]


def test_roles_and_scopes(site, headend, client, op, util):
    r = op.put("/v1/escalation/feeder-7", json={"operators": ["alice"]})
    assert r.status_code == 403 and "utility or admin" in r.json()["error"]
    assert op.put("/v1/operators/alice/duty", json={"windows": ALWAYS}).status_code == 403
    assert op.get("/v1/operators/alice/duty").status_code == 200      # one's own
    assert op.get("/v1/operators/carol/duty").status_code == 403
    assert op.post("/v1/alarms", json={"device": "m1"}).status_code == 403
    # a token confined to another group sees neither the alarm nor the list
    headend.meter(client, "m9")
    op.post("/v1/groups", json={"name": "other", "members": ["m9"]})
    scoped = Api(client, devices.add_token(headend.hub.db, "eve", "operator",
                                           groups=["other"]))
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    assert scoped.get("/v1/alarms").json() == []
    assert scoped.get("/v1/alarms/%d" % a["id"]).status_code == 404
    assert scoped.post("/v1/alarms/%d/ack" % a["id"]).status_code == 404
    assert scoped.get("/v1/escalation/feeder-7").status_code == 404
    assert op.get("/v1/alarms/%d" % a["id"]).json()["state"] == "open"


def test_drill_and_bad_input(site, headend, util):
    r = util.post("/v1/alarms", json={"device": "m1", "kind": "drill", "note": "monthly"})
    assert r.status_code == 201 and r.json()[0]["operator"] == "carol"
    assert util.post("/v1/alarms", json={"device": "nope"}).status_code == 404
    for bad in ({"operators": []}, {"operators": ["a", "a"]}, {"operators": ["a"],
                "timeout_s": 1}, {"operators": ["a"], "kinds": []}):
        r = util.put("/v1/escalation/feeder-7", json=bad)
        assert r.status_code in (400, 422) and "error" in r.json(), bad
    assert util.put("/v1/escalation/no-such-group",
                    json={"operators": ["a"]}).status_code == 404
    for bad in (["mon-fri 17:00-08:00"], ["someday 08:00-09:00"], ["mon 8-9"], []):
        r = util.put("/v1/operators/carol/duty", json={"windows": bad})
        assert r.status_code in (400, 422) and "error" in r.json(), bad
    # the list is unchanged by the refused edits
    assert util.get("/v1/escalation/feeder-7").json()["operators"] == ["bob", "carol", "dave"]


def test_duty_windows():
    monday_9 = 1733734800          # Mon 2024-12-09 09:00 UTC
    w = duty.parse(["mon-fri 08:00-17:00", "sun 22:00-24:00"])
    assert duty.within(w, monday_9)
    assert not duty.within(w, monday_9 + 9 * 3600)                    # 18:00
    assert not duty.within(w, monday_9 + 5 * 86400)                   # Saturday
    assert duty.within(w, monday_9 - 3600 * 10 - 1800)                # Sunday 22:30
    assert duty.within(duty.parse(["daily 00:00-24:00"]), monday_9)
    with pytest.raises(duty.DutyError, match="days run mon..sun"):
        duty.parse(["fri-mon 08:00-09:00"])


def _login(client, token):
    client.get("/ui/login")
    r = client.post("/ui/login", data={"token": token, "csrf": client.cookies.get("bc_login")},
                    follow_redirects=False)
    assert r.status_code in (302, 303), r.text


def test_dashboard_lists_alarms_and_acks_with_csrf(site, headend, client, op):
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    _login(client, headend.op_token)
    page = client.get("/ui/alarms").text
    assert "Alarms (1)" in page and 'id="ack-%d"' % a["id"] in page and "carol" in page
    assert 'http-equiv="refresh"' in page                       # reloads while open
    r = client.post("/ui/alarms/%d/ack" % a["id"], data={"csrf": "forged"})
    assert r.status_code == 403 and op.get("/v1/alarms").json()[0]["state"] == "open"
    csrf = client.get("/ui/alarms").text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post("/ui/alarms/%d/ack" % a["id"], data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    detail = client.get("/ui/alarms/%d" % a["id"]).text
    assert "acked by alice" in detail and "over dashboard" in detail and "skipped" in detail
    assert "Alarms (" not in client.get("/ui/alarms").text
    assert client.get("/ui/alarms/999").status_code == 404


def test_dashboard_is_a_channel_for_an_operator_who_has_it_open(site, headend, client, util):
    carol = devices.add_token(headend.hub.db, "carol", "operator")   # a second carol token
    _login(client, carol)
    interruption(site)
    alarm = util.get("/v1/alarms").json()[0]
    detail = util.get("/v1/alarms/%d" % alarm["id"]).json()["steps"][-1]["detail"]
    assert "notified over log, dashboard" in detail


def test_dashboard_hides_other_groups_alarms(site, headend, client, op):
    headend.meter(client, "m9")
    op.post("/v1/groups", json={"name": "other", "members": ["m9"]})
    interruption(site)
    (a,) = op.get("/v1/alarms").json()
    _login(client, devices.add_token(headend.hub.db, "eve", "operator", groups=["other"]))
    assert "no alarms" in client.get("/ui/alarms").text
    assert client.get("/ui/alarms/%d" % a["id"]).status_code == 404
    page = client.get("/ui/alarms").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/ui/alarms/%d/ack" % a["id"], data={"csrf": csrf}).status_code == 404
