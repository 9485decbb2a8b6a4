"""`backchannel serve --workers 2` (issue 19, item 2): two head-end processes on one PostgreSQL
database behind the project's private HAProxy (headend/lb_server.py, headend/workers.py), with
a real meter (the firmware on the MicroPython unix port) talking to the proxy only.

- The meter's long-poll held by worker A is answered with work queued through worker B.
- kill -9 of the worker holding the meter's long-poll: the meter fails over through the
  proxy, the supervisor starts the worker again, and work and readings go on, none lost and
  none twice.
- One sweep leader and no gateway lease among the workers (nothing to run once but the sweep).

Real processes: PostgreSQL (pg_server.py), haproxy, the supervisor and its workers, a meter."""

import json
import os
import signal
import time

import httpx
import psycopg
import pytest

from headend import lb_server, pg_server
from lab import processes

pytestmark = pytest.mark.system
STARTUP_S = 120         # PostgreSQL, two workers and haproxy on a loaded 2-core VM
HOLD_S = 25             # the meter's long-poll (report_s too): a wake-up is sooner


def _pids(lb_dir):
    return json.loads((lb_dir / "workers.json").read_text())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    for reason in (pg_server.missing_reason(), lb_server.missing_reason()):
        if reason:
            pytest.skip(reason)
    work = tmp_path_factory.mktemp("workers")
    cluster = pg_server.temporary(fast=True).start()
    lb_dir = work / "lb"
    he = processes.Headend(work, db=cluster.url(), db_key=work / "hub.key",
                           config={"max_wait": HOLD_S},
                           extra=["--workers", "2", "--lb-dir", str(lb_dir)])
    meter = None
    try:
        key = he.add_device("meter-a")
        api = he.api(he.add_token("alice", "operator"))
        he.start(STARTUP_S)
        meter = processes.Meter(work, "meter-a", key, he.url, report_s=HOLD_S,
                                poll_wait_s=HOLD_S).start()
        processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 60,
                             "the first reading through the proxy")
        yield {"he": he, "api": api, "lb": lb_dir, "meter": meter, "pg": cluster,
               "token": api.headers["Authorization"]}
    finally:
        if meter is not None:
            meter.kill()
        info = _pids(lb_dir) if (lb_dir / "workers.json").exists() else None
        he.kill(signal.SIGTERM)                  # the supervisor stops workers and haproxy
        for pid in [w["pid"] for w in info["workers"]] + [info["haproxy"]] if info else []:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        pg_server.remove(cluster)


def _state(lb_dir):
    """(exchanges answered by all workers, the worker holding the meter's long-poll or
    None), from each worker's own /metrics on loopback."""
    total, holder = 0, None
    for w in _pids(lb_dir)["workers"]:
        try:
            text = httpx.get("http://127.0.0.1:%d/metrics" % w["port"], timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            if line.startswith("backchannel_exchanges_total{"):
                total += float(line.split()[-1])
            elif line.startswith('backchannel_connections{transport="http"}') and \
                    float(line.split()[-1]) >= 1:
                holder = w
    return total, holder


def _fresh_hold(lb_dir, timeout=90):
    """(the worker holding a long-poll that started after `since`, since): an exchange was
    answered after `since` and a poll is held now, so this poll began after `since` (the
    meter makes one request at a time) and, unless woken, is held until since + HOLD_S."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        since = time.time()
        base, _ = _state(lb_dir)
        while time.time() < since + HOLD_S / 3:
            total, holder = _state(lb_dir)
            if total > base and holder is not None:
                return holder, since
            time.sleep(0.1)
    raise AssertionError("no fresh long-poll seen in %d s" % timeout)


def _queue(port, token, op="read"):
    r = httpx.post("http://127.0.0.1:%d/v1/devices/meter-a/work" % port,
                   json={"op": op, "args": {}}, headers={"Authorization": token}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _finished(api, wid):
    w = api.get("/v1/work/%s" % wid).json()
    return w if w["status"] not in ("queued", "held", "delivered") else None


def test_a_long_poll_held_by_one_worker_is_woken_by_work_queued_through_the_other(fleet):
    holder, since = _fresh_hold(fleet["lb"])
    other = next(w for w in _pids(fleet["lb"])["workers"] if w["port"] != holder["port"])
    wid = _queue(other["port"], fleet["token"])
    w = processes.wait_until(lambda: _finished(fleet["api"], wid), 90, "the read's result")
    assert w["status"] == "done" and w["deliveries"] == 1, w
    # delivered in the poll worker A held (it began after `since`): without the wake-up
    # across processes (NOTIFY, pg_notify.py) it would have waited out its HOLD_S
    assert w["delivered_at"] < since + HOLD_S, (w, since, holder, other)


def test_one_sweep_leader_among_the_workers(fleet):
    with psycopg.connect(fleet["pg"].url(), autocommit=True) as conn:
        rows = conn.execute("SELECT name, holder FROM leases").fetchall()
    pids = {w["pid"] for w in _pids(fleet["lb"])["workers"]}
    names = [name for name, _ in rows]
    assert names == ["sweep"], rows                 # no gateways configured: no lease
    assert int(rows[0][1].rsplit(":", 1)[1]) in pids


def test_kill_9_of_the_worker_holding_the_poll_fails_over_through_the_proxy(fleet):
    api = fleet["api"]
    before = {r["seq"] for r in api.get("/v1/devices/meter-a/readings?limit=1000").json()}
    holder, _ = _fresh_hold(fleet["lb"])
    os.kill(holder["pid"], signal.SIGKILL)
    processes.wait_until(lambda: _pids(fleet["lb"])["restarts"] >= 1, 30,
                         "the supervisor to start the worker again")
    w = processes.run_work(api, "meter-a", "read", timeout=120)
    assert w["status"] == "done", w
    processes.wait_until(
        lambda: len(api.get("/v1/devices/meter-a/readings?limit=1000").json()) > len(before) + 1,
        60, "readings after the kill")
    rows = api.get("/v1/devices/meter-a/readings?limit=1000").json()
    seqs = [r["seq"] for r in rows]
    assert len(seqs) == len(set(seqs)), "a reading stored twice"
    assert before <= set(seqs), "a reading lost"
    assert fleet["meter"].proc.poll() is None, fleet["meter"].log()[-2000:]
