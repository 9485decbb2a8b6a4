#!/usr/bin/env python3
"""Fault campaigns: real meters (MicroPython unix port) and the real head-end in a netlab lab,
hit with faults, every campaign checked against a ledger of what the meters produced.

    python tools/faults.py [--seed N] [--only 1,2,3,4] [--smoke] [--long] [--keep DIR]

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
     (tools/faults_middlebox.py), plus tc netem latency/loss where the kernel has sch_netem

--smoke runs a short version of each (host_tests/test_faults_smoke.py). Needs root,
iproute2 and nftables. Exit status 1 if any campaign fails. docs/reliability.md has figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "host_tests", ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
import fw  # noqa: E402
import system  # noqa: E402
import netlab  # noqa: E402

if str(fw.FIRMWARE) not in sys.path:
    sys.path.append(str(fw.FIRMWARE))   # firmware/outbox.py and store.py, on CPython
import outbox as fw_outbox  # noqa: E402
import store as fw_store  # noqa: E402

REPORT_S = 1
PERSIST_S = 5          # the meters' persist_s (the firmware's minimum): energy on flash lags
                       # true energy by less than this many seconds of metering


class CampaignFailed(AssertionError):
    pass


def check(cond, *what):
    if not cond:
        raise CampaignFailed(" ".join(str(w) for w in what))


def why_skip():
    """None if a lab can be built here, else the reason."""
    if os.geteuid() != 0:
        return "fault campaigns need root for network namespaces (uid %d)" % os.geteuid()
    missing = [t for t in ("ip", "nft") if not shutil.which(t)]
    if missing:
        return "fault campaigns need %s (iproute2, nftables)" % ", ".join(missing)
    name = "bc-fprobe-%s" % uuid.uuid4().hex[:6]
    try:
        for cmd in (["ip", "netns", "add", name],
                    ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "bc_probe"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if r.returncode:
                return "cannot build a network lab: %s: %s" % (" ".join(cmd), r.stderr.strip())
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    try:
        fw.micropython_binary()
    except Exception as e:  # noqa: BLE001
        return "no MicroPython unix port: %s" % e
    return None


# --- the rig: a lab, the head-end in `out`, meters in site a -------------------------------

class Rig:
    def __init__(self, work, log=print):
        self.dir = Path(work)
        self.log = log
        self.lab = netlab.Lab("bc-f%s" % uuid.uuid4().hex[:6])
        self.headend = self.api = None
        self.meters = {}

    def __enter__(self):
        try:
            self.lab.up()
            he = self.headend = system.Headend(self.dir, host=self.lab.headend_ip, lab=self.lab,
                                                extra=["--log-level", "warning"])
            token = he.add_token("faults", "operator")
            he.start()
            self.api = he.api(token)
        except BaseException:
            self.lab.down()
            raise
        return self

    def __exit__(self, *exc):
        self.lab.down()

    def add_meter(self, name, site="a", **settings):
        r = self.api.post("/v1/devices", json={"id": name})
        check(r.status_code == 201, "register", name, r.status_code, r.text)
        cfg = dict(report_s=REPORT_S, persist_s=PERSIST_S)
        cfg.update(settings)
        m = system.Meter(self.dir, name, r.json()["key"], self.headend.url, lab=self.lab,
                         ns=site, **cfg)
        m.name = name
        self.meters[name] = m
        return m

    def wait(self, predicate, timeout, what, interval=0.1):
        try:
            return system.wait_until(predicate, timeout, what, interval)
        except AssertionError as e:
            tails = "\n".join("--- %s:\n%s" % (n, "\n".join(t.splitlines()[-8:])) for n, t in
                              [("head-end", self.headend.log())] +
                              [(n, m.log()) for n, m in self.meters.items()])
            raise CampaignFailed("%s\n%s" % (e, tails)) from None

    # meters
    def lives(self, m):
        out = []
        for line in m.log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("type") == "started":
                out.append(rec["unix"])
        return out

    def start(self, m):
        n = len(self.lives(m))
        m.start()
        self.wait(lambda: len(self.lives(m)) > n, 20, "%s to start" % m.name, 0.02)

    @staticmethod
    def running(m):
        return m.proc is not None and m.proc.poll() is None

    def stop(self, m):
        m.kill(signal.SIGKILL)

    # operator
    def queue(self, device, op="read", **extra):
        r = self.api.post("/v1/devices/%s/work" % device,
                          json=dict({"op": op, "args": {}}, **extra))
        check(r.status_code == 202, "queue", r.status_code, r.text)
        return r.json()["id"]

    # the head-end's database, read-only (WAL lets this run beside the server)
    def _db(self, sql, args=()):
        for _ in range(50):
            try:
                db = sqlite3.connect("file:%s?mode=ro" % self.headend.db, uri=True, timeout=10)
                try:
                    return db.execute(sql, args).fetchall()
                finally:
                    db.close()
            except sqlite3.OperationalError:   # the head-end is being restarted
                time.sleep(0.1)
        raise CampaignFailed("cannot read the head-end database")

    def stored(self, device):
        """{seq: (kind, body)} of everything the head-end stored for device."""
        return {s: (k, json.loads(b)) for s, k, b in
                self._db("SELECT seq, kind, body FROM items WHERE device = ?", (device,))}

    def stored_order(self, device):
        """Seqs in the order the head-end inserted them (rowid)."""
        return [s for (s,) in self._db("SELECT seq FROM items WHERE device = ? ORDER BY rowid",
                                       (device,))]

    def work_rows(self, device):
        from headend import workq
        return {workq.wid(n): (st, ex) for n, st, ex in self._db(
            "SELECT num, status, executed FROM work WHERE device = ?", (device,))}

    def work_status(self, wid):
        r = self.api.get("/v1/work/%s" % wid)
        check(r.status_code == 200, "work", wid, r.status_code, r.text)
        return r.json()["status"]


# --- flash, read-only (only while the meter is stopped) ------------------------------------

def seg_records(path):
    """[(offset, length, item)] of the well-formed records in a segment, in order."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while True:
        i = data.find(fw_store.MAGIC, pos)
        if i < 0 or i + 7 > len(data):
            return out
        n = int.from_bytes(data[i + 3:i + 7], "little")
        try:
            item = json.loads(fw_store.decode(data[i:i + 11 + n]))
            out.append((i, 11 + n, item))
            pos = i + 11 + n
        except (ValueError, KeyError):
            pos = i + 1


