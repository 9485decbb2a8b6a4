"""Fault campaign 8 (issue 19, item 3; tools/faults/cli.py): MQTT at scale. A three-node NATS
cluster with JetStream and its MQTT gateway (`backchannel nats-config`, Debian's
nats-server), two head-end processes on PostgreSQL (`serve --workers 2 --nats-dir`) whose
NATS bridges share the meters' ups through a queue group, a real meter (MicroPython unix
port) on MQTT with every node in its mqtt_host, and an operator queuing work with
Idempotency-Keys through HAProxy, both without pause:

  8  kill -9 one NATS node at random moments (the meter on it moves to the next node of its
     list and resumes its session there; the bridges' nats-py clients reconnect), start it
     again once the others have taken over, wait until it is healthy (JetStream current).

Campaign 3's ledger with this fault: every work item the operator got an id for finishes
`done` exactly once, no acked seq is missing, no reading is stored twice; and both
processes' bridges took ups (the queue group shared them)."""
from __future__ import annotations

import json
import signal
import time

import httpx

from faults.campaign import MQTT_KEEPALIVE, PERSIST_S, REPORT_S, CampaignFailed, check
from faults.headend_campaigns import campaign_headend_crash
from faults.scale_campaigns import ScaleRig, why_skip_scale
from lab import nats_site, processes


def why_skip_nats():
    return why_skip_scale() or nats_site.missing_reason()


class NatsRig(ScaleRig):
    """ScaleRig with the meters on MQTT over a NATS cluster instead of HTTP."""

    def __init__(self, work, log=print, workers=2):
        super().__init__(work, log, workers)
        self.transport = "mqtt"
        self.nats = None

    def _serve_extra(self):
        self.nats = nats_site.NatsSite(self.dir, self.pg.url(), self.dir / "hub.key").start()
        return self.nats.serve_args()

    def _down(self):
        super()._down()
        if self.nats is not None:
            self.nats.stop()

    def add_meter(self, name, site="a", **settings):
        r = self.admin.post("/v1/devices", json={"id": name})
        check(r.status_code == 201, "register", name, r.status_code, r.text)
        self.nats.configure()           # the new meter's user; the running nodes reload
        self.wait(self.bridges_connected, 60, "both bridges to connect")
        cfg = dict(report_s=REPORT_S, persist_s=PERSIST_S)
        cfg.update(self.nats.meter_settings(keepalive=MQTT_KEEPALIVE))
        cfg.update(settings)
        m = processes.Meter(self.dir, name, r.json()["key"], "", **cfg)
        m.name = name
        self.meters[name] = m
        return m

    def bridge_status(self):
        """Each worker's own /v1/mqtt (straight to its port, not through the proxy)."""
        out = []
        auth = self.admin.headers["Authorization"]
        for w in self.workers_info()["workers"]:
            try:
                r = httpx.get("http://127.0.0.1:%d/v1/mqtt" % w["port"], timeout=10,
                              headers={"Authorization": auth})
                out.append(r.json() if r.status_code == 200 else {})
            except httpx.HTTPError:
                out.append({})
        return out

    def bridges_connected(self):
        return all(s.get("connected") for s in self.bridge_status())


def kill_a_node(rig, rng):
    """Campaign 8's fault: kill -9 one node, let the others take over for up to 3 s, start
    it again and wait until every node's JetStream runs (server_only: an MQTT session's
    consumer can stay "not current" for minutes after a kill, docs/scaling.md; the meters'
    own figures say whether the cluster served them)."""
    victim = rng.choice(sorted(rig.nats.cluster.nodes))
    rig.nats.kill(victim)
    time.sleep(rng.uniform(0.5, 3.0))
    rig.nats.restart(victim, timeout=120, server_only=True)


def campaign_nats_node_kill(rig, rng, kills=8, say=print):
    answered = [s.get("counts", {}).get("answered", 0) for s in rig.bridge_status()]
    fig = campaign_headend_crash(rig, rng, kills, say, crash=kill_a_node,
                                 what="NATS node kill -9")
    after = [s.get("counts", {}).get("answered", 0) for s in rig.bridge_status()]
    shared = [b - a for a, b in zip(answered, after)]
    fig["ups_answered_per_process"] = shared
    check(len(shared) == 2 and all(shared), "the queue group did not share the ups:", shared)
    return fig


NATS_CAMPAIGNS = {
    8: ("NATS node kill -9", campaign_nats_node_kill, {"kills": 8}, {"kills": 2}),
}


def run_nats(seed, only, smoke, work, verdict, say=print):
    """Campaign 8 on a NatsRig: {8: (ok, figures or error, seconds)}."""
    import random
    from pathlib import Path
    results = {}
    nums = [n for n in NATS_CAMPAIGNS if not only or n in only]
    if not nums:
        return results
    reason = why_skip_nats()
    if reason:
        for n in nums:
            say("campaign %d: cannot run: %s" % (n, reason))
            results[n] = (False, reason, 0.0)
        return results
    with NatsRig(Path(work) / "nats", log=say) as rig:
        for num in nums:
            name, fn, full, short = NATS_CAMPAIGNS[num]
            rng = random.Random("%s-%d" % (seed, num))
            say("campaign %d: %s, mqtt over a 3-node NATS cluster, 2 processes (seed %s%s)"
                % (num, name, seed, ", smoke" if smoke else ""))
            t0 = time.monotonic()
            try:
                fig, ok = verdict(rig, fn(rig, rng, say=say, **(short if smoke else full))), True
            except CampaignFailed as e:
                fig, ok = str(e), False
                for m in rig.meters.values():
                    m.kill(signal.SIGKILL)
            dt = time.monotonic() - t0
            results[num] = (ok, fig, dt)
            say("campaign %d: %s in %.0f s\n  %s" % (num, "PASS" if ok else "FAIL", dt,
                                                    json.dumps(fig) if ok else fig))
    return results
