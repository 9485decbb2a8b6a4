#!/usr/bin/env python3
"""Fault campaigns: real meters (MicroPython unix port) and the real head-end in a netlab lab,
hit with faults, every campaign checked against a ledger of what the meters produced.

    .venv/bin/python -m faults [--seed N] [--only 1,2,3,4] [--smoke] [--long] [--keep DIR]
                           [--transport http|mqtt|email|xmpp|both|all]

  1  meter power loss: kill -9 at random moments (SIGSTOP + look at flash + SIGKILL, and
     plain SIGKILLs), some while offline; nothing lost, nothing stored twice, energy on flash
     never goes backwards and lags the last reading by no more than one persist interval
  2  corrupted flash: a stopped meter's outbox segment, seq file, energy slot and inbox are
     damaged; it starts, keeps every intact record, reports the damage in notices, goes on
  3  head-end crash: kill -9 the head-end at random moments while operators queue work and
     the meter reports; nothing acknowledged (202 + id, or an ack) lost, nothing run twice
  4  network partitions (lab.partition): 5 s, 60 s (and 10 min with --long), a flapping
     link; the meter buffers, backs off, reconnects and delivers everything in order
  5  hostile network: long-polls through a middlebox that closes connections idle for 30 s
     (tools/lab/middlebox.py), plus tc netem latency/loss where the kernel has sch_netem
  6  kill -9 one of two head-end processes (`serve --workers 2` on PostgreSQL behind
     HAProxy) at random moments under load; the meter fails over through the proxy
  7  restart PostgreSQL (fast or immediate stop) at random moments under load
     (6 and 7: http only, on loopback, tools/faults/scale_campaigns.py)
  8  kill -9 one node of a three-node NATS cluster (JetStream, MQTT gateway) at random
     moments under load: a meter on MQTT moves to another node, two head-end processes
     share the ups through a NATS queue group (once, in the http pass, on loopback,
     tools/faults/nats_campaigns.py)
  every campaign also checks that no register value the head-end stored (readings and read
  results of every meter) decreased within an outbox epoch, and each new epoch is an event

--transport mqtt runs every campaign with the meters on MQTT (mosquitto in the lab, the
head-end's bridge); email and xmpp with the private mail server or Prosody in the lab
(lab/servers.py; the site may connect only to them), campaigns 1-4 (NOT_OVER says why not 5).
`both` is http then mqtt; `all` every transport (`make faults`).
--smoke runs a short version of each (host_tests/test_faults_smoke.py). Needs root,
iproute2 and nftables (and mosquitto for mqtt). Exit status 1 if any campaign fails.
docs/reliability.md has figures.
"""
# This file is the runner and its summary table; the rig is tools/faults/campaign.py, the flash and
# ledger checks tools/faults/ledger.py, the campaigns tools/faults/meter_campaigns.py (1-2),
# tools/faults/headend_campaigns.py (3) and tools/faults/network_campaigns.py (4-5).
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from faults.campaign import TRANSPORTS, CampaignFailed, Rig, why_skip
from faults.headend_campaigns import campaign_headend_crash
from faults.ledger import check_registers_never_decrease
from faults.meter_campaigns import campaign_corrupt, campaign_power_loss
from faults.nats_campaigns import NATS_CAMPAIGNS, run_nats
from faults.network_campaigns import campaign_hostile, campaign_partitions
from faults.scale_campaigns import SCALE_CAMPAIGNS, run_scale

__all__ = ["CAMPAIGNS", "CampaignFailed", "Rig", "main", "run", "verdict", "why_skip",
           "HTTP_ONLY", "NOT_OVER"]


# --- runner ---------------------------------------------------------------------------------

CAMPAIGNS = {
    1: ("meter power loss", campaign_power_loss, {"kills": 100}, {"kills": 5, "long_lives": 0}),
    2: ("corrupted flash", campaign_corrupt, {"rounds": 4}, {"rounds": 1, "offline": (4, 4.5)}),
    3: ("head-end crash", campaign_headend_crash, {"kills": 50}, {"kills": 4}),
    4: ("network partitions", campaign_partitions, {"outages": (5, 60), "flap_cycles": 8},
        {"outages": (3,), "flap_cycles": 2, "flap_s": (0.5, 2.0)}),
    5: ("hostile network", campaign_hostile, {"works": 8}, {"works": 2, "gap": (1.0, 3.0)}),
}
HTTP_ONLY = set()      # every campaign runs over http and mqtt
NOT_OVER = {t: {5: "the hostile middlebox relays one TCP port; an email meter uses two (SMTPS, "
                   "IMAPS) and an XMPP one holds a TLS session the box would only cut"}
            for t in ("email", "xmpp")}


