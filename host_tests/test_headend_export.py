"""Exports of readings and events (CSV and JSON, by time range) round-trip to the stored
rows; the CLI shows readings and events as values in columns, and --json on its listings."""

import json

import pytest
from fastapi.testclient import TestClient
from headend_harness import client, headend, op  # noqa: F401

from headend import client as client_mod
from headend import export, render
from headend.cli import main
from headend.db import loads
from headend.records_cli import parse_time

pytestmark = pytest.mark.unit
T0 = 1765000000.0


def reading(i):
    """A reading as the firmware sends it (f is null when no full cycle was seen)."""
    return {"type": "reading", "t": T0 + i, "vrms": 230.0 + i / 7, "irms": 4.123456789,
            "p": 912.25 + i, "q": -31.5, "s": 950.0, "pf": 0.9602631578947368,
            "f": None if i == 2 else 49.99 + i / 1000, "import_wh": 12345.678 + i,
            "export_wh": 0.0, "import_varh": 1.5, "export_varh": 0, "demand_w": 900.0,
            "vmin": 229.5, "vmax": 231.25}


def fill(headend, client):
    m = headend.meter(client, "meter-a")
    for i in range(6):
        m.add("reading", reading(i))
    m.add("reading", {"t": T0 + 10, "vrms": "n/a", "odd,key": "a \"quoted\"\nline", "pf": True})
    m.add("event_start", {"type": "event_start", "kind": "dip", "start_s": T0 + 1.5})
    m.add("event", {"type": "event", "kind": "dip", "start_s": T0 + 1.5, "duration_ms": 120.0,
                    "residual_v": 161.2, "extreme_pct": 70.1, "category": "instantaneous_sag"})
    m.add("event", {"type": "event", "kind": "interruption", "start_s": T0 + 4,
                    "duration_ms": 2500.0, "residual_v": 3.0, "extreme_pct": 1.3,
                    "category": "momentary_interruption", "incomplete": True})
    m.add("notice", {"what": "readings dropped (outbox full)", "dropped": 3})
    m.exchange()
    return m


def stored(headend, kinds):
    rows = headend.hub.db.all("SELECT seq, kind, received, body FROM items WHERE device = ? "
                              "ORDER BY seq", "meter-a")
    return [dict(r, body=loads(r["body"])) for r in rows if r["kind"] in kinds]


def get(op, path, **params):
    r = op.get(path, params=params)
    assert r.status_code == 200, r.text
    return r


def test_csv_and_json_exports_round_trip(client, headend, op):
    fill(headend, client)
    for what, kinds in (("readings", export.READING_KINDS), ("events", export.EVENT_KINDS)):
        want = stored(headend, kinds)
        assert len(want) == (7 if what == "readings" else 4)
        r = get(op, "/v1/devices/meter-a/%s/export" % what, format="csv")
        assert r.headers["content-type"].startswith("text/csv")
        assert r.text.splitlines()[0] == ",".join(export.columns(what))
        assert export.parse_csv(what, r.text) == want
        j = get(op, "/v1/devices/meter-a/%s/export" % what, format="json")
        assert j.json() == want
    # numbers are written exactly, a null f and a text vrms go to `extra`
    lines = get(op, "/v1/devices/meter-a/readings/export").text.splitlines()
    assert "0.9602631578947368" in lines[1] and "4.123456789" in lines[1]
    assert '"f":null' in lines[3].replace('""', '"')


def test_time_range_on_the_meter_clock(client, headend, op):
    fill(headend, client)
    got = get(op, "/v1/devices/meter-a/readings/export", format="json",
              since=T0 + 1, until=T0 + 4).json()
    assert [r["body"]["t"] for r in got] == [T0 + 1, T0 + 2, T0 + 3]
    ev = get(op, "/v1/devices/meter-a/events/export", format="json", since=T0 + 2,
             until=T0 + 100).json()
    assert [e["body"]["kind"] for e in ev] == ["interruption"]   # the notice has no meter time
    empty = get(op, "/v1/devices/meter-a/readings/export", since=T0 + 1000)
    assert empty.text == ",".join(export.columns("readings")) + "\n"
    assert get(op, "/v1/devices/meter-a/events/export", format="json",
               since=T0 + 1000, until=T0 + 2000).json() == []


def test_rows_are_read_in_batches(client, headend):
    fill(headend, client)
    whole = list(export.rows(headend.hub.db, "meter-a", "readings"))
    assert list(export.rows(headend.hub.db, "meter-a", "readings", chunk=2)) == whole
    assert len(whole) == 7


@pytest.mark.parametrize("path,status,message", [
    ("/v1/devices/meter-a/readings/export?format=xml", 422, "format"),
    ("/v1/devices/meter-a/readings/export?since=10&until=5", 400, "until is before since"),
    ("/v1/devices/meter-a/readings/export?since=nan", 400, "finite"),
    ("/v1/devices/meter-a/events/export?until=abc", 422, "until"),
    ("/v1/devices/nope/events/export", 404, "unknown device nope"),
])
def test_bad_export_requests(client, headend, op, path, status, message):
    headend.meter(client, "meter-a")
    r = op.get(path)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_export_needs_a_token(client, headend):
    fill(headend, client)
    r = client.get("/v1/devices/meter-a/readings/export")
    assert r.status_code == 401
    r = client.get("/v1/devices/meter-a/readings/export",
                   headers={"Authorization": "Bearer not-a-valid-token-123"})
    assert r.status_code == 401 and "230" not in r.text


