"""The head-end as an XMPP component on a real Prosody (Debian's, from the project's private
config): operators on real XMPP clients (slixmpp, STARTTLS against the project's CA) see
meters' presence, chat commands run through the work queue with roles and audit, an
unmapped JID gets a refusal and nothing else, and an alarm escalates past an operator who
is away to one who is available, who acks it in the chat. The meters here speak HTTP
(FakeMeter); the meter's own XMPP transport is separate."""

import json
import shutil
import time

import pytest
from headend_fake_meter import FakeMeter
from headend_harness import Headend, Server

from headend import devices, escalation, groups, im_server
from headend.cli import main
from lab import pki
from lab.processes import free_ports
from lab.xmpp_client import Operator

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("prosody") is None,
                                 reason="prosody is not installed (CI installs it: "
                                        "apt-get install prosody)")]

DOMAIN, COMPONENT = "im.test", "fleet.im.test"


def cli(*argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 0, argv


@pytest.fixture
def site(tmp_path):
    pki.init(tmp_path / "pki", hosts=[DOMAIN, COMPONENT], ips=["127.0.0.1"])
    p = pki.paths(tmp_path / "pki")
    ports = dict(zip(("c2s_port", "tls_port", "component_port"), free_ports(3)))
    im = tmp_path / "im"            # as a user does it: the CLI writes both configs
    cli("xmpp-config", "--dir", im, "--domain", DOMAIN, "--component", COMPONENT,
        "--certfile", p["server_pem"], "--keyfile", p["server_key"],
        "--c2s-port", ports["c2s_port"], "--tls-port", ports["tls_port"],
        "--component-port", ports["component_port"],
        "--operator", "alice@im.test=alice", "--operator", "bob@im.test/phone=bob")
    for user in ("alice", "bob", "mallory"):
        cli("xmpp-account", "--dir", im, "%s@%s" % (user, DOMAIN), "--password", user + "-pw")
    proc = im_server.start(im, ports["component_port"])
    conf = json.loads((im / "headend-xmpp.json").read_text())
    assert conf["xmpp_operators"] == {"alice@im.test": "alice", "bob@im.test": "bob"}
    he = Headend(tmp_path, **conf)
    devices.add_token(he.hub.db, "bob", "operator")
    key = devices.create(he.hub.db, "m1", poll=0)
    groups.create(he.hub.db, "feeder-7", ["m1"])
    clients = []
    try:
        with Server(he.app) as server:
            def login(user, show=None):
                c = Operator("%s@%s" % (user, DOMAIN), user + "-pw", ports["c2s_port"],
                             p["ca_pem"], show)
                clients.append(c)
                return c
            import httpx
            with httpx.Client(base_url=server.url, timeout=30) as http:
                yield he, login, FakeMeter(http, "m1", key)
    finally:
        for c in clients:
            c.close()
        im_server.stop(proc)


def test_operator_sees_presence_and_chats_a_read(site):
    he, login, meter = site
    alice = login("alice")
    m1 = "m1@" + COMPONENT
    meter.presence("available_restricted", "critical process until 13:03")
    meter.exchange()
    alice.wait_presence(m1, "away", "critical process until 13:03")
    meter.presence("active")
    meter.exchange()
    alice.wait_presence(m1, "dnd")

    alice.say(m1, "read")
    queued = alice.wait_message(m1, "queued read as")
    wid = queued.split(" as ")[1].split(";")[0]
    (work,) = meter.exchange()["work"]
    assert work["op"] == "read" and work["id"] == wid
    meter.execute([work], lambda w: ("done", {"reading": {"vrms": 231.5, "p": 960.0}}))
    meter.exchange()
    assert "vrms=231.5" in alice.wait_message(m1, "%s read: done" % wid)
    logged = he.hub.db.one("SELECT who, action, outcome FROM audit WHERE target = 'device:m1' "
                           "AND action = 'xmpp:add_work'")
    assert tuple(logged) == ("alice", "xmpp:add_work", "ok")

    alice.say(m1, "relay open")       # operator relay: allowed, one at a time (policy.py)
    alice.wait_message(m1, "queued relay")
    alice.say(m1, "help")
    alice.wait_message(m1, "commands: read")


def test_a_meter_registered_later_is_offered_to_its_operators(site):
    """A meter registered after the component connected (as `make e2e` registers them) is
    offered to the operators who may see it within a second or so (a subscription request
    from its JID, which alice's client accepts), and its presence follows."""
    he, login, meter = site
    alice = login("alice")
    key = devices.create(he.hub.db, "m2", poll=0)
    alice.wait_presence("m2@" + COMPONENT, "unavailable")   # never heard from yet
    FakeMeter(meter.http, "m2", key).exchange()
    alice.wait_presence("m2@" + COMPONENT, "")


def test_config_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["xmpp-config", "--dir", str(tmp_path / "im"), "--certfile", __file__,
              "--keyfile", __file__, "--operator", "not a jid"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "JID=TOKEN_NAME" in err and err.count("\n") == 1


def test_unmapped_jid_gets_a_refusal_and_nothing_else(site):
    he, login, meter = site
    mallory = login("mallory")
    mallory.say("m1@" + COMPONENT, "relay open")
    mallory.wait_message("m1@" + COMPONENT, "refused: mallory@im.test is not an operator")
    assert he.count("work") == 0
    assert not [p for p in mallory.presences if p[0].endswith(COMPONENT) and p[1] != "error"
                and p[2] is not None]


def test_alarm_escalates_past_an_away_operator_and_is_acked_in_the_chat(site):
    he, login, meter = site
    bob = login("bob", show="away")
    alice = login("alice")
    escalation.set_list(he.hub.db, "feeder-7", ["bob", "alice"])
    deadline = time.monotonic() + 10
    while escalation.available(he.hub, "alice", time.time()) is None:
        assert time.monotonic() < deadline, "alice's presence never reached the component"
        time.sleep(0.05)
    assert escalation.available(he.hub, "bob", time.time()) is None      # away
    meter.add("event_start", {"kind": "interruption", "start_s": int(time.time())})
    meter.exchange()
    text = alice.wait_message("alarms@" + COMPONENT, "ALARM")
    aid = int(text.split()[1].rstrip(":"))
    assert not [m for m in bob.messages if "ALARM" in m[1]]
    alice.say("alarms@" + COMPONENT, "ack %d" % aid)
    alice.wait_message("alarms@" + COMPONENT, "alarm %d acknowledged" % aid)
    alarm = escalation.get(he.hub.db, aid, steps=True)
    assert alarm["state"] == "acked" and alarm["acked_by"] == "alice"
    assert [(s["step"], s["operator"]) for s in alarm["steps"]][:3] == [
        ("raised", None), ("skipped", "bob"), ("notified", "alice")]
    assert "xmpp presence" in alarm["steps"][2]["detail"]