def flash(state):
    """What a stopped meter has on flash: acked seq, intact records (outbox._records, as the
    firmware reads them), energy state, and signs of a write cut short."""
    d = Path(state) / "outbox"
    try:
        acked = int(fw_store.read_record(str(d / "acked")) or 0)
    except ValueError:
        acked = 0
    records, torn = [], 0
    segs = sorted(d.glob("*.seg"), key=lambda p: int(p.stem)) if d.exists() else []
    for seg in segs:
        with open(seg, "rb") as f:
            for item, _ in fw_outbox._records(f, 4096):
                if item is None:
                    torn += 1
                else:
                    records.append(item)
    gen, payload, damaged = fw_store.read_latest_generation(str(Path(state) / "energy"))
    energy = json.loads(payload) if payload else None
    tmps = [p.name for p in Path(state).rglob("*.tmp")]
    return {"acked": acked, "records": records, "torn_records": torn, "tmp": tmps,
            "energy": energy, "energy_gen": gen, "energy_damaged": damaged}


def mwh(energy, name="import_wh"):
    kwh, m, _ = energy[name]
    return kwh * 1000000 + m


def dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --- ledger checks shared by the campaigns --------------------------------------------------

def check_records_stored(rig, device, snapshots, timeout=60):
    """Every intact record on flash at a snapshot, and every acked seq, is stored at the
    head-end with the same kind and body."""
    def missing():
        return missing_records(rig, device, snapshots)
    try:
        rig.wait(lambda: not missing(), timeout, "every record on flash to be stored", 0.3)
    except CampaignFailed as e:
        raise CampaignFailed("never stored (seq, kind): %s\n%s" % (missing()[:20], e)) from None
    st = rig.stored(device)
    for s in snapshots:
        for r in s["records"]:
            kind, body = st[r["seq"]]
            check(kind == r["kind"] and same(body, r["body"]),
                  "seq %d on flash differs from the stored item" % r["seq"], r, kind, body)


def overflow_dropped(rig, device):
    """Readings the meter reported dropping because its outbox was full (notices)."""
    return sum(b["count"] for k, b in rig.stored(device).values()
               if k == "notice" and b.get("what") == "readings dropped (outbox full)")


