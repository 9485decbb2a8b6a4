"""Fault campaigns 4-5 (tools/faults/cli.py) on the network: partitions (cuts and a flapping
link) and a hostile network (an idle-closing middlebox; latency and loss from tc netem, or
without sch_netem from the middlebox and nftables)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

from faults.campaign import PERSIST_S, REPORT_S, check
from faults.ledger import (
    check_readings,
    check_results_once,
    dir_bytes,
    duplicates,
    overflow_dropped,
    rss_kb,
    unexplained_gaps,
)
from headend.meter_time import record_time
from lab import netlab, processes

# --- campaign 4: partitions -----------------------------------------------------------------

def _part_counter(lab):
    try:
        out = lab.check_output("a", "nft list table inet bc_part_a") + \
            lab.check_output("out", "nft list table inet bc_part_a")
        return sum(int(x.split()[0]) for x in out.split("packets")[1:])
    except Exception:  # noqa: BLE001
        return None


def _outage(rig, m, device, down, rng, flap=None):
    """One outage (or a flapping series); returns its figures once the backlog drained."""
    pid = m.proc.pid
    ob = m.state / "outbox"
    base = {"rss_kb": rss_kb(pid), "outbox_bytes": dir_bytes(ob)}
    samples = []
    periods = flap or [(down, 0)]
    t_start = time.time()
    sent_packets = 0
    for d, up in periods:
        rig.lab.partition("a")
        end = time.time() + d
        while time.time() < end:
            samples.append((rss_kb(pid), dir_bytes(ob)))
            time.sleep(min(0.5, max(0.0, end - time.time())))
        sent_packets += _part_counter(rig.lab) or 0
        rig.lab.partition("a", on=False)
        time.sleep(up)
    t_restore = time.time()
    # drained: every reading taken before the link came back is stored
    first = [None]

    def drained():
        rs = [record_time(b) for k, b in rig.stored(device).values() if k == "reading"]
        if first[0] is None and rs and max(rs) >= t_start:
            first[0] = time.time()
        return rs and max(rs) >= t_restore - REPORT_S
    rig.wait(drained, 420, "the backlog to drain", 0.2)
    t_drain = time.time()
    return {"down_s": round(sum(d for d, _ in periods), 1),
            "drain_s": round(t_drain - t_restore, 1),
            "rss_kb": [base["rss_kb"], max(s[0] for s in samples if s[0])],
            "outbox_bytes": [base["outbox_bytes"], max(s[1] for s in samples),
                             dir_bytes(ob)],
            "packets_dropped_by_cut": sent_packets}


def campaign_partitions(rig, rng, outages=(5, 60), flap_cycles=8, flap_s=(0.5, 4.0),
                        long=False, say=print):
    device = "np-%d" % rng.randrange(10 ** 6)
    m = rig.add_meter(device)
    rig.start(m)
    rig.wait(lambda: rig.stored(device), 20, "first items")
    figures = []
    plan = list(outages) + ([600] if long else [])
    for d in plan:
        f = _outage(rig, m, device, d, rng)
        f["kind"] = "cut %d s" % d
        figures.append(f)
        say("  partition %s: drained %.1f s after restore, rss %s kB, outbox %s B"
            % (f["kind"], f["drain_s"], f["rss_kb"], f["outbox_bytes"]))
        time.sleep(2)
    if flap_cycles:
        flap = [(rng.uniform(*flap_s), rng.uniform(0.5, 3.0)) for _ in range(flap_cycles)]
        f = _outage(rig, m, device, None, rng, flap=flap)
        f["kind"] = "flapping x%d" % flap_cycles
        figures.append(f)
        say("  partition %s: drained %.1f s after last restore, rss %s kB, outbox %s B"
            % (f["kind"], f["drain_s"], f["rss_kb"], f["outbox_bytes"]))
    # ledger: one life; seqs contiguous, stored in seq order, readings without a gap
    now = time.time() + 2
    rig.wait(lambda: max([record_time(b) for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 420, "readings up to now")
    order = rig.stored_order(device)
    check(order == sorted(order), "items stored out of order")
    gaps = sorted(set(range(1, max(order) + 1)) - set(order))
    dropped = overflow_dropped(rig, device)   # a long outage fills the outbox (--long)
    lost = unexplained_gaps(gaps, dropped, len(plan) + flap_cycles)
    check(not lost, "seqs lost:", gaps[:20], "(%d reported dropped)" % dropped)
    lives = rig.lives(m)
    check(len(lives) == 1, "the meter restarted")
    K = check_readings(rig, device, lives, {0: now}, allow_missing=len(gaps))
    check_results_once(rig, device)
    rig.stop(m)
    return {"runs": len(figures), "faults": len(plan) + flap_cycles, "produced": len(order),
            "readings": K[0], "lost": lost, "dropped_overflow_reported": dropped,
            "missing_seqs": len(gaps),
            "duplicated": duplicates(rig, device),
            "outages": figures}


# --- campaign 5: slow and hostile network -------------------------------------------------

MIDDLEBOX = [sys.executable, "-m", "lab.middlebox"]


def netem(lab, on=True, spec=("delay", "150ms", "50ms", "loss", "2%")):
    """Add (or remove) tc netem on both ends of site a's uplink; None, or why it cannot."""
    for ns, dev in (("a", netlab.UPLINK), ("out", "a0")):
        cmd = ["tc", "qdisc", "add" if on else "del", "dev", dev, "root"] + \
            (["netem", *spec] if on else [])
        if not shutil.which("tc"):
            return "tc not installed (apt-get install iproute2)"
        r = subprocess.run(lab.ns_argv(ns, cmd), capture_output=True, text=True, timeout=10)
        if r.returncode and on:
            return "tc netem unavailable here (kernel sch_netem?): %s" % r.stderr.strip()
    return None


