"""Presence: every stated change kept with its time; `unavailable` derived after a missed
contact; back to the stated presence when the meter calls in again."""

import re
import time

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend

pytestmark = pytest.mark.unit


def _wait_for(fn, timeout=5.0):
    end = time.time() + timeout
    while not fn():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


def test_presence_derived_unavailable_and_restored(tmp_path):
    h = Headend(tmp_path, default_poll=1, margin_min=0.3, margin_factor=0.0)
    with TestClient(h.app) as c:
        op = Api(c, h.op_token)
        m = h.meter(c, "meter-a")
        m.presence("available_restricted", "critical process")
        t0 = time.time()
        assert m.exchange()["next"] == 1
        state = lambda: op.get("/v1/devices/meter-a").json()["presence"]  # noqa: E731
        assert state() == "available_restricted"
        _wait_for(lambda: state() == "unavailable")
        assert time.time() - t0 >= 1.3              # next (1 s) + margin (0.3 s)
        # the note's time is one a person reads (UTC), not a raw epoch
        note = op.get("/v1/devices/meter-a").json()["presence_note"]
        assert re.fullmatch(r"missed contact expected by \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                            note), note
        m.reading()
        m.exchange()
        assert state() == "available_restricted"
        hist = op.get("/v1/devices/meter-a/presence").json()
        assert [(e["state"], e["source"]) for e in reversed(hist)] == [
            ("available_restricted", "meter"), ("unavailable", "derived"),
            ("available_restricted", "contact")]
        assert hist[-1]["note"] == "critical process"
        assert all(e["at"] >= t0 - 1 for e in hist)
        now = {p["device"]: p for p in op.get("/v1/presence").json()}
        assert now["meter-a"]["state"] == "available_restricted"


def test_no_unavailable_while_long_polling_or_before_first_contact(tmp_path):
    h = Headend(tmp_path, default_poll=1, margin_min=0.2, margin_factor=0.0)
    with TestClient(h.app) as c:
        h.meter(c, "never-called")
        m = h.meter(c, "meter-a")
        m.presence("available")
        m.exchange(wait=2.0)                 # in contact the whole time
        assert h.hub.db.one("SELECT presence FROM devices WHERE id = 'meter-a'")[0] == "available"
        time.sleep(0.6)
        rows = h.hub.db.all("SELECT id, presence FROM devices ORDER BY id")
        assert [tuple(r) for r in rows] == [("meter-a", "available"), ("never-called", "unknown")]


def test_every_stated_presence_is_recorded(tmp_path):
    h = Headend(tmp_path)
    c = TestClient(h.app)
    op = Api(c, h.op_token)
    m = h.meter(c, "meter-a")
    for state in ("available", "active", "available_off", "unavailable", "available"):
        m.presence(state)
    m.exchange()
    hist = op.get("/v1/devices/meter-a/presence?limit=3").json()
    assert [e["state"] for e in hist] == ["available", "unavailable", "available_off"]
    assert op.get("/v1/devices/meter-a/presence?limit=0").status_code == 422