def check_readings(rig, device, lives, ends, flash_k=None, allow_missing=0):
    """Readings unique by seq and t; in each life exactly k = 1..K (no gap), K at least the
    last reading on flash at its end, the last within report_s + 2.5 s of the end.
    Returns {life: K}."""
    rows = [(s, b) for s, (k, b) in rig.stored(device).items() if k == "reading"]
    times = [b["t"] for _, b in rows]
    check(len(times) == len(set(times)), "a reading stored twice:",
          sorted(t for t in times if times.count(t) > 1)[:10])
    ks = {i: [] for i in range(len(lives))}
    phases = {}
    for t in times:
        i = max((j for j, s in enumerate(lives) if s < t), default=None)
        check(i is not None, "reading before the first start", t)
        x = (t - lives[i]) / REPORT_S
        phase = phases.setdefault(i, x - math.floor(x + 1e-3))
        k = round(x - phase)
        check(abs(x - phase - k) < 1e-3 and k >= 1, "reading t=%r off its life's grid" % t)
        ks[i].append(k)
    out = {}
    for i in range(len(lives)):
        got = sorted(ks[i])
        gone = [k for k in range(1, (got or [0])[-1] + 1) if k not in got]
        check(len(gone) <= allow_missing, "life %d: readings missing, k =" % i, gone[:20],
              "(%d reported dropped)" % allow_missing)
        allow_missing -= len(gone)
        K = (got or [0])[-1]
        if flash_k and i in flash_k:
            check(K >= flash_k[i], "life %d: reading k=%d on flash lost" % (i, flash_k[i]))
        if i in ends:
            expect = (ends[i] - lives[i]) / REPORT_S
            check(K >= expect - (REPORT_S + 2.5) / REPORT_S,
                  "life %d: readings stop early: K=%d, %.1f s lived" % (i, K, ends[i] - lives[i]))
        out[i] = K
    return out


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            abs(a - b) <= 1e-9 * max(1.0, abs(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def duplicates(rig, device):
    """Items the head-end stored twice: a reading (by its t) or a work result (by work id)."""
    seen, n = set(), 0
    for kind, body in rig.stored(device).values():
        key = (kind, body.get("t")) if kind == "reading" else \
            (kind, body.get("work")) if kind == "result" else None
        if key is not None:
            n += key in seen
            seen.add(key)
    return n


def missing_records(rig, device, snapshots):
    st = rig.stored(device)
    return [("acked", s["acked"]) for s in snapshots if s["acked"] and s["acked"] not in st] \
        + [(r["seq"], r["kind"]) for s in snapshots for r in s["records"] if r["seq"] not in st]


def check_results_once(rig, device):
    """Each work id has at most one stored result: nothing ran twice."""
    seen = {}
    for kind, body in rig.stored(device).values():
        if kind == "result":
            seen[body["work"]] = seen.get(body["work"], 0) + 1
    twice = {w: n for w, n in seen.items() if n > 1}
    check(not twice, "work ran twice (results stored):", twice)
    return seen


def tear(state, target, snap, stored, rng):
    """Leave flash as a power cut in the middle of a write would: the newest outbox record
    half-appended (dropped from the snapshot: its write never finished), or a write-then-
    rename cut before the rename (a partial .tmp of the energy slot, inbox or seq ceiling).
    Returns the torn seq for the outbox, True for a .tmp, None if nothing fit."""
    state = Path(state)
    if target == "outbox":
        segs = sorted((state / "outbox").glob("*.seg"), key=lambda p: int(p.stem))
        recs = seg_records(segs[-1]) if segs else []
        if not recs:
            return None
        o, n, item = recs[-1]
        if item["seq"] <= snap["acked"] or item["seq"] in stored:
            return None
        with open(segs[-1], "r+b") as f:
            f.truncate(o + rng.randrange(1, n))
        snap["records"] = [r for r in snap["records"] if r["seq"] != item["seq"]]
        return item["seq"]
    path = {"energy": state / ("energy.%d.tmp" % (((snap["energy_gen"] or 0) + 1) % 2)),
            "inbox": state / "inbox.tmp", "seq": state / "outbox" / "seq.tmp"}[target]
    rec = fw_store.encode(json.dumps({"torn": "x" * 40}).encode())
    path.write_bytes(rec[:rng.randrange(1, len(rec))])
    return True


# --- campaign 1: meter power loss -----------------------------------------------------------

def campaign_power_loss(rig, rng, kills=100, long_lives=0.25, say=print):
    """kill -9 the meter `kills` times; every kill is followed by a look at its flash."""
    device = "pl-%d" % rng.randrange(10 ** 6)
    m = rig.add_meter(device)
    rig.start(m)
    snaps, ends, flash_k = [], {}, {}
    stats = {"inspected": 0, "plain": 0, "offline": 0, "tmp_left": 0, "torn_records": 0,
             "unsent_at_kill": 0, "work_queued": 0}
    energy_flash = []   # (life, mwh on flash at its kill)
    torn = []           # seqs of outbox records torn mid-append
    try:
        for n in range(kills):
            if n % 3 == 0:
                rig.queue(device, "read", expires_in=3600)
                stats["work_queued"] += 1
            offline = n % 4 == 1 or rng.random() < 0.2
            # most lives are short; some outlast persist_s so the registers get saved
            time.sleep(rng.uniform(0.4, 2.8) if rng.random() >= long_lives else
                       rng.uniform(PERSIST_S, PERSIST_S + 4))
            if offline:
                rig.lab.partition("a")
                stats["offline"] += 1
                time.sleep(rng.uniform(1.0, 3.0))
            check(rig.running(m), "meter exited by itself\n" + m.log()[-2000:])
            life = len(rig.lives(m)) - 1
            inspect = rng.random() < 0.5
            if inspect:      # frozen between two instructions: flash as a kill there leaves it
                m.proc.send_signal(signal.SIGSTOP)
                stats["inspected"] += 1
            else:
                stats["plain"] += 1
            ends[life] = time.time()
            try:
                m.kill(signal.SIGKILL)
                snap = flash(m.state)
            finally:
                rig.lab.partition("a", on=False)
            snap["life"] = life
            snaps.append(snap)
            stats["tmp_left"] += bool(snap["tmp"])
            stats["torn_records"] += snap["torn_records"]
            stored = rig.stored(device)
            if rng.random() < 0.25:    # this power cut lands in the middle of a write
                target = rng.choice(["outbox", "outbox", "energy", "inbox", "seq"])
                got = tear(m.state, target, snap, stored, rng)
                if got is not None:
                    stats["torn_" + target] = stats.get("torn_" + target, 0) + 1
                    if target == "outbox":
                        torn.append(got)
            stats["unsent_at_kill"] += sum(r["seq"] not in stored for r in snap["records"])
            energy_flash.append((life, mwh(snap["energy"]) if snap["energy"] else 0))
            lives = rig.lives(m)
            for r in snap["records"]:
                if r["kind"] == "reading":
                    t = r["body"]["t"]
                    i = max(j for j, s in enumerate(lives) if s < t)
                    flash_k[i] = max(flash_k.get(i, 0), round((t - lives[i]) / REPORT_S))
            rig.start(m)
            if (n + 1) % 20 == 0:
                say("  power loss: %d/%d kills" % (n + 1, kills))
    finally:
        rig.lab.partition("a", on=False)
        if not rig.running(m):
            rig.start(m)
    check(stats["unsent_at_kill"], "no kill found an unsent item on flash: nothing was proven")
    check_records_stored(rig, device, snaps)
    lives = rig.lives(m)
    check(len(lives) == kills + 1, "lives", len(lives))
    now = max(time.time(), lives[-1] + 3 * REPORT_S)
    rig.wait(lambda: max([b["t"] for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 30, "the running life's readings")
    ends[len(lives) - 1] = now
    K = check_readings(rig, device, lives, ends, flash_k)
    # energy: on flash never backwards; each life starts from what was on flash; the flash
    # lags the last stored reading of its life by no more than persist_s of metering
    prev = 0
    for life, e in energy_flash:
        check(e >= prev, "energy on flash went backwards at life %d: %d < %d mWh" % (life, e, prev))
        prev = e
    readings = sorted((b["t"], b["import_wh"]) for k, b in rig.stored(device).values()
                      if k == "reading")
    by_life = {}
    for t, wh in readings:
        by_life.setdefault(max(j for j, s in enumerate(lives) if s < t), []).append(wh)
    flash_at = dict(energy_flash)      # life -> mwh on flash when it was killed
    worst_lag = 0.0
    restored = 0.0
    for i in range(len(lives)):
        got = by_life.get(i, [])
        check(got == sorted(got), "energy went backwards within life %d" % i)
        if got:
            check(got[0] >= restored - 1e-6, "life %d starts below the energy on flash: %.3f < "
                  "%.3f Wh" % (i, got[0], restored))
        if i in flash_at:
            fl = flash_at[i] / 1000.0
            check(fl >= restored - 1e-6, "life %d: flash below its restored energy" % i)
            if got:
                lag = got[-1] - fl
                worst_lag = max(worst_lag, lag)
            restored = fl
    # 1500 W default load: persist_s of metering is PERSIST_S * 1500 / 3600 Wh (+ 5 % margin)
    limit = PERSIST_S * 1500 / 3600.0 * 1.05
    check(worst_lag <= limit, "energy on flash lags the last reading by %.3f Wh > %.3f Wh "
          "(persist_s %d)" % (worst_lag, limit, PERSIST_S))
    results = check_results_once(rig, device)
    # a torn append is never stored, is reported in a notice, and its seq is never reused
    st = rig.stored(device)
    for seq in torn:
        check(seq not in st, "torn record seq %d stored" % seq)
        check(any(k == "notice" and b["what"] == "outbox records damaged" and s > seq
                  for s, (k, b) in st.items()), "torn record seq %d not reported" % seq)
    rig.stop(m)
    seqs = [s for s in rig.stored(device)]
    return {"runs": kills + 1, "faults": kills, "produced": len(seqs),
            "readings": sum(K.values()), "ledger_items": len({r["seq"] for s in snaps
                                                             for r in s["records"]}),
            "lost": len(missing_records(rig, device, snaps)),
            "duplicated": duplicates(rig, device),
            "results": len(results), "energy_lag_max_wh": round(worst_lag, 3),
            "energy_lag_limit_wh": round(limit, 3), **stats}


# --- campaign 2: corrupted flash ------------------------------------------------------------

def _flip(path, offset):
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def campaign_corrupt(rig, rng, rounds=4, offline=(5.0, 7.0), say=print):
    device = "cf-%d" % rng.randrange(10 ** 6)
    m = rig.add_meter(device)
    rig.start(m)
    totals = {"runs": 0, "faults": 0, "produced": 0, "lost": 0, "duplicated": 0,
              "records_damaged": 0, "records_kept": 0}
    kept = []
    rig.wait(lambda: rig.stored(device), 20, "first items")
    for rnd in range(rounds):
        wid = rig.queue(device, "read", expires_in=600)
        rig.wait(lambda: rig.work_status(wid) == "done", 30,
                 "a read to run (so the inbox has a record)")
        rig.lab.partition("a")
        time.sleep(rng.uniform(*offline))
        m.kill(signal.SIGKILL)
        rig.lab.partition("a", on=False)
        before = flash(m.state)
        stored = rig.stored(device)
        top = max([r["seq"] for r in before["records"]] + [before["acked"]])
        segs = sorted((m.state / "outbox").glob("*.seg"), key=lambda p: int(p.stem))
        check(segs, "no outbox segment on flash")
        seg = segs[-1]
        recs = [(o, n, it) for o, n, it in seg_records(seg)
                if it["seq"] > before["acked"] and it["seq"] not in stored]
        check(len(recs) >= 3, "round %d: too few unsent records (%d)" % (rnd, len(recs)))
        damaged = set()
        # a. a byte inside a middle record's payload (its CRC no longer matches)
        mid = rng.randrange(1, len(recs) - 1)
        o, n, it = recs[mid]
        _flip(seg, o + 7 + rng.randrange(n - 11))
        regions = 1 if mid == len(recs) - 2 else 2   # adjacent damage is one region
        damaged.add(it["seq"])
        # b. the newest record torn: the segment truncated inside it
        o, n, it = recs[-1]
        with open(seg, "r+b") as f:
            f.truncate(o + rng.randrange(1, n))
        damaged.add(it["seq"])
        faults = 2
        # c. the newest energy slot damaged: the older one must be used
        gen = before["energy_gen"]
        older = None
        if gen is not None and gen >= 2:
            slot = m.state / ("energy.%d" % (gen % 2))
            other = fw_store.read_record(str(m.state / ("energy.%d" % ((gen - 1) % 2))))
            older = mwh(json.loads(other[4:]))
            _flip(slot, rng.randrange(7, slot.stat().st_size - 4))
            faults += 1
        # d. the inbox record cut in half; e. the seq ceiling file damaged (every other round)
        inbox = m.state / "inbox"
        if inbox.exists():
            data = inbox.read_bytes()
            inbox.write_bytes(data[:len(data) // 2])
            faults += 1
        # e. the seq ceiling or the acked file damaged (by turns): the seq ceiling is
        # recomputed with room to spare; a lost `acked` makes the meter resend what the
        # head-end already stored, which it must not store twice
        meta = m.state / "outbox" / ("seq" if rnd % 2 else "acked")
        if meta.exists():
            _flip(meta, 8)
            faults += 1
        keep = [r for r in before["records"] if r["seq"] not in damaged]
        kept.append({"acked": before["acked"], "records": keep})
        start_n = len(rig.lives(m))
        rig.start(m)
        life_t = rig.lives(m)[start_n]
        # every intact record arrives; the damaged ones never do; notices say what was dropped
        check_records_stored(rig, device, [{"acked": before["acked"], "records": keep}])

        def notices():
            return {b["what"]: b["count"] for s, (k, b) in rig.stored(device).items()
                    if k == "notice" and s > top}
        want = {"outbox records damaged"} | ({"energy slots damaged"} if older else set()) | \
            ({"inbox damaged"} if inbox.exists() else set()) | \
            ({"outbox seq/acked files damaged"} if meta.exists() else set())
        rig.wait(lambda: want <= set(notices()), 20, "notices %s" % want)
        check(notices()["outbox records damaged"] >= regions, "damage under-reported",
              notices(), "(%d damaged regions)" % regions)
        st = rig.stored(device)
        for s in damaged:
            check(s not in st, "damaged record seq %d stored" % s)
        # it goes on: new readings from the new life, seqs above everything before
        rig.wait(lambda: sum(1 for k, b in rig.stored(device).values()
                             if k == "reading" and b["t"] > life_t) >= 2, 20,
                 "readings after the corruption")
        st = rig.stored(device)
        new = [s for s, (k, b) in st.items() if k == "reading" and b["t"] > life_t]
        check(min(new) > top, "a seq reused after corruption", min(new), top)
        if older is not None:
            first = min((b["t"], b["import_wh"]) for k, b in st.values()
                        if k == "reading" and b["t"] > life_t)[1]
            check(first * 1000 >= older - 1, "energy restored below the older slot",
                  first, older / 1000.0)
        totals["runs"] += 1
        totals["faults"] += faults
        totals["records_damaged"] += len(damaged)
        totals["records_kept"] += len(keep)
        say("  corrupt round %d: %d faults, %d records damaged, %d kept, notices %s"
            % (rnd + 1, faults, len(damaged), len(keep), notices()))
    rig.stop(m)
    st = rig.stored(device)
    totals["produced"] = len(st) + totals["records_damaged"]
    # lost: intact records never stored (the deliberately damaged ones are not counted)
    totals["lost"] = len(missing_records(rig, device, kept))
    totals["duplicated"] = duplicates(rig, device)
    check_results_once(rig, device)
    return totals


# --- campaign 3: head-end crash -------------------------------------------------------------

def campaign_headend_crash(rig, rng, kills=50, say=print):
    device = "hc-%d" % rng.randrange(10 ** 6)
    m = rig.add_meter(device)
    rig.start(m)
    rig.wait(lambda: rig.stored(device), 20, "first items")
    accepted, ambiguous = [], [0]
    stop = threading.Event()
    api = rig.headend.api(rig.api.headers["Authorization"].split()[-1])

    def operator():
        while not stop.is_set():
            try:
                r = api.post("/v1/devices/%s/work" % device,
                             json={"op": "read", "args": {}, "expires_in": 3600})
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
                else:
                    ambiguous[0] += 1
            except Exception:  # noqa: BLE001  the head-end is down: not acknowledged
                ambiguous[0] += 1
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.4))

    t = threading.Thread(target=operator, daemon=True)
    t.start()
    downtime = []
    try:
        for n in range(kills):
            time.sleep(rng.uniform(0.3, 2.5))
            check(rig.running(m), "meter exited\n" + m.log()[-2000:])
            rig.headend.kill(signal.SIGKILL)
            t0 = time.monotonic()
            time.sleep(rng.uniform(0.0, 1.0))
            rig.headend.start()
            downtime.append(time.monotonic() - t0)
            if (n + 1) % 10 == 0:
                say("  head-end crash: %d/%d kills, %d work accepted" % (n + 1, kills,
                                                                         len(accepted)))
    finally:
        stop.set()
        t.join(30)
        api.close()
    # every acknowledged work item finishes `done`, exactly once
    def open_work():
        rows = rig.work_rows(device)
        return [w for w in accepted if w not in rows or rows[w][0] != "done"]
    # the meter's backoff (1 s doubling, cap 300 s) may have grown while the head-end was
    # down most of the time: allow it to run out
    rig.wait(lambda: not open_work(), 400, "every accepted work item to be done", 0.5)
    rows = rig.work_rows(device)
    check(all(w in rows for w in accepted), "accepted work lost")
    results = check_results_once(rig, device)
    missing = [w for w in accepted if w not in results]
    check(not missing, "done without a stored result:", missing[:10])
    # the meter lived through it all: its seqs are contiguous from 1 (an acked item the
    # head-end lost would be a gap: the meter deleted it), readings have no gap
    now = time.time() + 2
    rig.wait(lambda: max([b["t"] for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 60, "readings up to now")
    st = rig.stored(device)
    seqs = sorted(st)
    gaps = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    # a gap is an item acked and lost, unless the meter dropped readings for overflow and
    # said so in notices (its outbox fills while it backs off): then the counts must match
    dropped = overflow_dropped(rig, device)
    check(len(gaps) == dropped, "seqs acked to the meter and lost:", gaps[:20],
          "(%d readings reported dropped for overflow)" % dropped)
    lives = rig.lives(m)
    check(len(lives) == 1, "the meter restarted")
    K = check_readings(rig, device, lives, {0: now}, allow_missing=dropped)
    recv = sorted({r for (r,) in rig._db("SELECT received FROM items WHERE device = ?",
                                         (device,))})
    silence = max(b - a for a, b in zip(recv, recv[1:]))
    rig.stop(m)
    extra = len([w for w in rows if w not in accepted])
    return {"runs": kills + 1, "faults": kills, "produced": len(seqs), "readings": K[0],
            "work_accepted": len(accepted), "work_unacknowledged_attempts": ambiguous[0],
            "work_queued_without_202": extra,
            "lost": len(open_work()) + len(gaps) - dropped,
            "dropped_overflow_reported": dropped, "longest_silence_s": round(silence, 1),
            "duplicated": duplicates(rig, device),
            "downtime_avg_s": round(sum(downtime) / len(downtime), 2)}


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
        rs = [b["t"] for k, b in rig.stored(device).values() if k == "reading"]
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
    rig.wait(lambda: max([b["t"] for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 420, "readings up to now")
    order = rig.stored_order(device)
    check(order == sorted(order), "items stored out of order")
    gaps = sorted(set(range(1, max(order) + 1)) - set(order))
    dropped = overflow_dropped(rig, device)   # a long outage fills the outbox (--long)
    check(len(gaps) == dropped, "seqs lost:", gaps[:20], "(%d reported dropped)" % dropped)
    lives = rig.lives(m)
    check(len(lives) == 1, "the meter restarted")
    K = check_readings(rig, device, lives, {0: now}, allow_missing=dropped)
    check_results_once(rig, device)
    rig.stop(m)
    return {"runs": len(figures), "faults": len(plan) + flap_cycles, "produced": len(order),
            "readings": K[0], "lost": len(gaps) - dropped, "dropped_overflow_reported": dropped,
            "duplicated": duplicates(rig, device),
            "outages": figures}


# --- campaign 5: slow and hostile network -------------------------------------------------

MIDDLEBOX = Path(__file__).resolve().parent / "faults_middlebox.py"


def netem(lab, on=True, spec=("delay", "150ms", "50ms", "loss", "2%")):
    """Add (or remove) tc netem on both ends of site a's uplink; None, or why it cannot."""
    for ns, dev in (("a", netlab.UPLINK), ("out", "a0")):
        cmd = ["tc", "qdisc", "add" if on else "del", "dev", dev, "root"] + \
            (["netem", *spec] if on else [])
        if not shutil.which("tc"):
            return "tc not installed (apt-get install iproute2)"
        r = subprocess.run(lab._exec(ns, cmd), capture_output=True, text=True, timeout=10)
        if r.returncode and on:
            return "tc netem unavailable here (kernel sch_netem?): %s" % r.stderr.strip()
    return None


def campaign_hostile(rig, rng, works=8, gap=(5.0, 45.0), idle=30.0, say=print):
    """Work queued at random moments reaches a meter whose long-polls cross a middlebox that
    closes connections idle for `idle` s, with netem latency and loss on the link if the
    kernel has it."""
    device = "hn-%d" % rng.randrange(10 ** 6)
    lab, he = rig.lab, rig.headend
    mb = lab.run("out", [sys.executable, str(MIDDLEBOX), lab.headend_ip, "0", lab.headend_ip,
                         str(he.port), str(idle)], stdout=subprocess.PIPE, text=True)
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
    r = rig.api.post("/v1/devices", json={"id": device})
    check(r.status_code == 201, r.text)
    m = system.Meter(rig.dir, device, r.json()["key"],
                     "http://%s:%s" % (lab.headend_ip, line.split()[1]), lab=lab, ns="a",
                     report_s=60, poll_wait_s=25, persist_s=PERSIST_S)
    m.name = device
    rig.meters[device] = m
    why_no_netem = netem(lab)
    latencies, accepted = [], []
    try:
        rig.start(m)
        rig.wait(lambda: rig.stored(device), 30, "first items through the middlebox")
        for n in range(works):
            time.sleep(rng.uniform(*gap))
            t0 = time.monotonic()
            wid = rig.queue(device, "read", expires_in=600)
            accepted.append(wid)
            rig.wait(lambda: rig.work_status(wid) not in ("queued", "held", "delivered"), 60,
                     "work %s" % wid, 0.05)
            latencies.append(time.monotonic() - t0)
            say("  hostile: work %d/%d done in %.2f s (middlebox closes %s)"
                % (n + 1, works, latencies[-1], closes))
    finally:
        if why_no_netem is None:
            netem(lab, on=False)
        mb.kill()
        m.kill()
    check(all(rig.work_status(w) == "done" for w in accepted), "work not done")
    limit = 5.0 if why_no_netem else 8.0
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
            "netem": why_no_netem or "delay 150ms +-50ms, loss 2%"}


# --- runner ---------------------------------------------------------------------------------

CAMPAIGNS = {
    1: ("meter power loss", campaign_power_loss, {"kills": 100}, {"kills": 5, "long_lives": 0}),
    2: ("corrupted flash", campaign_corrupt, {"rounds": 4}, {"rounds": 1, "offline": (4, 4.5)}),
    3: ("head-end crash", campaign_headend_crash, {"kills": 50}, {"kills": 4}),
    4: ("network partitions", campaign_partitions, {"outages": (5, 60), "flap_cycles": 8},
        {"outages": (3,), "flap_cycles": 2, "flap_s": (0.5, 2.0)}),
    5: ("hostile network", campaign_hostile, {"works": 8}, {"works": 2, "gap": (1.0, 3.0)}),
}


def run(seed, only=None, smoke=False, long=False, work=None, say=print):
    """Run campaigns; returns {number: (ok, figures or error, seconds)}."""
    results = {}
    tmp = work or tempfile.mkdtemp(prefix="bc-faults-")
    try:
        with Rig(tmp, log=say) as rig:
            for num, (name, fn, full, short) in CAMPAIGNS.items():
                if only and num not in only:
                    continue
                kwargs = dict(short if smoke else full)
                if num == 4 and long and not smoke:
                    kwargs["long"] = True
                rng = random.Random("%s-%d" % (seed, num))
                say("campaign %d: %s (seed %s%s)" % (num, name, seed, ", smoke" if smoke else ""))
                t0 = time.monotonic()
                try:
                    fig = fn(rig, rng, say=say, **kwargs)
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
    finally:
        if work is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", default=os.environ.get("BC_FAULTS_SEED", "20250105"))
    ap.add_argument("--only", default="", help="comma-separated campaign numbers")
    ap.add_argument("--smoke", action="store_true", help="the short versions")
    ap.add_argument("--long", action="store_true", help="add a 10 min partition")
    ap.add_argument("--keep", default=None, help="work dir to keep (logs, state, hub.db)")
    a = ap.parse_args(argv)
    reason = why_skip()
    if reason:
        print("faults: cannot run: %s" % reason, file=sys.stderr)
        return 2
    only = {int(x) for x in a.only.split(",") if x.strip()}
    if a.keep:
        Path(a.keep).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    res = run(a.seed, only, a.smoke, a.long, a.keep,
              say=lambda *x: print(*x, flush=True))
    print("\nSUMMARY (seed %s, %.0f s)" % (a.seed, time.monotonic() - t0))
    for num, (ok, fig, dt) in res.items():
        if ok:
            print("  %d %-20s PASS %4.0f s  runs %s, faults %s, produced %s, lost %s, "
                  "duplicated %s" % (num, CAMPAIGNS[num][0], dt, fig["runs"], fig["faults"],
                                     fig["produced"], fig["lost"], fig["duplicated"]))
        else:
            print("  %d %-20s FAIL %4.0f s" % (num, CAMPAIGNS[num][0], dt))
    return 0 if all(ok for ok, _, _ in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
