"""The XMPP transport's figures through the firewall lab (bench/xmpp.py runs this as root;
docs/xmpp.md, docs/performance.md): the private Prosody and the head-end (its component) in
the lab's `out` namespace, one meter (MicroPython unix port, the firmware's default
reading interval, 10 s) in site a behind its stateful firewall, which lets it connect out
only to Prosody's Direct TLS port (lab/servers.py, as `make e2e` over xmpp).

- command latency: sequential `read` commands, created -> finished at the head-end;
- baseline in the same run: Prosody's own message round trip through the same firewall,
  between an operator's client in `out` (alice, c2s STARTTLS) and an echo client in site a
  (bob, Direct TLS, the meter's way in): alice -> bob -> alice, timed at alice;
- presence to an operator: the meter states a new presence (set_presence), at a random
  moment; the times from the head-end recording it, and from queuing the command, to
  alice's client receiving the meter's JID's presence (the component sends changes once a
  second);
- bytes per idle minute: the meter's site uplink (ip -s link: frames both ways, IP and
  TCP headers and ACKs included; only the meter runs in site a then), 60 s with no
  command: keepalive pings, heartbeats and a reading every 10 s."""

import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.backchannel import summary
from lab import netlab, processes, servers
from lab.im_process import COMPONENT
from lab.xmpp_client import Operator

WARMUP = 5
STATES = (("available_restricted", "away"), ("active", "dnd"))


def missing():
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the firewall lab needs root"
    if not (shutil.which("ip") and shutil.which("nft")):
        return "the firewall lab needs iproute2 and nftables"
    return servers.missing("xmpp")


def uplink_bytes(lab, site):
    """(sent, received) bytes on the site's uplink so far."""
    out = lab.check_output(site, ["ip", "-s", "-j", "link", "show", netlab.UPLINK])
    stats = json.loads(out)[0]["stats64"]
    return stats["tx"]["bytes"], stats["rx"]["bytes"]


def round_trips(alice, bob_jid, n):
    """n sequential round trips alice -> bob (echo) -> alice, in ms (after WARMUP)."""
    out = []
    for i in range(n + WARMUP):
        body, k = "ping %d" % i, len(alice.messages)
        t0 = time.time()
        alice.say(bob_jid, body)
        alice.wait_message(bob_jid, body, timeout=10, after=k)
        at = next(alice.message_at[j] for j in range(k, len(alice.messages))
                  if alice.messages[j][1] == body)
        if i >= WARMUP:
            out.append((at - t0) * 1000)
    return out


def presence_delays(env_api, alice, device, n):
    """n presence changes of `device`: ms from the head-end's record, and from queuing."""
    jid = "%s@%s" % (device, COMPONENT)
    recorded, queued = [], []
    for i in range(n):
        state, show = STATES[i % 2]
        note = "bench %d" % i
        time.sleep(random.uniform(0, 1.0))  # not in step with the component's 1 s sync
        k, t0 = len(alice.presences), time.time()
        w = processes.run_work(env_api, device, "set_presence", {"state": state, "note": note})
        if w["status"] != "done":
            continue
        j = alice.wait_presence(jid, show, note, timeout=20, after=k)
        hist = [h for h in env_api.get("/v1/devices/%s/presence?limit=20" % device).json()
                if h["state"] == state and h["at"] >= t0]
        if hist:
            recorded.append((alice.arrived[j] - hist[-1]["at"]) * 1000)
        queued.append((alice.arrived[j] - t0) * 1000)
    processes.run_work(env_api, device, "set_presence", {"state": "available"})
    return recorded, queued


def measure(commands=100, idle_s=60, presences=20):
    work = Path(tempfile.mkdtemp(prefix="bench-xmpp-lab-"))
    lab = netlab.Lab()
    srv, clients = None, []
    try:
        lab.up()
        srv = servers.LabIm(work, lab)
        srv.start()
        srv.confine("a")
        he = processes.Headend(work, host=lab.headend_ip, lab=lab,
                               config=srv.headend_settings())
        key = he.add_device("xm")
        token = he.add_token("alice", "operator")      # alice@im.test's token
        he.add_token("bob", "operator")
        he.start()
        srv.add_meter("xm")
        # the firmware's default reading interval (10 s), not the tests' 1 s
        meter = processes.Meter(work, "xm", key, "", lab=lab, ns="a",
                                **dict(srv.meter_settings("xm"), report_s=10))
        meter.start()
        api = he.api(token)
        processes.wait_until(lambda: api.get("/v1/devices/xm").json()["transport"] == "xmpp",
                             90, "the meter's first exchange over XMPP")
        lat = []
        for i in range(commands + WARMUP):
            w = processes.run_work(api, "xm", "read")
            if i >= WARMUP and w["status"] == "done":
                lat.append((w["finished_at"] - w["created"]) * 1000)

        alice = Operator(**srv.operator("alice"))
        clients.append(alice)
        bob_login = dict(srv.operator("bob"), netns=lab.nsname("a"), port=srv.ports[0])
        bob = Operator(echo=True, **bob_login)
        clients.append(bob)
        base = round_trips(alice, bob_login["jid"], commands)
        bob.close()
        alice.wait_presence("xm@" + COMPONENT, "", timeout=30)
        recorded, queued = presence_delays(api, alice, "xm", presences)
        alice.close()
        time.sleep(3)
        up0, down0 = uplink_bytes(lab, "a")
        time.sleep(idle_s)
        up1, down1 = uplink_bytes(lab, "a")
        idle = {"up": up1 - up0, "down": down1 - down0, "seconds": idle_s}
        return {"commands": dict(summary(lat), unit="ms", failed=commands - len(lat)),
                "prosody_round_trip": dict(summary(base), unit="ms"),
                "presence_to_operator": dict(summary(recorded), unit="ms"),
                "presence_from_command": dict(summary(queued), unit="ms"),
                "idle_bytes_per_minute": round((idle["up"] + idle["down"]) * 60 / idle_s),
                "idle": idle, "idle_counted": "site uplink frames (headers included)",
                "path": "firewall lab", "load": os.getloadavg()[0]}
    finally:
        for c in clients:
            try:
                c.close()
            except Exception:       # a client whose login failed has nothing to close
                pass
        try:
            lab.down()          # the head-end, Prosody, the meter and the API helper
        finally:
            if srv is not None:
                srv.close()
            shutil.rmtree(work, ignore_errors=True)
