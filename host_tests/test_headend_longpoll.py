"""Long-poll against a real uvicorn server on 127.0.0.1: held while nothing is queued,
answered the moment work arrives, and capped."""

import threading
import time

import httpx
import pytest
from headend_harness import Api, Headend, Server, headend, http, server  # noqa: F401

pytestmark = pytest.mark.unit


def test_long_poll_answers_at_once_when_work_arrives(http, headend):
    m = headend.meter(http, "meter-a")
    op = Api(http, headend.op_token)
    got = {}

    def poll():
        t0 = time.monotonic()
        got["body"] = m.exchange(wait=20)
        got["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)                         # the meter is now waiting
    assert t.is_alive()
    t_enqueue = time.monotonic()
    wid = op.work("meter-a", "read")["id"]
    t.join(10)
    assert not t.is_alive()
    assert [w["id"] for w in got["body"]["work"]] == [wid]
    assert 0.4 < got["elapsed"] < 3.0       # well under the 20 s wait
    assert time.monotonic() - t_enqueue < 2.0


def test_long_poll_times_out_empty_and_other_meters_do_not_wake_it(http, headend):
    a = headend.meter(http, "meter-a")
    headend.meter(http, "meter-b")
    op = Api(http, headend.op_token)
    t = threading.Timer(0.2, lambda: op.work("meter-b", "read"))
    t.start()
    t0 = time.monotonic()
    body = a.exchange(wait=1.0)
    elapsed = time.monotonic() - t0
    t.join()
    assert body["work"] == [] and 0.9 < elapsed < 3.0


def test_wait_is_capped_by_the_server(tmp_path):
    h = Headend(tmp_path, max_wait=0.5)
    with Server(h.app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        m = h.meter(c, "meter-a")
        t0 = time.monotonic()
        assert m.exchange(wait=25)["work"] == []
        assert time.monotonic() - t0 < 2.0


def test_queued_work_answers_without_waiting(http, headend):
    m = headend.meter(http, "meter-a")
    Api(http, headend.op_token).work("meter-a", "read")
    t0 = time.monotonic()
    assert len(m.exchange(wait=20)["work"]) == 1
    assert time.monotonic() - t0 < 1.0


def test_oversize_body_over_real_http(http, headend):
    m = headend.meter(http, "meter-a")
    env = m.envelope(items=[{"seq": 1, "kind": "notice", "body": {"pad": "x" * 270_000}}])
    r = m.post(env)
    assert r.status_code == 413 and "larger" in r.json()["error"]
    assert headend.count("items") == 0


def test_meter_that_hangs_up_is_not_delivered_to(server, headend):
    with httpx.Client(base_url=server.url, timeout=0.5) as impatient:
        m = headend.meter(impatient, "meter-a")
        try:
            m.exchange(wait=20)
            raise AssertionError("expected the client to give up")
        except httpx.ReadTimeout:
            pass
    time.sleep(0.2)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        op = Api(c, headend.op_token)
        wid = op.work("meter-a", "read")["id"]
        time.sleep(0.3)
        assert op.status(wid) == "queued"
        assert not headend.hub.waiters and not headend.hub.active
