"""Retention (issue 19, item 5): readings older than the raw window are folded into
15-minute and daily aggregates and deleted, in batches that each commit whole. Checked
against numpy and the raw readings themselves (the oracle): counts, means, min/max, and the
energy registers' first and last values exactly as the meter sent them; a pass that fails
mid-batch loses nothing and counts nothing twice; late readings merge; readings above a
held-back ack stay raw; only the leader writes; the export shows the aggregates of old
ranges. Runs on both stores (--store)."""

import asyncio
import json
import random
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend

from headend import export, leader, retention
from headend.db import loads
from headend.downsample import downsample

pytestmark = pytest.mark.unit
MIDNIGHT = int(time.time()) // 86400 * 86400 - 86400   # yesterday 00:00 UTC
LATER = 8 * 86400                       # past the raw window (1 day here)


def reading(t, i):
    return {"type": "reading", "t": t, "t_ms": (i * 37) % 1000, "vrms": 229.0 + (i % 7) / 3,
            "irms": 4.0 + i / 100, "p": 900.0 + i * 1.5, "pf": 0.96, "f": 50.0 - i / 1000,
            "import_wh": round(1234567.891 + i * 0.137, 3), "export_wh": 0,
            "import_varh": 10 * i, "export_varh": 7.25, "vmin": 220.0 + i % 5,
            "vmax": 235.0 + i % 11, "demand_w": 800.0 + (i * 7) % 50}


def fleet(n=60, seed=1):
    """Readings every 37 s from 23:50 across midnight, sent out of time order."""
    bodies = [reading(MIDNIGHT - 600 + 37 * i, i) for i in range(n)]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return bodies, order


def send(m, bodies, order):
    for i in order:
        m.add("reading", bodies[i])
    m.add("event", {"type": "event", "kind": "dip", "start_s": MIDNIGHT - 100})
    while m.outbox:
        m.exchange()


def at(body):
    return body["t"] + body["t_ms"] / 1000