def verdict(rig, fig):
    """What every campaign must hold besides its own ledger: each meter exchanged over the
    rig's transport, and no register value the head-end stored, over every stored reading and
    read result of every meter, ever decreased within an outbox epoch. Adds the count of
    values checked to fig."""
    rig.check_transport()
    fig["register_values_checked"] = sum(check_registers_never_decrease(rig, name)
                                         for name in rig.meters)
    return fig


def run(seed, only=None, smoke=False, long=False, work=None, say=print, transport="http"):
    """Run campaigns over one transport; returns {number: (ok, figures or error, seconds)}."""
    results = {}
    tmp = work or tempfile.mkdtemp(prefix="bc-faults-")
    try:
        if not only or only & set(CAMPAIGNS):
            results.update(_run_lab(seed, only, smoke, long, tmp, say, transport))
        if transport == "http":
            results.update(run_scale(seed, only, smoke, tmp, verdict, say))
            results.update(run_nats(seed, only, smoke, tmp, verdict, say))
    finally:
        if work is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _run_lab(seed, only, smoke, long, tmp, say, transport):
    """Campaigns 1-5 in a network lab."""
    results = {}
    with Rig(tmp, log=say, transport=transport) as rig:
        for num, (name, fn, full, short) in CAMPAIGNS.items():
            if (only and num not in only) or (transport != "http" and num in HTTP_ONLY):
                continue
            if num in NOT_OVER.get(transport, {}):
                say("campaign %d: not over %s: %s" % (num, transport,
                                                    NOT_OVER[transport][num]))
                continue
            kwargs = dict(short if smoke else full)
            if num == 4 and long and not smoke:
                kwargs["long"] = True
            rng = random.Random("%s-%d" % (seed, num))
            say("campaign %d: %s over %s (seed %s%s)" % (num, name, transport, seed,
                                                        ", smoke" if smoke else ""))
            t0 = time.monotonic()
            try:
                fig = verdict(rig, fn(rig, rng, say=say, **kwargs))
                ok = True
            except CampaignFailed as e:
                fig, ok = str(e), False
                for mm in rig.meters.values():
                    mm.kill(signal.SIGKILL)
                rig.lab.partition("a", on=False)
                if rig.headend.proc.poll() is not None:
                    rig.headend.start()
            dt = time.monotonic() - t0
            results[num] = (ok, fig, dt)
            say("campaign %d: %s in %.0f s\n  %s" % (num, "PASS" if ok else "FAIL", dt,
                                                    json.dumps(fig) if ok else fig))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", default=os.environ.get("BC_FAULTS_SEED", "20250105"))
    ap.add_argument("--only", default="", help="comma-separated campaign numbers")
    ap.add_argument("--smoke", action="store_true", help="the short versions")
    ap.add_argument("--long", action="store_true", help="add a 10 min partition")
    ap.add_argument("--keep", default=None, help="work dir to keep (logs, state, hub.db)")
    ap.add_argument("--transport", choices=TRANSPORTS + ("both", "all"), default="http",
                    help="how the meters talk to the head-end (default http; both: http "
                         "and mqtt; all: every transport)")
    a = ap.parse_args(argv)
    transports = {"both": ("http", "mqtt"), "all": TRANSPORTS}.get(a.transport, (a.transport,))
    for transport in transports:
        reason = why_skip(transport)
        if reason:
            print("faults: cannot run: %s" % reason, file=sys.stderr)
            return 2
    try:
        only = {int(x) for x in a.only.split(",") if x.strip()}
    except ValueError:
        print("faults: --only takes campaign numbers, e.g. 1,3", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res = {}
    for transport in transports:
        keep = None
        if a.keep:
            keep = Path(a.keep) / transport if len(transports) > 1 else Path(a.keep)
            keep.mkdir(parents=True, exist_ok=True)
        res[transport] = run(a.seed, only, a.smoke, a.long, keep,
                             say=lambda *x: print(*x, flush=True), transport=transport)
    print("\nSUMMARY (seed %s, %.0f s)" % (a.seed, time.monotonic() - t0))
    for transport, results in res.items():
        for num, (ok, fig, dt) in results.items():
            name = (CAMPAIGNS.get(num) or SCALE_CAMPAIGNS.get(num) or NATS_CAMPAIGNS[num])[0]
            over = "nats" if num in NATS_CAMPAIGNS else transport
            if ok:
                print("  %d %-20s %-5s PASS %4.0f s  runs %s, faults %s, produced %s, lost %s, "
                      "duplicated %s" % (num, name, over, dt, fig["runs"],
                                         fig["faults"], fig["produced"], fig["lost"],
                                         fig["duplicated"]))
            else:
                print("  %d %-20s %-5s FAIL %4.0f s" % (num, name, over, dt))
    return 0 if all(ok for r in res.values() for ok, _, _ in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