LOSS_TABLE = """table inet bc_loss {
  chain in { type filter hook input priority -10; numgen random mod 1000 < %(permille)d drop; }
  chain out { type filter hook output priority -10; numgen random mod 1000 < %(permille)d drop; }
}"""


def nft_loss(lab, permille=20, on=True):
    """Random packet loss both ways in site a (nftables numgen), where netem is missing."""
    if on:
        subprocess.run(lab.ns_argv("a", ["nft", "-f", "-"]), input=LOSS_TABLE % {
            "permille": permille}, text=True, check=True, capture_output=True, timeout=10)
    else:
        subprocess.run(lab.ns_argv("a", ["nft", "delete", "table", "inet", "bc_loss"]),
                       capture_output=True, timeout=10)


def campaign_hostile(rig, rng, works=8, gap=(5.0, 45.0), idle=30.0, say=print):
    """Work queued at random moments reaches a meter whose long-polls cross a middlebox that
    closes connections idle for `idle` s, with latency and loss on the link: tc netem where
    the kernel has it, else the middlebox holds each chunk 150 +- 50 ms and nftables drops
    2 % of site a's packets each way."""
    device = "hn-%d" % rng.randrange(10 ** 6)
    lab, he = rig.lab, rig.headend
    why_no_netem = netem(lab)
    userspace = ["150", "50", str(rng.randrange(10 ** 6))] if why_no_netem else []
    mqtt = rig.transport == "mqtt"
    target = rig.broker.port if mqtt else he.port
    mb = lab.run("out", [*MIDDLEBOX, lab.headend_ip, "0", lab.headend_ip,
                         str(target), str(idle), *userspace], stdout=subprocess.PIPE, text=True)
    line = mb.stdout.readline()
    check(line.startswith("ready "), "middlebox did not start")
    closes = {"idle": 0, "eof": 0}

    def drain_mb():
        for ln in mb.stdout:
            try:
                closes[json.loads(ln)["closed"]] += 1
            except (ValueError, KeyError):
                pass
    threading.Thread(target=drain_mb, daemon=True).start()
    if mqtt:   # the firmware's default keepalive (60 s: a ping every 30 s) through the box
        m = rig.add_meter(device, report_s=60, mqtt_port=int(line.split()[1]),
                          mqtt_keepalive=60)
    else:
        r = rig.admin.post("/v1/devices", json={"id": device})
        check(r.status_code == 201, r.text)
        m = processes.Meter(rig.dir, device, r.json()["key"],
                         "http://%s:%s" % (lab.headend_ip, line.split()[1]), lab=lab, ns="a",
                         report_s=60, poll_wait_s=25, persist_s=PERSIST_S)
        m.name = device
        rig.meters[device] = m
    if why_no_netem:
        nft_loss(lab)
    latencies, accepted = [], []
    try:
        rig.start(m)
        rig.wait(lambda: rig.stored(device), 30, "first items through the middlebox")
        for n in range(works):
            time.sleep(rng.uniform(*gap))
            t0 = time.monotonic()
            wid = rig.queue(device, "read", expires_in=600)
            accepted.append(wid)
            rig.wait(lambda wid=wid: rig.work_status(wid) not in ("queued", "held", "delivered"),
                     60, "work %s" % wid, 0.05)
            latencies.append(time.monotonic() - t0)
            say("  hostile: work %d/%d done in %.2f s (middlebox closes %s)"
                % (n + 1, works, latencies[-1], closes))
    finally:
        if why_no_netem is None:
            netem(lab, on=False)
        else:
            nft_loss(lab, on=False)
        mb.kill()
        m.kill()
    check(all(rig.work_status(w) == "done" for w in accepted), "work not done")
    limit = 8.0      # one long-poll answer through 150 ms +- 50 ms each way, 2 % loss
    check(max(latencies) <= limit, "a long-poll did not deliver promptly: %.1f s > %.1f s"
          % (max(latencies), limit))
    order = rig.stored_order(device)
    gaps = sorted(set(range(1, max(order) + 1)) - set(order))
    check(not gaps, "seqs lost:", gaps)
    check_results_once(rig, device)
    return {"runs": 1, "faults": works, "produced": len(order), "lost": len(gaps),
            "duplicated": duplicates(rig, device), "work_done": len(accepted),
            "latency_s": [round(min(latencies), 2), round(max(latencies), 2)],
            "middlebox_idle_closes": closes["idle"], "middlebox_other_closes": closes["eof"],
            "latency_loss": "tc netem: delay 150ms +-50ms, loss 2%" if why_no_netem is None
            else "no sch_netem here, so userspace: middlebox holds each chunk 150 +- 50 ms, "
                 "nftables drops 2% of site a's packets each way"}

