"""The head-end side of time-of-use and billing (issue 14, item 4): a local-time tariff
compiled to UTC switch times (seasons, holidays, DST skipped and repeated hours, monthly
freezes), overlapping or incomplete schedules refused with the reason, `tariff` and `freeze`
utility-only, and billing snapshots exported as CSV (exact Wh) and JSON, one per id, through
the API and the CLI."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, client, headend, op  # noqa: F401

from headend import billing_export, tariff
from headend import client as client_mod
from headend.cli import main

pytestmark = pytest.mark.unit

PARIS = ZoneInfo("Europe/Paris")
WEEKDAY = [["00:00", "offpeak"], ["02:30", "peak"], ["22:00", "offpeak"]]


def spec(**over):
    s = {"id": "tou-1", "timezone": "Europe/Paris", "rates": ["peak", "offpeak"],
         "seasons": [{"name": "winter", "from": "10-01", "to": "03-31",
                      "week": {"mon-sun": WEEKDAY}},
                     {"name": "summer", "from": "04-01", "to": "09-30",
                      "week": {"mon-fri": [["00:00", "offpeak"], ["12:00", "peak"],
                                           ["13:00", "offpeak"]],
                               "sat,sun": [["00:00", "offpeak"]]}}],
         "holidays": {"dates": ["12-25", "2026-03-30"], "day": [["00:00", "offpeak"]]},
         "billing": {"day": 1, "time": "00:00"}}
    s.update(over)
    return s


def utc(*args):
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


def switches(args):
    return [(args["t0"] + o, args["rates"][r]) for o, r in args["switches"]]


def test_utc_schedule_without_dst_and_its_edges():
    s = spec(timezone="UTC", seasons=None, week={"mon-sun": WEEKDAY}, holidays=None)
    del s["seasons"], s["holidays"]
    start = utc(2027, 1, 5, 2, 30)            # exactly on a switch: it is the rate at t0
    args = tariff.compile_tariff(s, start, 2)
    assert switches(args) == [(start, "peak"), (utc(2027, 1, 5, 22), "offpeak"),
                              (utc(2027, 1, 6, 2, 30), "peak"), (utc(2027, 1, 6, 22), "offpeak")]
    args = tariff.compile_tariff(s, start - 1, 1)   # a second before: offpeak, then the switch
    assert switches(args)[:2] == [(start - 1, "offpeak"), (start, "peak")]
    assert args["end"] == 86400 and args["switches"][0][0] == 0


def test_dst_seasons_holidays_and_freezes_in_utc():
    start = utc(2026, 3, 27)
    args = tariff.compile_tariff(spec(), start, 7)
    got = switches(args)
    local = [(dt.datetime.fromtimestamp(t, PARIS).strftime("%m-%d %H:%M"), r) for t, r in got]
    # 03-29 (spring forward, 02:00 -> 03:00): the skipped 02:30 switches when the clocks jump,
    # 01:00 UTC; 03-30 is a holiday (offpeak all day); 04-01 summer; 04-04/05 a weekend
    assert (utc(2026, 3, 29, 1), "peak") in got
    assert local == [("03-27 01:00", "offpeak"), ("03-27 02:30", "peak"),
                     ("03-27 22:00", "offpeak"), ("03-28 02:30", "peak"),
                     ("03-28 22:00", "offpeak"), ("03-29 03:00", "peak"),
                     ("03-29 22:00", "offpeak"), ("03-31 02:30", "peak"),
                     ("03-31 22:00", "offpeak"), ("04-01 12:00", "peak"),
                     ("04-01 13:00", "offpeak"), ("04-02 12:00", "peak"),
                     ("04-02 13:00", "offpeak")]      # 7 days: up to 04-03 00:00 UTC
    # the monthly freeze: 1 April 00:00 in Paris (CEST) is 31 March 22:00 UTC
    assert [args["t0"] + f for f in args["freezes"]] == [utc(2026, 3, 31, 22)]


def test_autumn_repeated_hour_switches_at_the_first():
    s = spec(seasons=None, week={"mon-sun": WEEKDAY}, holidays=None)
    del s["seasons"], s["holidays"]
    args = tariff.compile_tariff(s, utc(2026, 10, 24), 2)
    # 25 October: 02:30 CEST (00:30 UTC) comes first, 02:30 CET an hour later
    assert (utc(2026, 10, 25, 0, 30), "peak") in switches(args)
    assert (utc(2026, 10, 25, 21), "offpeak") in switches(args)   # 22:00 CET


@pytest.mark.parametrize("change,reason", [
    ({"seasons": [{"name": "a", "from": "01-01", "to": "06-30", "week": {"mon-sun": WEEKDAY}},
                  {"name": "b", "from": "06-01", "to": "12-31", "week": {"mon-sun": WEEKDAY}}]},
     "seasons a and b both cover 06-01: overlapping seasons"),
    ({"seasons": [{"name": "a", "from": "01-01", "to": "06-30", "week": {"mon-sun": WEEKDAY}}]},
     "no season covers 07-01"),
    ({"seasons": [{"name": "a", "from": "01-01", "to": "12-31",
                   "week": {"mon-fri": WEEKDAY, "fri-sun": WEEKDAY}}]},
     "fri is in both 'mon-fri' and 'fri-sun': overlapping schedules"),
    ({"seasons": [{"name": "a", "from": "01-01", "to": "12-31", "week": {"mon-sat": WEEKDAY}}]},
     "no schedule for sun"),
    ({"seasons": [{"name": "a", "from": "01-01", "to": "12-31", "week": {"mon-sun": [
        ["00:00", "peak"], ["07:00", "offpeak"], ["07:00", "peak"]]}}]},
     "07:00 does not come after 07:00: overlapping or unordered switches"),
    ({"seasons": [{"name": "a", "from": "01-01", "to": "12-31", "week": {"mon-sun": [
        ["01:00", "peak"]]}}]}, "starts at 00:00"),
    ({"rates": ["r%d" % k for k in range(9)]}, "1..8"),
    ({"timezone": "Mars/Olympus"}, "not a time zone"),
    ({"holidays": {"dates": ["02-30"], "day": WEEKDAY}}, "not a date MM-DD"),
    ({"billing": {"day": 31}}, "1..28"),
])
def test_bad_tariffs_are_refused_with_the_reason(change, reason):
    with pytest.raises(tariff.TariffError) as e:
        tariff.compile_tariff(spec(**change), utc(2027, 1, 1), 7)
    assert reason in str(e.value)


def test_tariff_and_freeze_are_utility_only_and_compiled_at_the_head_end(client, headend, op):
    headend.meter(client, "m1")
    util = Api(client, headend.util_token)
    r = op.post("/v1/devices/m1/tariff", json={"tariff": spec(), "start": utc(2027, 1, 4)})
    assert r.status_code == 403 and "utility" in r.json()["error"]
    r = op.post("/v1/devices/m1/work", json={"op": "freeze", "args": {}})
    assert r.status_code == 403
    bad = spec(seasons=[{"name": "a", "from": "01-01", "to": "06-30",
                         "week": {"mon-sun": WEEKDAY}}])
    r = util.post("/v1/devices/m1/tariff", json={"tariff": bad})
    assert r.status_code == 400 and "no season covers 07-01" in r.json()["error"]
    r = util.post("/v1/devices/m1/tariff", json={"tariff": spec(), "start": utc(2027, 1, 4),
                                                  "days": 31})
    assert r.status_code == 202, r.text
    work = r.json()
    assert work["op"] == "tariff" and work["role"] == "utility"
    assert work["args"] == tariff.compile_tariff(spec(), utc(2027, 1, 4), 31)
    assert len(work["args"]["freezes"]) == 1          # 1 February, 00:00 in Paris
    assert util.work("m1", "freeze")["op"] == "freeze"


def snapshot(t, cause="schedule", imp=(1234567, 1), total=1234568):
    return {"id": "%d.000" % t, "cause": cause, "t": t, "t_ms": 0, "at": t,
            "import_mwh": total, "export_mwh": 5, "import_mvarh": 2 ** 40 + 7,
            "export_mvarh": 0, "tariff": "tou-1", "rates": ["peak", "offpeak"],
            "rate_import_mwh": list(imp), "rate_export_mwh": [5, 0]}


def test_billing_snapshots_export_exactly_once_per_id(client, headend, op, tmp_path, capsys,
                                                      monkeypatch):
    m = headend.meter(client, "m1")
    first = snapshot(1798761600)
    m.add("billing", first)
    m.add("billing", dict(first))             # offered again after a power cut
    m.add("billing", snapshot(1801440000, "utility", (2000000, 999), 2000999))
    m.add("reading", {"t": 1798761601, "vrms": 230.0})
    m.exchange()
    j = op.get("/v1/devices/m1/billing/export", params={"format": "json"})
    assert j.status_code == 200
    bodies = [s["body"] for s in j.json()]
    assert bodies == [first, snapshot(1801440000, "utility", (2000000, 999), 2000999)]
    c = op.get("/v1/devices/m1/billing/export").text.splitlines()
    assert c[0] == ",".join(billing_export.COLUMNS)
    assert len(c) == 1 + 2 * 3                      # per snapshot: two rates and the total
    assert c[1].startswith("1798761600.000,1798761600,0,1798761600,schedule,tou-1,peak,"
                           "1234.567,0.005,,")
    assert ",total,1234.568,0.005,1099511627.783,0.000," in c[3]   # 2**40 + 7 mvarh, exact
    r = op.get("/v1/devices/m1/billing/export", params={"since": 1800000000, "format": "json"})
    assert [s["body"]["cause"] for s in r.json()] == ["utility"]
    # the CLI writes the same export to a file
    monkeypatch.setattr(client_mod.httpx, "Client", lambda base_url, timeout, verify, headers:
                        TestClient(headend.app, base_url=base_url, headers=headers))
    monkeypatch.setenv("BACKCHANNEL_URL", "http://testserver")
    monkeypatch.setenv("BACKCHANNEL_TOKEN", headend.op_token)
    out = tmp_path / "bill.csv"
    with pytest.raises(SystemExit) as e:
        main(["billing", "export", "m1", "--out", str(out)])
    assert e.value.code == 0
    assert out.read_text().splitlines() == c


def test_cli_compile_prints_the_meter_form_and_refuses_bad_input(tmp_path, capsys):
    good = tmp_path / "t.json"
    good.write_text(json.dumps(spec()))
    with pytest.raises(SystemExit) as e:
        main(["billing", "compile", str(good), "--start", "1798761600", "--days", "3"])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out) == tariff.compile_tariff(spec(), 1798761600, 3)
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps(spec(rates=["peak"])))
    with pytest.raises(SystemExit) as e:
        main(["billing", "compile", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.startswith("backchannel: error: tariff refused:")
    assert "rate 'offpeak' is not one of peak" in err and "Traceback" not in err


@pytest.mark.parametrize("hm", [(10, 0), (23, 57), (23, 58), (23, 59), (0, 0)])
def test_the_sim_tariff_day_peaks_a_minute_after_start(hm):
    # make sim SCENARIO=tools/sim/scenarios/tariff_day.json: peak for 2 minutes from the
    # next minute, whatever the time of day (the peak may run over midnight)
    from sim import tariff_demo

    now = utc(2027, 3, 2, *hm) + 17
    args = tariff.compile_tariff(tariff_demo.spec(now), now, 2)
    at = switches(args)
    peak = [t for t, rate in at if rate == "peak" and t > now][0]
    assert peak == (now + 119) // 60 * 60 and 60 <= peak - now < 120
    assert [t for t, rate in at if t > peak][0] == peak + 120
