"""Two head-end processes on one PostgreSQL database (issue 19, item 2): a long-poll held by
process A is woken by work queued through process B (LISTEN/NOTIFY, headend/pg_notify.py),
the meter's result reaches either, and both serve the same fleet.

Real processes (`backchannel serve` twice) and a private cluster (headend/pg_server.py)."""

import threading
import time

import httpx
import pytest
from headend_fake_meter import FakeMeter

from headend import pg_server
from lab.processes import Headend

pytestmark = pytest.mark.system
STARTUP_S = 60          # two head-ends and PostgreSQL on a loaded 2-core VM


@pytest.fixture(scope="module")
def cluster():
    reason = pg_server.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pg_server.temporary(fast=True).start()
    yield server
    pg_server.remove(server)


@pytest.fixture
def pair(cluster, tmp_path):
    key = tmp_path / "hub.key"
    a = Headend(tmp_path / "a", db=cluster.url(), db_key=key)
    b = Headend(tmp_path / "b", db=cluster.url(), db_key=key)
    for he in (a, b):
        he.dir.mkdir()
    try:
        yield a.start(STARTUP_S), b.start(STARTUP_S)
    finally:
        for he in (a, b):
            he.kill()


def test_a_long_poll_on_one_process_is_woken_by_work_queued_through_another(pair):
    a, b = pair
    key = a.add_device("meter-a")
    token = b.add_token("alice", "operator")
    answers = {}
    with httpx.Client(base_url=a.url, timeout=60) as to_a, \
            httpx.Client(base_url=b.url, timeout=60) as to_b:
        meter = FakeMeter(to_a, "meter-a", key)
        meter.exchange()                                   # known, in continuous long-poll

        def hold():
            t0 = time.monotonic()
            answers["body"] = meter.exchange(wait=20)      # held by process A
            answers["held_s"] = time.monotonic() - t0
        poll = threading.Thread(target=hold)
        poll.start()
        time.sleep(1.0)                                    # A holds it now
        queued = time.monotonic()
        r = to_b.post("/v1/devices/meter-a/work", json={"op": "read", "args": {}},
                      headers={"Authorization": "Bearer %s" % token})
        assert r.status_code == 202, r.text
        work_id = r.json()["id"]
        poll.join(30)
        woke_after = time.monotonic() - queued
        # without a wake-up across processes the poll would end after its 20 s, empty
        assert [w["id"] for w in answers["body"]["work"]] == [work_id]
        assert woke_after < 3.0 and answers["held_s"] < 10.0, (woke_after, answers)
        # the result goes in through B; A and B report the same outcome
        meter.http = to_b
        meter.execute(answers["body"]["work"])
        meter.exchange()
        auth = {"Authorization": "Bearer %s" % token}
        for client in (to_a, to_b):
            assert client.get("/v1/work/%s" % work_id, headers=auth).json()["status"] == "done"


def test_a_sweep_leader_stopped_past_its_lease_is_replaced_and_steps_down(cluster, tmp_path):
    """SIGSTOP the leading process past its lease: the other takes over with a newer token;
    resumed, the old leader finds its session ended and leads no more (headend/leader.py)."""
    import signal

    import psycopg
    key = tmp_path / "hub.key"
    name = "stop_" + str(int(time.time() * 1000))
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE %s" % name)
    url = cluster.url(name)
    config = {"leader_lease_s": 2.0, "sweep_interval": 0.2}
    for n in "ab":
        (tmp_path / n).mkdir()
    heads = [Headend(tmp_path / n, db=url, db_key=key, config=config) for n in "ab"]
    for he in heads:
        he.start(STARTUP_S)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            def lease():
                return conn.execute("SELECT holder, token FROM leases "
                                    "WHERE name = 'sweep'").fetchone()
            deadline = time.monotonic() + 15
            while lease() is None:
                assert time.monotonic() < deadline, "nobody leads"
                time.sleep(0.1)
            holder, token = lease()
            pid = int(holder.rsplit(":", 1)[1])
            old = next(he for he in heads if he.proc.pid == pid)
            new = next(he for he in heads if he is not old)
            old.proc.send_signal(signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 15
                while lease()[1] == token:
                    assert time.monotonic() < deadline, "no takeover"
                    time.sleep(0.1)
            finally:
                old.proc.send_signal(signal.SIGCONT)
            holder2, token2 = lease()
            assert token2 == token + 1 and holder2.endswith(":%d" % new.proc.pid)
            deadline = time.monotonic() + 15
            while "no longer leading sweep" not in old.log():
                assert time.monotonic() < deadline, old.log()[-2000:]
                time.sleep(0.1)
            time.sleep(1.0)                        # several ticks of both
            assert lease() == (holder2, token2)    # the old leader did not come back
    finally:
        for he in heads:
            he.kill()
