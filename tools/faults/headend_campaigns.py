"""Fault campaign 3 (tools/faults/cli.py): kill -9 the head-end at random moments while an
operator queues work (each command with its own Idempotency-Key, retried with that key until
answered) and the meter reports."""
from __future__ import annotations

import signal
import threading
import time

from faults.campaign import REPORT_S, check
from faults.ledger import (
    check_readings,
    check_results_once,
    duplicates,
    overflow_dropped,
    unexplained_gaps,
)
from headend.meter_time import record_time

# --- campaign 3: head-end crash -------------------------------------------------------------

def restart_headend(rig, rng):
    """Campaign 3's fault: kill -9 the head-end, start it again up to a second later."""
    rig.headend.kill(signal.SIGKILL)
    time.sleep(rng.uniform(0.0, 1.0))
    rig.headend.start()


def campaign_headend_crash(rig, rng, kills=50, say=print, crash=restart_headend,
                           what="head-end crash"):
    """crash(rig, rng): the fault, returning once the head-end may answer again (campaigns
    6 and 7 pass their own: tools/faults/scale_campaigns.py)."""
    device = "hc-%d" % rng.randrange(10 ** 6)
    m = rig.add_meter(device)
    rig.start(m)
    rig.wait(lambda: rig.stored(device), 20, "first items")
    accepted, ambiguous = [], [0]
    retry = {"retries": 0, "replayed": 0, "gave_up": 0}
    stop = threading.Event()
    api = rig.headend.api(rig.api.headers["Authorization"].split()[-1])

    def command(n):
        """One `read` with its own Idempotency-Key, retried with the same key until the
        head-end answers (it may have committed the work and died before the 202)."""
        key = {"Idempotency-Key": "c3-%s-%d" % (device, n)}
        for attempt in range(200):
            if attempt:
                retry["retries"] += 1
                time.sleep(0.1)
            try:
                r = api.post("/v1/devices/%s/work" % device,
                             json={"op": "read", "args": {}, "expires_in": 3600}, headers=key)
            except Exception:  # noqa: BLE001  the head-end is down: no answer
                ambiguous[0] += 1
                continue
            if r.status_code == 202:
                if r.headers.get("idempotent-replayed") == "true":
                    retry["replayed"] += 1
                accepted.append(r.json()["id"])
                return
            ambiguous[0] += 1
        retry["gave_up"] += 1

    def operator():
        n = 0
        while not stop.is_set():
            command(n)
            n += 1
            time.sleep(rng.uniform(0.05, 0.4))

    t = threading.Thread(target=operator, daemon=True)
    t.start()
    downtime = []
    try:
        for n in range(kills):
            time.sleep(rng.uniform(0.3, 2.5))
            check(rig.running(m), "meter exited\n" + m.log()[-2000:])
            t0 = time.monotonic()
            crash(rig, rng)
            downtime.append(time.monotonic() - t0)
            if (n + 1) % 10 == 0:
                say("  %s: %d/%d faults, %d work accepted" % (what, n + 1, kills,
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
    rig.wait(lambda: max([record_time(b) for k, b in rig.stored(device).values() if k == "reading"]
                         or [0]) >= now - REPORT_S, 60, "readings up to now")
    st = rig.stored(device)
    seqs = sorted(st)
    gaps = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    # a gap is an item acked and lost, unless the meter dropped readings for overflow and
    # said so in notices (its outbox fills while it backs off): then the counts must match
    dropped = overflow_dropped(rig, device)
    unexplained = unexplained_gaps(gaps, dropped, kills)
    check(not unexplained, "seqs acked to the meter and lost:", gaps[:20],
          "(%d readings reported dropped for overflow)" % dropped)
    lives = rig.lives(m)
    check(len(lives) == 1, "the meter restarted")
    K = check_readings(rig, device, lives, {0: now}, allow_missing=len(gaps))
    recv = sorted({r for (r,) in rig.query("SELECT received FROM items WHERE device = ?",
                                         (device,))})
    silence = max(b - a for a, b in zip(recv, recv[1:]))
    rig.stop(m)
    # with keys, the operator learns the id of every work item committed: none is extra,
    # and none was queued twice by a retry
    extra = len([w for w in rows if w not in accepted])
    check(not extra, "work committed that the operator never got an id for:", extra)
    check(len(set(accepted)) == len(accepted), "two commands got the same work id")
    check(not retry["gave_up"], "a command got no answer after 200 tries")
    return {"runs": kills + 1, "faults": kills, "produced": len(seqs), "readings": K[0],
            "work_accepted": len(set(accepted)), "work_failed_attempts": ambiguous[0],
            "work_retries_same_key": retry["retries"],
            "work_replayed_after_lost_reply": retry["replayed"],
            "work_queued_without_202": extra,
            "lost": len(open_work()) + unexplained, "missing_seqs": len(gaps),
            "dropped_overflow_reported": dropped, "longest_silence_s": round(silence, 1),
            "duplicated": duplicates(rig, device),
            "downtime_avg_s": round(sum(downtime) / len(downtime), 2)}

