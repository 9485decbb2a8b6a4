"""End-to-end scenarios 10-12 (docs/e2e.md), over xmpp only: operators on real XMPP clients
beside the lab's Prosody, with the real meter firmware behind its site's firewall (its
site may connect out only to Prosody's Direct TLS port). Shares the lab, head-end, server
and meters of test_e2e.py (the session fixture `env`; e2e_env.selected keeps these to
xmpp).

The operators' clients (tools/lab/xmpp_client.py: slixmpp, c2s STARTTLS against the lab's
CA) run in threads of the test process that enter the lab's `out` namespace, where Prosody
listens, as a phone on the utility's network would reach it. lab/servers.py gives them
accounts, alice@im.test and bob@im.test, mapped to the head-end's operator tokens alice and
bob. test_xmpp_gateway.py checks the same against a fake HTTP meter on loopback, and
test_meter_xmpp_headend.py with a MicroPython meter on loopback; here every stanza of the
meter crosses its firewall and the lab's veths."""

import re
import time

import pytest
from e2e_env import REPORT_S

from headend.meter_time import record_time
from lab.im_process import COMPONENT
from lab.xmpp_client import Operator

pytestmark = pytest.mark.root

METER = "meter-a"
JID = "%s@%s" % (METER, COMPONENT)
ALARMS = "alarms@" + COMPONENT
GROUP = "e2e-xmpp"
# each stated presence, the <show> the operator must see and its note as the status text
STATES = (("available_restricted", "away", "critical process until 13:03"),
          ("active", "dnd", "relay closed by the utility"),
          ("available_off", "xa", "supply off, relay open"),
          ("available", "", "back to normal"))


@pytest.fixture(scope="module")
def ops(env):
    """alice (available) and bob (away) logged in from `out`; each is asked on login to
    subscribe to the meters (the component did so when it connected), which their clients
    accept, so the component hears their presence."""
    clients = {}
    try:
        clients["alice"] = Operator(**env.server.operator("alice"))
        clients["bob"] = Operator(show="away", **env.server.operator("bob"))
        for c in clients.values():
            c.wait_presence(JID, "", timeout=30)
        yield clients
    finally:
        for c in clients.values():
            c.close()


def _recorded(env, state, since):
    """When the head-end recorded METER's presence `state` (the newest such entry)."""
    for h in env.get("/v1/devices/%s/presence?limit=50" % METER):
        if h["state"] == state and h["at"] >= since:
            return h
    return None


def test_10_operator_sees_each_presence_change(env, ops, record_property):
    """10. An operator's XMPP client sees each presence change of meter A.

    alice's client (in `out`) is subscribed to A's JID on the head-end's component. A is
    told to state each presence in turn (set_presence, over its XMPP session through its
    firewall): alice receives away, dnd, xa and plain available, each with its note as the
    status text, in that order. A is then killed (-9): Prosody sees its session end and
    alice receives A unavailable; A restarts and logs in through its firewall: alice
    receives A available again. Each arrival's delay after the head-end recorded the
    change is reported (not asserted: the component sends changes once a second)."""
    alice = ops["alice"]
    delays = []
    for state, show, note in STATES:
        n, since = len(alice.presences), time.time()
        w = env.run(METER, "set_presence", {"state": state, "note": note})
        assert w["status"] == "done", w
        i = alice.wait_presence(JID, show, note, after=n, timeout=20)
        h = env.wait(lambda st=state, t=since: _recorded(env, st, t), 10, "%s recorded" % state)
        delays.append(alice.arrived[i] - h["at"])
        seen = [p for p in alice.presences[n:i] if p[0] == JID]
        assert not seen, ("another presence of A came between", state, seen)

    n, since = len(alice.presences), time.time()
    env.meters[METER].kill()
    try:
        i = alice.wait_presence(JID, "unavailable", after=n, timeout=30)
    finally:
        if not env.running(METER):
            env.start(METER)
    h = env.wait(lambda: _recorded(env, "unavailable", since), 10, "unavailable recorded")
    delays.append(alice.arrived[i] - h["at"])
    gone = alice.arrived[i] - since
    n, back = len(alice.presences), time.time()
    i = alice.wait_presence(JID, "", after=n, timeout=60)
    h = env.wait(lambda: _recorded(env, "available", back), 10, "available recorded")
    delays.append(alice.arrived[i] - h["at"])
    env.wait(lambda: max(record_time(r["body"]) for r in env.readings(METER)) >= back, 30,
             "A's first reading after its restart")     # the next scenario reads it
    record_property("evidence", "alice saw away, dnd, xa, available, then unavailable %.1f s "
                    "after A's kill and available %.1f s after its restart; each %.2f-%.2f s "
                    "after the head-end recorded it" % (gone, alice.arrived[i] - back,
                                                        min(delays), max(delays)))


