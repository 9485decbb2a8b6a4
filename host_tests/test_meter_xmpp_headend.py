"""The XMPP transport end to end with nothing faked: the real firmware (MicroPython unix port,
simulated board, transport=xmpp, Direct TLS, SCRAM keys computed at deploy), a real Prosody
configured the way an operator does it (`backchannel xmpp-config`, `xmpp-account --meter`),
and the real head-end with its XMPP component. An operator on a real XMPP client sees the
meter's presence change and reads it from the chat; forged and misdirected exchanges are
refused, nothing is lost, and a server restart is recovered from."""

import base64
import shutil
import time

import pytest

from lab import processes
from lab.im_process import COMPONENT, DOMAIN, ImServer
from lab.xmpp_client import Operator

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("prosody") is None,
                                 reason="prosody is not installed (apt-get install prosody)")]

XM, OTHER = "meter-xm", "meter-two"
PROBE_S = 5                 # the head-end pings meters on XMPP this often (xmpp_probe_s)
NS = "urn:backchannel:exchange"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("xmpp-site")
    im = ImServer(work, operators=["alice@%s=alice" % DOMAIN])
    im.configure()
    he = processes.Headend(work, config=dict(im.headend_config(), xmpp_probe_s=PROBE_S))
    keys = {XM: he.add_device(XM), OTHER: he.add_device(OTHER),
            "mallory": he.add_device("mallory")}       # her account is a meter's too
    he.add_token("alice", "operator")
    op = he.add_token("admin", "admin")
    procs = []
    try:
        im.start()
        im.add_meter(XM)
        im.add_meter(OTHER)                      # an account, and a device, of its own
        im.add_account("alice@" + DOMAIN, "alice-pw")
        im.add_account("mallory@" + DOMAIN, "mallory-pw")
        he.start()
        procs.append(he)
        meter = processes.Meter(work, XM, keys[XM], "", **im.meter_settings(XM))
        procs.append(meter.start())
        api = he.api(op)
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % XM).json(), 40,
                             "the first reading over XMPP")
        yield {"im": im, "he": he, "meter": meter, "api": api, "keys": keys}
    finally:
        for p in reversed(procs):
            p.kill()
        im.stop()


def readings(api, device):
    return api.get("/v1/devices/%s/readings?limit=1000" % device).json()


def presence(api, device):
    return [(e["state"], e["source"]) for e in
            reversed(api.get("/v1/devices/%s/presence?limit=1000" % device).json())]


def xmpp_status(api):
    return api.get("/v1/health").json()


def test_read_round_trip_is_pushed(site):
    api = site["api"]
    w = processes.run_work(api, XM, "read")
    assert w["status"] == "done", w
    assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    assert w["finished_at"] - w["created"] < 2.0, w     # pushed, not at the next heartbeat
    dev = api.get("/v1/devices/%s" % XM).json()
    assert dev["transport"] == "xmpp" and dev["presence"] == "available"


def test_operator_sees_presence_changes_and_reads_from_the_chat(site):
    api, im = site["api"], site["im"]
    alice = Operator("alice@" + DOMAIN, "alice-pw", im.ports["c2s_port"], im.ca_file)
    try:
        jid = "%s@%s" % (XM, COMPONENT)
        w = processes.run_work(api, XM, "set_presence",
                               {"state": "available_restricted", "note": "critical process"})
        assert w["status"] == "done", w
        alice.wait_presence(jid, "away", "critical process")
        processes.wait_until(lambda: presence(api, XM)[-1] == ("available_restricted", "meter"),
                             10, "the meter's XMPP presence in the history")
        processes.run_work(api, XM, "set_presence", {"state": "active"})
        alice.wait_presence(jid, "dnd")
        processes.run_work(api, XM, "set_presence", {"state": "available"})
        alice.say(jid, "read")
        assert "vrms=" in alice.wait_message(jid, "read: done", timeout=20)
    finally:
        alice.close()


