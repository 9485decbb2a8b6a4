"""End-to-end scenario 5 (docs/e2e.md): kill -9 a meter behind its firewall at random
moments, mid-write included; the head-end ends with every item once. Shares the lab, the
head-end and the meters of test_e2e.py (the session fixture `env`)."""

import math
import random
import signal
import time

import pytest
from e2e_env import (
    HOLD,
    KILLS,
    REPORT_S,
    SEED,
    _interval,
    _outbox_on_flash,
    _same,
)

from headend.meter_time import record_time

pytestmark = pytest.mark.root


def test_5_kill_9_loses_and_duplicates_nothing(env, record_property):
    """5. Meter A killed with kill -9 mid-exchange loses no reading it wrote and duplicates
    none (the readings its outbox held in RAM, at most HOLD, may go: docs/reliability.md).

    A is killed KILLS times at seeded random moments (BC_E2E_SEED), each 0.5-2 s into a
    life, with a `read` queued first so results are in flight too. The 2nd and 4th kill hit
    A online, in the middle of its exchanges (items stored at the head-end, the ack not yet
    back): over http its continuous 1 s long-polls, over mqtt the `up` it publishes each
    second and the answer on `down`. An MQTT exchange takes milliseconds, so the online
    kills (both transports) are aimed 10-80 ms after a reading is due (its phase known from
    the life's stored readings), when that reading is on flash on its way out (an MQTT meter
    sends its `up` within 0.25 s); the evidence counts the unacked items they caught. The
    1st, 3rd and 5th hit A offline: its uplink is cut 1.5-3 s before the kill, so readings
    pile up unsent on its flash (restored after the kill; over mqtt the restarted A's
    connection takes its session over from the old, half-open one at the broker).
    Each kill is SIGSTOP (the process freezes between two instructions, so its flash is
    exactly as a kill there leaves it), a read-only look at its outbox files with
    firmware/outbox.py, SIGKILL, then a restart on the same state dir. Checks:

    a. ledger: every intact record on flash at each kill, and the seq the meter had as
       acked, is eventually stored at the head-end with the same kind and body: nothing
       appended before a kill is lost, no seq is reused for another item. At least one of
       them must have been unsent at its kill, or the run proved nothing and fails;
    b. stored readings are unique by seq and by `t`: a resend after a restart is
       deduplicated, never stored again under a new seq;
    c. no gap: each start prints its wall time s, and a reading's t is s + phase + k *
       report_s (k = 1, 2, ..., the sample clock; one phase per life, under half an
       interval). The stored readings of every life are exactly k = 1..K, K at least the
       last reading on flash at the kill, the last within report_s + 2 s of the kill (or
       of the check, for the running life; 1 s of it allows for the meter's sample clock
       lagging real time on a busy host). So a reading deleted on the meter but not
       stored, or lost in a restart, or never appended, shows as a missing k;
    d. no work ran twice: each work id has at most one stored result.
    """
    rng = random.Random(SEED)
    device, meter = "meter-a", env.meters["meter-a"]
    ledger, kills, unsent, caught = [], {}, [], []
    try:
        for n in range(KILLS):
            offline = n % 2 == 0
            env.queue(device, "read", expires_in=60)
            time.sleep(rng.uniform(0.5, 2.0))
            if offline:
                env.lab.partition("a")
                # long enough for the held readings (HOLD of them) to be written
                time.sleep(rng.uniform(1.5, 3.0) + HOLD * REPORT_S)
            else:
                _aim_after_reading(env, device, rng)
            assert env.running(device), "meter A exited by itself\n" + env.logs()
            life = len(env.lives(device)) - 1
            meter.proc.send_signal(signal.SIGSTOP)
            kills[life] = time.time()
            try:
                ledger.append(_outbox_on_flash(meter.state))
                if not offline:
                    caught.append(sum(r["seq"] > ledger[-1][0] for r in ledger[-1][1]))
            finally:
                meter.kill(signal.SIGKILL)
                env.lab.partition("a", on=False)
            stored = env.stored_items(device)
            unsent += [r["seq"] for r in ledger[-1][1] if r["seq"] not in stored]
            env.start(device)
    finally:
        env.lab.partition("a", on=False)
        if not env.running(device):
            env.start(device)
    assert unsent, "no kill found an unsent item on A's flash: nothing was proven"

    def missing():
        stored = env.stored_items(device)
        return [("acked", a) for a, _ in ledger if a and a not in stored] + \
            [(r["seq"], r["kind"]) for _, recs in ledger for r in recs if r["seq"] not in stored]

    try:
        env.wait(lambda: not missing(), 20 * _patience(env),
                 "every item on A's flash at a kill to arrive")
    except AssertionError as e:
        raise AssertionError("never stored (seq, kind): %s\n%s" % (missing(), e)) from None
    stored = env.stored_items(device)
    for _acked, records in ledger:
        for r in records:
            kind, body = stored[r["seq"]]
            assert kind == r["kind"] and _same(body, r["body"]), \
                ("seq %d on flash differs from the stored item" % r["seq"], r, kind, body)

    lives = env.lives(device)
    assert len(lives) == KILLS + 1, lives
    slack = REPORT_S + 2.0 + HOLD * REPORT_S     # a kill takes the held readings with it
    # the running life: let it run 3 s, then wait until its readings up to then are in
    now = max(time.time(), lives[-1] + 3 * REPORT_S)
    env.wait(lambda: max(record_time(r["body"]) for r in env.readings(device)) >= now - REPORT_S,
             20 * _patience(env), "A's recent readings")
    end = dict(kills)
    end[len(lives) - 1] = now
    rows = env.readings(device)
    seqs = [r["seq"] for r in rows]
    times = [record_time(r["body"]) for r in rows]
    assert len(seqs) == len(set(seqs)), "a seq stored twice"
    assert len(times) == len(set(times)), sorted(t for t in times if times.count(t) > 1)

    on_flash = {}   # life -> highest k of a reading on flash at its kill
    phases = {}     # life -> where the sample clock's first 10-cycle window began
    ks = {i: [] for i in range(len(lives))}
    for t in times:
        i = max((j for j, s in enumerate(lives) if s < t), default=None)
        assert i is not None, ("reading before the first start", t, lives)
        k, phase = _interval(t, lives[i])
        phases.setdefault(i, phase)
        assert abs(phase - phases[i]) < 0.01 and phase < 0.5 and k >= 1, \
            ("reading t=%r is not k + phase intervals after its start %r" % (t, lives[i]),
             phase, phases[i])
        ks[i].append(k)
    for _, records in ledger:
        for r in records:
            if r["kind"] == "reading":
                t = record_time(r["body"])
                i = max(j for j, s in enumerate(lives) if s < t)
                on_flash[i] = max(on_flash.get(i, 0), _interval(t, lives[i])[0])
    for i, s in enumerate(lives):
        got = sorted(ks[i])
        assert got == list(range(1, len(got) + 1)), \
            ("life %d (start %.3f): readings missing" % (i, s),
             sorted(set(range(1, (got or [0])[-1] + 1)) - set(got)))
        last = s + len(got) * REPORT_S
        assert len(got) >= on_flash.get(i, 0), ("life %d: a reading on flash never arrived" % i)
        assert last >= end[i] - slack, \
            ("life %d: last stored reading %.2f s before its end" % (i, end[i] - last), got)

    results = [body.get("work") for kind, body in env.stored_items(device).values()
               if kind == "result"]
    twice = sorted({w for w in results if results.count(w) > 1})
    assert not twice, ("work ran twice across kills", twice)
    record_property("evidence", "%d kills (%d offline; online ones caught %s unacked); %d items "
                    "on flash at kills, %d of them unsent, all stored; %d readings in %d lives, "
                    "none missing or twice"
                    % (KILLS, (KILLS + 1) // 2, "+".join(map(str, caught)),
                       sum(len(r) for _, r in ledger), len(unsent),
                       len(rows), len(lives)))


def _patience(env):
    """How many times longer the waits are over email: a restarted meter logs in to IMAP and
    mails its readings every mail_send_s (5 s) through postfix and dovecot."""
    return 3 if env.transport == "email" else 1


def _aim_after_reading(env, device, rng):
    """Sleep until 10-80 ms after the meter's next reading is due (its readings come every
    REPORT_S at a fixed phase per life, known from the life's first stored reading)."""
    start = env.lives(device)[-1]

    def last():
        times = (record_time(r["body"]) for r in env.readings(device))
        return max((t for t in times if t > start), default=None)

    t = env.wait(last, 10 * _patience(env), "a reading of A's new life", 0.05)
    now = time.time()
    due = t + math.ceil((now - t) / REPORT_S) * REPORT_S
    time.sleep(max(0.0, due - now) + rng.uniform(0.01, 0.08))