def test_11_operator_reads_a_meter_from_the_chat(env, ops, record_property):
    """11. The operator types `read` in the chat with meter A and gets the answer there.

    alice's `read` is queued as alice (role operator, channel xmpp, audited) through the
    same queue as the REST API, pushed to A over its XMPP session, run once, and A's
    reading (230 V) comes back in the chat with the work's id."""
    alice = ops["alice"]
    t0 = time.time()
    alice.say(JID, "read")
    queued = alice.wait_message(JID, "queued read as", timeout=20)
    wid = queued.split(" as ")[1].split(";")[0]
    answer = alice.wait_message(JID, "%s read: done" % wid, timeout=60)
    took = time.time() - t0
    w = env.work(wid)
    assert w["status"] == "done" and w["op"] == "read", w
    assert w["from"] == "operator:alice" and w["role"] == "operator", w
    found = re.search(r"vrms=([0-9.]+)", answer)
    assert found, (answer, w["result"])
    vrms = float(found.group(1))
    assert vrms == pytest.approx(w["result"]["reading"]["vrms"]), (answer, w["result"])
    assert vrms == pytest.approx(230, rel=0.01), answer
    results = [body for kind, body in env.stored_items(METER).values()
               if kind == "result" and body.get("work") == wid]
    assert len(results) == 1, ("ran %d times" % len(results), results)
    audit = env.admin.get("/v1/audit?limit=50&by=alice").json()
    assert any(a["who"] == "alice" and a["action"] == "xmpp:add_work"
               and a["target"] == "device:" + METER for a in audit), audit
    record_property("evidence", "'%s' in the chat %.2f s after alice typed read" % (answer, took))


def test_12_alarm_escalates_past_an_unavailable_operator(env, ops, record_property):
    """12. A meter's alarm escalates past an operator who is away to one who is available.

    Group e2e-xmpp (A) gets the escalation list bob, alice for A's `load_80` alarm. bob's
    client shows away, alice's available. alice sets A's rated current just above its load
    (set_config rated_a, alarm_delay_s 0, an operator key): A's own alarm rule starts
    load_80 and pushes it over XMPP; the head-end raises the alarm, skips bob (unavailable)
    and notifies alice in the chat from alarms@ the component; bob gets nothing. alice
    acks it in the chat; the alarm's steps are raised, skipped bob, notified alice (xmpp
    presence), acked by alice over xmpp. A's rating is then switched off again."""
    alice, bob = ops["alice"], ops["bob"]
    r = env.admin.post("/v1/groups", json={"name": GROUP, "members": [METER]})
    assert r.status_code == 201, r.text
    r = env.admin.request("PUT", "/v1/escalation/" + GROUP, {
        "operators": ["bob", "alice"], "timeout_s": 60, "kinds": ["load_80"]})
    assert r.status_code == 200, r.text
    irms = env.run(METER, "read")["result"]["reading"]["irms"]
    t0 = time.time()
    w = env.run(METER, "set_config", {"changes": {"rated_a": round(irms / 0.9, 2),
                                                  "alarm_delay_s": 0}})
    try:
        assert w["status"] == "done", w
        text = alice.wait_message(ALARMS, "ALARM", timeout=10 + 5 * REPORT_S)
        took = time.time() - t0
        aid = int(text.split()[1].rstrip(":"))
        assert "load_80 on %s (group %s)" % (METER, GROUP) in text, text
        alice.say(ALARMS, "ack %d" % aid)
        alice.wait_message(ALARMS, "alarm %d acknowledged" % aid)
    finally:
        off = env.run(METER, "set_config", {"changes": {"rated_a": 0}})
        assert off["status"] == "done", off
        env.admin.delete("/v1/escalation/" + GROUP)
    assert not [m for m in bob.messages if "ALARM" in m[1]], bob.messages
    alarm = env.get("/v1/alarms/%d" % aid)
    assert alarm["state"] == "acked" and alarm["acked_by"] == "alice", alarm
    assert alarm["device"] == METER and alarm["kind"] == "load_80", alarm
    steps = [(s["step"], s["operator"]) for s in alarm["steps"]]
    assert steps == [("raised", None), ("skipped", "bob"), ("notified", "alice"),
                     ("acked", "alice")], alarm["steps"]
    assert "xmpp presence" in alarm["steps"][2]["detail"], alarm["steps"]
    assert "over xmpp" in alarm["steps"][3]["detail"], alarm["steps"]
    record_property("evidence", "A's load_80 (rated %.2f A, %.2f A drawn) skipped bob (away), "
                    "reached alice in the chat %.1f s after the threshold was set; acked there"
                    % (irms / 0.9, irms, took))