def test_presence_is_probed_on_a_schedule_and_on_demand(site):
    """Issue 15 item 5: XEP-0199 pings through the meter's own session, every PROBE_S and
    on demand (the API, an operator's `ping` in the chat); no session is `unavailable`."""
    api, im = site["api"], site["im"]

    def answered():
        m = api.get("/v1/xmpp").json()["probes"]["meters"].get(XM, {})
        return m if m.get("answered", 0) >= 2 else None
    m = processes.wait_until(answered, 4 * PROBE_S + 30, "two scheduled probes answered")
    assert m["last_rtt_ms"] > 0 and api.get("/v1/xmpp").json()["probes"]["every_s"] == PROBE_S
    r = api.post("/v1/devices/%s/probe" % XM)
    assert r.status_code == 200, r.text
    assert r.json()["answered"] and r.json()["presence"] == "available", r.json()
    r = api.post("/v1/devices/%s/probe" % OTHER)        # an account, but no meter logged in
    assert r.status_code == 200 and not r.json()["answered"], r.text
    assert r.json()["presence"] == "unavailable", r.json()
    assert presence(api, OTHER)[-1][0] == "unavailable"
    assert api.post("/v1/devices/nobody/probe").status_code == 404
    alice = Operator("alice@" + DOMAIN, "alice-pw", im.ports["c2s_port"], im.ca_file)
    try:
        jid = "%s@%s" % (XM, COMPONENT)
        alice.say(jid, "ping")
        assert "presence available" in alice.wait_message(jid, "answered in", timeout=20)
    finally:
        alice.close()


def _exchange_stanza(to, device, key_hex, sig=None, raw=None):
    raw = raw or ('{"v":2,"device":"%s","ts":%d,"epoch":"e","nonce":"%s","wait":0,"room":4}'
                  % (device, int(time.time()), base64.b16encode(time.time_ns()
                                                                .to_bytes(8, "big")).decode()))
    import hashlib
    import hmac
    sig = sig or hmac.new(bytes.fromhex(key_hex), raw.encode(), hashlib.sha256).hexdigest()
    return ('<message to="%s"><bc xmlns="%s" sig="%s">%s</bc></message>'
            % (to, NS, sig, base64.b64encode(raw.encode()).decode()))


def test_forged_and_misdirected_exchanges_are_refused(site):
    api, im, keys = site["api"], site["im"], site["keys"]
    before = len(readings(api, XM))
    mallory = Operator("mallory@" + DOMAIN, "mallory-pw", im.ports["c2s_port"], im.ca_file)
    try:
        # mallory holds XM's key (stolen) but not its account: the account is the sender
        mallory.raw(_exchange_stanza(COMPONENT, XM, keys[XM]))
        # her own device, with a forged signature; a payload that is not base64
        mallory.raw(_exchange_stanza(COMPONENT, "mallory", keys[XM]))
        mallory.raw('<message to="%s"><bc xmlns="%s" sig="%s">!!!</bc></message>'
                    % (COMPONENT, NS, "0" * 64))
        # an exchange sent to the meter's own session: the meter takes it only from the
        # component (it reports the refusal in its log)
        mallory.raw(_exchange_stanza("%s@%s/meter" % (XM, DOMAIN), XM, keys[XM]))

        def refused():
            m = api.get("/v1/xmpp").json()["meters"]["refused"]
            return m if sum(m.values()) >= 3 else None
        # (a billion-laughs stanza never reaches the component: the server refuses its DTD)
        why = processes.wait_until(refused, 10, "the component to refuse the forgeries")
        assert any("device" in r or "does not match" in r for r in why), why
        assert any("signature" in r for r in why), why
        assert any("base64" in r for r in why), why
        processes.wait_until(lambda: "not the head-end's component" in site["meter"].log(), 10,
                             "the meter to refuse an exchange from mallory")
    finally:
        mallory.close()
    # nothing lost: the meter goes on, every reading once
    processes.wait_until(lambda: len(readings(api, XM)) > before + 2, 20, "more readings")
    seqs = [r["seq"] for r in readings(api, XM)]
    assert len(seqs) == len(set(seqs))


def test_server_restart_is_recovered_without_loss(site):
    api, im, meter = site["api"], site["im"], site["meter"]
    lwts = presence(api, XM).count(("unavailable", "lwt"))
    im.stop()
    time.sleep(3)
    before = {r["seq"] for r in readings(api, XM)}
    im.start()
    processes.wait_until(lambda: len(readings(api, XM)) > len(before) + 3, 90,
                         "readings after the server came back")
    rows = readings(api, XM)
    seqs = [r["seq"] for r in rows]
    assert len(seqs) == len(set(seqs)) and before <= set(seqs)
    times = sorted(r["body"]["t"] for r in rows)        # one a second, the outage's too
    gaps = [b - a for a, b in zip(times, times[1:]) if b - a > 1.5]
    assert not gaps, "readings missing: gaps of %s s" % gaps
    assert presence(api, XM).count(("unavailable", "lwt")) >= lwts
    assert api.get("/v1/devices/%s" % XM).json()["presence"] == "available"
    assert "Traceback" not in meter.log(), meter.log()[-3000:]