def test_parse_csv_refuses_another_file():
    with pytest.raises(ValueError, match="not a events export"):
        export.parse_csv("events", "seq,item,received\n")


def test_parse_time_forms():
    assert parse_time("1765000000") == 1765000000.0
    assert parse_time("2h", now=10000.0) == 10000.0 - 7200
    assert parse_time("1.5d", now=200000.0) == 200000.0 - 129600
    assert parse_time("2025-12-06T05:46:40+00:00") == 1764999999.0 + 1
    assert parse_time("2025-12-06T05:46:40Z") == 1765000000.0


# --- the CLI, against the app in-process ---

@pytest.fixture
def cli(client, headend, capsys, monkeypatch):
    def factory(base_url, timeout, verify, headers):
        return TestClient(headend.app, base_url=base_url, headers=headers)
    monkeypatch.setattr(client_mod.httpx, "Client", factory)
    monkeypatch.setenv("BACKCHANNEL_URL", "http://testserver")
    monkeypatch.setenv("BACKCHANNEL_TOKEN", headend.op_token)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return run


def test_cli_readings_in_columns(cli, client, headend):
    fill(headend, client)
    rc, out, err = cli("readings", "meter-a")
    assert rc == 0, err
    header = next(line for line in out.splitlines() if "seq" in line)
    for col in ("t", "V", "I", "P (W)", "PF", "f (Hz)", "kWh"):
        assert " %s " % col in header, header
    row = next(line for line in out.splitlines() if "│ 1 " in line)
    for value in ("230.0", "4.123", "912.2", "0.960", "49.990", "12.346"):
        assert value in row, row
    assert "{" not in out and "…" not in out      # values, not cut-off JSON
    rc, out, _ = cli("events", "meter-a")
    assert rc == 0
    dip = next(line for line in out.splitlines() if "instantaneous_sag" in line)
    assert "dip" in dip and "120 ms" in dip and "161.2 V" in dip
    assert "momentary_interruption" in out and "incomplete" in out
    assert "dip (started)" in out and "readings dropped (outbox full)" in out


def test_cli_json_on_listings(cli, client, headend, op):
    fill(headend, client)
    for argv, path in ((("readings", "meter-a", "--limit", "3"),
                        "/v1/devices/meter-a/readings?limit=3"),
                       (("events", "meter-a"), "/v1/devices/meter-a/events?limit=20"),
                       (("devices",), "/v1/devices"),
                       (("presence",), "/v1/presence"),
                       (("presence", "meter-a"), "/v1/devices/meter-a/presence?limit=50")):
        rc, out, err = cli(*argv, "--json")
        assert rc == 0, err
        assert json.loads(out) == op.get(path).json(), argv
    wid = op.work("meter-a", "read")["id"]
    rc, out, _ = cli("work", wid, "--json")
    assert rc == 0 and json.loads(out)["id"] == wid


def test_cli_export_round_trips(cli, client, headend, tmp_path):
    fill(headend, client)
    rc, out, err = cli("readings", "meter-a", "--format", "csv", "--since", str(T0 + 1),
                       "--until", str(T0 + 4))
    assert rc == 0, err
    want = [r for r in stored(headend, export.READING_KINDS) if T0 + 1 <= r["body"]["t"] < T0 + 4]
    assert export.parse_csv("readings", out) == want and len(want) == 3
    path = tmp_path / "events.json"
    rc, out, _ = cli("events", "meter-a", "--format", "json", "-o", str(path))
    assert rc == 0 and out == ""
    assert json.loads(path.read_text()) == stored(headend, export.EVENT_KINDS)
    rc, out, _ = cli("readings", "meter-a", "--since", str(T0 + 4), "--json")
    assert [r["body"]["t"] for r in json.loads(out)] == [T0 + 10, T0 + 5, T0 + 4]


@pytest.mark.parametrize("argv,message", [
    (["readings", "meter-a", "--since", "yesterday"], "expected unix seconds"),
    (["readings", "meter-a", "--since", "10", "--until", "5"], "--until is before --since"),
    (["events", "meter-a", "--format", "xml"], "Invalid value for '--format'"),
    (["events", "nope", "--format", "csv"], "HTTP 404: unknown device nope"),
    (["readings", "meter-a", "-o", "x.csv"], "--output goes with --format"),
])
def test_cli_bad_input_is_one_line(cli, client, headend, argv, message):
    headend.meter(client, "meter-a")
    rc, out, err = cli(*argv)
    assert rc != 0 and err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert message in err


def test_work_result_printed_whole(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    render.console = render.Console()
    long_note = "x" * 150
    w = {"id": "w-00000001", "device": "m", "op": "read", "status": "done", "role": "operator",
         "from": "operator:alice", "group": None, "deliveries": 1, "reason": None, "args": {},
         "created": T0, "expires": T0 + 60, "delivered_at": T0, "finished_at": T0,
         "result": {"reset_cause": "power_on", "uptime_s": 12, "note": long_note,
                    "registers": {"import_wh": 12345.678, "export_wh": 0.0},
                    "reading": {"t": T0, "vrms": 230.123456, "f": None, "pf": 0.96}}}
    render.work(w)
    out = capsys.readouterr().out
    flat = "".join(line.strip("│ ") for line in out.splitlines())
    for text in ("reset_cause", "power_on", "registers.import_wh", "12345.678",
                 "reading.vrms", "230.123456", "reading.f", "null", "reading.t", "1765000000",
                 "uptime_s"):
        assert text in out, text
    assert long_note in flat.replace("│", "").replace(" ", "")
    assert "…" not in out