def oracle(bodies, period):
    """{bucket: expected aggregate fields} from the raw readings, independently of the code."""
    out = {}
    for bucket in sorted({int(at(b) // period) * period for b in bodies}):
        group = [b for b in bodies if int(at(b) // period) * period == bucket]
        ts = np.array([at(b) for b in group])
        first, last = group[int(np.argmin(ts))], group[int(np.argmax(ts))]
        want = {"n": len(group), "t_first": ts.min(), "t_last": ts.max()}
        for f in ("vrms", "irms", "p", "pf", "f"):
            want[f] = np.mean([b[f] for b in group])
        want["vmin"] = min(b["vmin"] for b in group)
        for f in ("vmax", "demand_w"):
            want[f] = max(b[f] for b in group)
        for r in ("import_wh", "export_wh", "import_varh", "export_varh"):
            want[r], want[r + "_first"] = last[r], first[r]
        out[bucket] = want
    return out


def aggregates(hub, period):
    rows = hub.db.all("SELECT * FROM readings_agg WHERE period = ? ORDER BY bucket", period)
    return {r["bucket"]: retention.body(r) for r in rows}


def check(got, want):
    assert sorted(got) == sorted(want)
    for bucket, w in want.items():
        g = got[bucket]
        for k, v in w.items():
            if k in ("vrms", "irms", "p", "pf", "f", "t_first", "t_last"):
                assert g[k] == pytest.approx(v, rel=1e-12), (bucket, k)
            else:        # counts, min/max and the registers: exact, and of the same type
                assert g[k] == v and type(g[k]) is type(v), (bucket, k, g[k], v)


def raw_readings(hub):
    return hub.db.one("SELECT COUNT(*) AS n FROM items WHERE kind = 'reading'")["n"]


def folded(hub, period):
    return hub.db.one("SELECT COALESCE(SUM(n), 0) AS n FROM readings_agg WHERE period = ?",
                      period)["n"]


@pytest.fixture
def setup(tmp_path):
    he = Headend(tmp_path, retention_raw_days=1, retention_15m_days=30, retention_batch=7)
    with TestClient(he.app) as c:
        yield he, c


def run(hub, now, ticks=50):
    """The sweeper's retention ticks (on PostgreSQL in a thread, on a connection of their
    own), as many as it takes at that time."""
    for _ in range(ticks):
        asyncio.run(hub.retention.tick(hub, now))
    hub.retention.due = 0.0


def test_downsampled_against_the_oracle_in_batches(setup):
    he, c = setup
    hub = he.hub
    bodies, order = fleet()
    send(he.meter(c, "meter-a"), bodies, order)
    run(hub, time.time() + 3600)                 # inside the raw window: nothing moves
    assert raw_readings(hub) == 60 and folded(hub, 900) == 0
    run(hub, time.time() + LATER)
    assert raw_readings(hub) == 0
    assert he.count("items") == 1                # the event stays raw
    check(aggregates(hub, 900), oracle(bodies, 900))
    check(aggregates(hub, 86400), oracle(bodies, 86400))
    assert len(aggregates(hub, 86400)) == 2      # across midnight: two days
    before = hub.db.all("SELECT * FROM readings_agg ORDER BY device, period, bucket")
    run(hub, time.time() + LATER)                # again: nothing left to fold, nothing changes
    assert hub.db.all("SELECT * FROM readings_agg ORDER BY device, period, bucket") == before


def test_a_pass_cut_off_mid_batch_loses_nothing_and_counts_nothing_twice(setup, monkeypatch):
    he, c = setup
    hub = he.hub
    bodies, order = fleet()
    send(he.meter(c, "meter-a"), bodies, order)
    store = hub.retention.store(hub)
    many, calls = store.many, []

    def dies_on_the_third_delete(sql, rows):
        if sql.startswith("DELETE"):
            calls.append(1)
            if len(calls) == 3:
                raise OSError("killed mid-batch")   # after the batch's aggregates were merged
        return many(sql, rows)

    monkeypatch.setattr(store, "many", dies_on_the_third_delete)
    with pytest.raises(OSError):
        run(hub, time.time() + LATER)
    # two whole batches in, the third rolled back: every reading raw or folded, once
    assert raw_readings(hub) == 60 - 14
    assert folded(hub, 900) == folded(hub, 86400) == 14
    monkeypatch.setattr(store, "many", many)
    run(hub, time.time() + LATER)
    assert raw_readings(hub) == 0
    check(aggregates(hub, 900), oracle(bodies, 900))
    check(aggregates(hub, 86400), oracle(bodies, 86400))


def test_late_readings_merge_and_unacked_ones_stay_raw(setup):
    he, c = setup
    hub = he.hub
    bodies, order = fleet(40)
    m = he.meter(c, "meter-a")
    send(m, bodies, order)
    run(hub, time.time() + LATER)
    # a week later the meter sends readings of those buckets (one earlier than any): they are
    # folded in once they are past the window themselves
    late = [reading(MIDNIGHT - 900 + 1, 1000), reading(MIDNIGHT + 11, 1001)]
    # ...with a gap: seq s+2 is missing, so the ack stops below it and s+3 may come again
    s = m.next_seq
    items = [{"seq": s, "kind": "reading", "body": late[0]},
             {"seq": s + 1, "kind": "reading", "body": late[1]},
             {"seq": s + 3, "kind": "reading", "body": reading(MIDNIGHT + 5, 1002)}]
    assert m.exchange(items=items)["ack"] == s + 1
    run(hub, time.time() + LATER)
    assert raw_readings(hub) == 1                 # the one above the ack
    check(aggregates(hub, 900), oracle(bodies + late, 900))
    check(aggregates(hub, 86400), oracle(bodies + late, 86400))
    # sent again, it is still recognised: stored once
    m.exchange(items=items[2:])
    assert raw_readings(hub) == 1


def test_only_the_leader_folds(setup):
    he, c = setup
    hub = he.hub
    bodies, order = fleet(20)
    send(he.meter(c, "meter-a"), bodies, order)

    class Stale(leader.SoleLeader):
        def fence(self, db):
            raise leader.NotLeader("another process leads")

    hub.leadership = Stale()
    with pytest.raises(leader.NotLeader):
        asyncio.run(hub.retention.tick(hub, time.time() + LATER))
    assert raw_readings(hub) == 20 and folded(hub, 900) == 0


def test_the_export_reads_the_aggregates_of_old_ranges(setup):
    he, c = setup
    hub = he.hub
    op = Api(c, he.op_token)
    bodies, order = fleet()
    send(he.meter(c, "meter-a"), bodies, order)
    newer = [reading(MIDNIGHT + 7200 + i, 500 + i) for i in range(3)]
    run(hub, time.time() + LATER)
    m = he.meter(c, "meter-b")
    for b in newer:
        m.add("reading", b)
    m.exchange()

    def get(device, fmt, **params):
        r = op.get("/v1/devices/%s/readings/export" % device, params=dict(format=fmt, **params))
        assert r.status_code == 200, r.text
        return r

    got = get("meter-a", "json").json()
    want = oracle(bodies, 900)
    assert [r["kind"] for r in got] == ["reading_15m"] * len(want)
    check({r["body"]["t"]: r["body"] for r in got}, want)
    assert sum(r["body"]["n"] for r in got) == 60          # each reading counted once
    csv_text = get("meter-a", "csv").text
    assert export.parse_csv("readings", csv_text) == got   # the CSV round-trips
    # a range selects buckets by their start
    part = get("meter-a", "json", since=MIDNIGHT, until=MIDNIGHT + 900).json()
    assert [r["body"]["t"] for r in part] == [MIDNIGHT]
    # the other meter's readings are still raw, as stored
    raw = get("meter-b", "json").json()
    assert [loads(json.dumps(r["body"])) for r in raw] == newer
    # past the 15-minute window only the daily rows are left, and the export shows them
    run(hub, time.time() + 40 * 86400)
    assert hub.db.one("SELECT COUNT(*) AS n FROM readings_agg WHERE period = 900")["n"] == 0
    got = get("meter-a", "json").json()
    assert [r["kind"] for r in got] == ["reading_1d", "reading_1d"]
    check({r["body"]["t"]: r["body"] for r in got}, oracle(bodies, 86400))


def test_a_pass_walks_the_fleet_device_by_device(setup):
    he, c = setup
    hub = he.hub
    sent = {}
    for k, dev in enumerate(("meter-a", "meter-b", "meter-c")):
        bodies, order = fleet(10 + 7 * k, seed=k)
        send(he.meter(c, dev), bodies, order)
        sent[dev] = bodies
    cursor, passes = "", 0
    while True:               # batches of 4 readings, two devices looked at per batch
        with hub.tx() as db:
            _, cursor = downsample(db, time.time() + LATER, 4, cursor or "", devices=2)
        passes += 1
        if cursor is None:
            break
    assert raw_readings(hub) == 0 and passes > 10
    for dev, bodies in sent.items():
        rows = hub.db.all("SELECT * FROM readings_agg WHERE device = ? AND period = 900", dev)
        check({r["bucket"]: retention.body(r) for r in rows}, oracle(bodies, 900))
