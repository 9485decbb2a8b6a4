"""Fault campaigns 1-2 (tools/faults/cli.py) on the meter itself: power loss (kill -9 at random
moments, flash inspected) and corrupted flash (a stopped meter's files damaged)."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from faults.campaign import HOLD, PERSIST_S, REPORT_S, check
from faults.ledger import (
    check_readings,
    check_records_stored,
    check_results_once,
    duplicates,
    flash,
    fw_store,
    missing_records,
    mwh,
    same,
    seg_records,
    tear,
)
from headend.meter_time import record_time

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
    torn = []           # (seq, record before the tear) of outbox records torn mid-append
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
                # long enough for the held readings to be written (HOLD of them)
                time.sleep(rng.uniform(1.0, 3.0) + HOLD * REPORT_S)
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
                whole = {r["seq"]: r for r in snap["records"]}
                got = tear(m.state, target, snap, stored, rng)
                if got is not None:
                    stats["torn_" + target] = stats.get("torn_" + target, 0) + 1
                    if target == "outbox":
                        torn.append((got, whole.get(got)))
            stats["unsent_at_kill"] += sum(r["seq"] not in stored for r in snap["records"])
            energy_flash.append((life, mwh(snap["energy"]) if snap["energy"] else 0))
            lives = rig.lives(m)
            for r in snap["records"]:
                if r["kind"] == "reading":
                    t = record_time(r["body"])
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
    rig.wait(lambda: max([record_time(b) for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 30, "the running life's readings")
    ends[len(lives) - 1] = now
    K = check_readings(rig, device, lives, ends, flash_k, tail=HOLD)
    # energy: on flash never backwards; each life starts from what was on flash; the flash
    # lags the last stored reading of its life by no more than persist_s of metering
    prev = 0
    for life, e in energy_flash:
        check(e >= prev, "energy on flash went backwards at life %d: %d < %d mWh" % (life, e, prev))
        prev = e
    readings = sorted((record_time(b), b["import_wh"]) for k, b in rig.stored(device).values()
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
    # a torn append is never stored, is reported in a notice, and its seq is never reused.
    # Unless a request carried it before the kill (it was whole then) and was still on its
    # way when the campaign looked: a mail in the server's queue (email), or a held reading
    # sent before its append. Then what is stored is the whole record, never the torn bytes
    # nor another record under its seq.
    st = rig.stored(device)
    for seq, whole in torn:
        if seq in st:
            kind, body = st[seq]
            check(whole is not None and kind == whole["kind"] and same(body, whole["body"]),
                  "torn record seq %d stored, not as it was before the tear" % seq, whole,
                  kind, body)
            stats["torn_sent_before"] = stats.get("torn_sent_before", 0) + 1
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
        rig.wait(lambda wid=wid: rig.work_status(wid) == "done", 30,
                 "a read to run (so the inbox has a record)")
        rig.lab.partition("a")
        time.sleep(rng.uniform(*offline) + HOLD * REPORT_S)    # the held readings written
        m.kill(signal.SIGKILL)
        rig.lab.partition("a", on=False)
        before = flash(m.state)
        stored = rig.stored(device)
        top = max([r["seq"] for r in before["records"]] + [before["acked"]])
        segs = sorted((m.state / "outbox").glob("*.seg"), key=lambda p: int(p.stem))
        check(segs, "no outbox segment on flash")
        # the unsent records of the newest segment, and of the one before when a segment
        # began just before the kill (a transport that batches, email, holds more on flash)
        recs = [(seg, o, n, it) for seg in segs[-2:] for o, n, it in seg_records(seg)
                if it["seq"] > before["acked"] and it["seq"] not in stored]
        check(len(recs) >= 3, "round %d: too few unsent records (%d)" % (rnd, len(recs)))
        damaged = set()
        # a. a byte inside a middle record's payload (its CRC no longer matches)
        mid = rng.randrange(1, len(recs) - 1)
        seg, o, n, it = recs[mid]
        _flip(seg, o + 7 + rng.randrange(n - 11))
        regions = 1 if mid == len(recs) - 2 else 2   # adjacent damage is one region
        damaged.add(it["seq"])
        # b. the newest record torn: its segment truncated inside it
        seg, o, n, it = recs[-1]
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

        def notices(top=top):
            return {b["what"]: b["count"] for s, (k, b) in rig.stored(device).items()
                    if k == "notice" and s > top}
        want = {"outbox records damaged"} | ({"energy slots damaged"} if older else set()) | \
            ({"inbox damaged"} if inbox.exists() else set()) | \
            ({"outbox seq/acked files damaged"} if meta.exists() else set())
        rig.wait(lambda want=want: want <= set(notices()), 20, "notices %s" % want)
        check(notices()["outbox records damaged"] >= regions, "damage under-reported",
              notices(), "(%d damaged regions)" % regions)
        st = rig.stored(device)
        for s in damaged:
            check(s not in st, "damaged record seq %d stored" % s)
        # it goes on: new readings from the new life, seqs above everything before
        rig.wait(lambda life_t=life_t: sum(1 for k, b in rig.stored(device).values()
                                           if k == "reading" and record_time(b) > life_t) >= 2, 20,
                 "readings after the corruption")
        st = rig.stored(device)
        new = [s for s, (k, b) in st.items() if k == "reading" and record_time(b) > life_t]
        check(min(new) > top, "a seq reused after corruption", min(new), top)
        if older is not None:
            first = min((record_time(b), b["import_wh"]) for k, b in st.values()
                        if k == "reading" and record_time(b) > life_t)[1]
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

