"""Exact times between a float32 meter and the head-end (issue 11): the exchange answers with
time_ms as an int; readings and events keep t/t_ms and start_s/start_ms as sent, and the
operator API and CLI show their sum to the millisecond. Older records (a float t) still
read."""

import time

import pytest
from headend_harness import Headend, client, headend, op  # noqa: F401

from headend import render
from headend.meter_time import record_time

pytestmark = pytest.mark.unit


def test_exchange_answers_time_ms_as_an_int(client, headend):
    m = headend.meter(client, "meter-a")
    before = time.time()
    body = m.exchange()
    after = time.time()
    assert isinstance(body["time_ms"], int) and not isinstance(body["time_ms"], bool)
    assert before * 1000 - 1 <= body["time_ms"] <= after * 1000 + 1
    assert abs(body["time_ms"] - body["time"] * 1000) < 1


def test_records_keep_the_meter_time_exact_to_the_ms(client, headend, op):
    m = headend.meter(client, "meter-a")
    m.add("reading", {"t": 1796558866, "t_ms": 7, "vrms": 230.0})
    m.add("event", {"kind": "dip", "start_s": 1796558870, "start_ms": 999, "duration_ms": 100.0})
    m.add("event_start", {"kind": "swell", "start_s": 1796558871, "start_ms": 0})
    m.add("reading", {"t": 1796558866.25, "vrms": 230.0})       # older firmware: a float t
    assert m.exchange()["ack"] == 4
    readings = op.get("/v1/devices/meter-a/readings").json()
    assert [r["at"] for r in readings] == [1796558866.25, 1796558866.007]
    assert readings[1]["body"] == {"t": 1796558866, "t_ms": 7, "vrms": 230.0}  # as sent
    events = op.get("/v1/devices/meter-a/events").json()
    assert [e["at"] for e in events] == [1796558871.0, 1796558870.999]
    assert events[1]["body"]["start_ms"] == 999


@pytest.mark.parametrize("body, at", [
    ({"t": 1796558866, "t_ms": 1000}, 1796558866.0),     # out of range: ignored
    ({"t": 1796558866, "t_ms": -1}, 1796558866.0),
    ({"t": 1796558866, "t_ms": True}, 1796558866.0),     # a bool is no count of ms
    ({"t": 1796558866, "t_ms": "5"}, 1796558866.0),
    ({"t": True, "t_ms": 5}, None),
    ({"t": "1796558866"}, None),
    ({"vrms": 230.0}, None),
    ({"kind": "dip", "start_s": 5, "start_ms": 500}, 5.5),
    ([1, 2], None),
])
def test_record_time_takes_only_what_is_well_formed(body, at):
    assert record_time(body) == at


def test_cli_shows_the_meter_time_with_its_milliseconds(capsys):
    now = time.time()
    readings = [{"seq": 1, "kind": "reading", "received": now, "at": 1796558866.007,
                 "body": {"t": 1796558866, "t_ms": 7, "vrms": 230.0}},
                {"seq": 2, "kind": "reading", "received": now,   # no "at": from the body
                 "body": {"t": 1796558866, "t_ms": 999, "vrms": 230.0}}]
    render.readings("readings of meter-a", readings)
    events = [{"seq": 3, "kind": "event", "received": now, "at": 1796558870.5,
               "body": {"kind": "dip", "start_s": 1796558870, "start_ms": 500}}]
    render.events("events of meter-a", events)
    out = capsys.readouterr().out
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1796558866))
    assert day + ".007" in out and day + ".999" in out
    assert time.strftime("%H:%M:%S", time.localtime(1796558870)) + ".500" in out
    assert "start_ms" not in out      # shown as the start, not again as an extra field


def test_stamp_carries_into_the_next_second():
    assert render.stamp(1796558866.9996).endswith(":%02d.000" % ((1796558866 + 1) % 60))


def test_export_range_and_csv_keep_the_milliseconds(client, headend, op):
    from headend import export

    m = headend.meter(client, "meter-a")
    m.add("reading", {"t": 1796558866, "t_ms": 600, "vrms": 230.0})
    m.add("event", {"kind": "dip", "start_s": 1796558870, "start_ms": 250})
    m.exchange()

    def got(what, since, until):
        r = op.get("/v1/devices/meter-a/%s/export" % what,
                   params={"format": "json", "since": since, "until": until})
        assert r.status_code == 200, r.text
        return [x["seq"] for x in r.json()]

    assert got("readings", 1796558866.5, 1796558866.7) == [1]
    assert got("readings", 1796558866.61, 1796558867) == []     # 866.600 is before
    assert got("readings", 1796558866, 1796558866.6) == []      # until is exclusive
    assert got("events", 1796558870.25, 1796558870.26) == [2]
    assert got("events", 1796558870, 1796558870.25) == []
    csv_text = op.get("/v1/devices/meter-a/readings/export").text
    header, row = csv_text.splitlines()[:2]
    cols = dict(zip(header.split(","), row.split(",")))
    assert cols["t"] == "1796558866" and cols["t_ms"] == "600"
    assert export.parse_csv("readings", csv_text)[0]["body"] == {"t": 1796558866, "t_ms": 600,
                                                                 "vrms": 230.0}
