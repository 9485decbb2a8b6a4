"""Alarms on the meter (firmware/alarms.py): loading at 80/95/0 % of rated current, block
demand and frequency, each with a time delay and hysteresis, start and end pushed as
`alarm` items; the App loads it only when configured, changes thresholds live, and the
head-end escalates the start (not the end)."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

RULES = runner.ROOT / "host_tests" / "mp_scripts" / "alarm_rules.py"
T0 = 1796000000


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    return [json.loads(line) for line in runner.run(request.param, RULES).splitlines()]


def brief(records):
    return [(r["kind"], r["state"], r["start_s"] - T0, r.get("end_s", T0) - T0)
            for r in records]


def test_loading_alarms_delay_and_hysteresis(out):
    records, active = out[0]
    assert brief(records) == [
        ("load_80", "start", 0, 0), ("load_95", "start", 0, 0),     # held 3 s, from t=0
        ("load_95", "end", 0, 8),           # 9.2 A: below 9.5 A by more than 0.2 A
        ("load_80", "end", 0, 10),          # 1 A
        ("no_load", "start", 12, 0)]        # 0 A held 3 s, from t=12
    start = records[1]
    assert start["value"] == pytest.approx(9.6) and start["threshold"] == pytest.approx(9.5)
    assert start["start_ms"] == 250
    assert records[2]["duration_s"] == 8 and records[2]["worst"] == pytest.approx(9.6)
    assert active == ["no_load"]


def test_a_spike_shorter_than_the_delay_raises_nothing(out):
    assert out[1] == [[], []]


def test_frequency_band_with_hysteresis(out):
    records, active = out[2]
    # 50.6 starts f_high; 50.45 stays (hysteresis 0.5 % of 50 Hz / 2 = 0.25 Hz); 50.2 ends;
    # no frequency (no crossings) is skipped; 49.4 starts f_low; 49.9 ends it
    assert brief(records) == [("f_high", "start", 1, 0), ("f_high", "end", 1, 3),
                              ("f_low", "start", 5, 0), ("f_low", "end", 5, 6)]
    assert active == []


def test_demand_alarm(out):
    records, _ = out[3]
    assert brief(records) == [("demand_high", "start", 1, 0), ("demand_high", "end", 1, 3)]


def test_defaults_raise_no_alarm(out):
    assert out[4] == [[], []]


class Limited:
    """The sim board for `seconds`, then no more samples (App.metering returns)."""

    def __init__(self, scenario, seconds):
        from boards.sim_board import SimBoard
        self.board = SimBoard(scenario)
        self.left = int(seconds * self.board.sample_rate)

    def __getattr__(self, name):
        return getattr(self.board, name)

    def read(self, v, i):
        if self.left <= 0:
            return 0
        n = self.board.read(v, i)
        self.left -= n
        return n


def test_the_app_pushes_alarms_and_changes_thresholds_live(tmp_path):
    import asyncio

    config = runner.import_firmware("config")
    app_mod = runner.import_firmware("app")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    scenario = {"nominal_v": 230, "frequency": 50, "samples_per_cycle": 64,
                "loads": [{"at_s": 0, "p_w": 2300, "pf": 1.0}]}          # 10 A
    plain = app_mod.App(Limited(scenario, 1), config.validate({}), str(tmp_path / "a"),
                        realtime=False)
    assert plain.protection.alarms is None           # not configured: alarms.py is not even loaded
    cfg = config.validate({"rated_a": 10.4, "alarm_delay_s": 2})
    app = app_mod.App(Limited(scenario, 6), cfg, str(tmp_path / "b"), realtime=False)
    asyncio.run(app.metering())
    items = [i for i in app.outbox.peek(100, 1 << 20) if i["kind"] == "alarm"]
    assert [(i["body"]["kind"], i["body"]["state"]) for i in items] == [
        ("load_80", "start"), ("load_95", "start")]
    # over the back channel (an operator key): a higher rating ends load_95 at once
    result = app.change_config({"rated_a": 12.0})
    assert "rated_a" not in result["restart_needed"]
    app.board.left = int(2 * app.board.sample_rate)
    asyncio.run(app.metering())
    items = [i for i in app.outbox.peek(100, 1 << 20) if i["kind"] == "alarm"]
    assert [(i["body"]["kind"], i["body"]["state"]) for i in items][2:] == [("load_95", "end")]
    assert app.protection.alarms.active() == ["load_80"]


def test_the_head_end_escalates_a_meter_alarms_start_only(tmp_path):
    from fastapi.testclient import TestClient
    from headend_harness import Api, Headend

    from headend import devices, escalation

    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        meter = he.meter(client, "m1")
        op = Api(client, he.op_token)
        op.post("/v1/groups", json={"name": "g", "members": ["m1"]})
        devices.add_token(he.hub.db, "carol", "operator")
        Api(client, he.util_token).put("/v1/operators/carol/duty", json={"windows": ["always"]})
        escalation.set_list(he.hub.db, "g", ["carol"], kinds=["load_95"])
        start = {"kind": "load_95", "state": "start", "start_s": T0, "start_ms": 0,
                 "value": 9.9, "threshold": 9.5}
        meter.add("alarm", start)
        meter.add("alarm", dict(start, state="end", end_s=T0 + 60, end_ms=0, duration_s=60))
        meter.add("alarm", dict(start, kind="load_80"))     # not on the list's kinds
        meter.exchange()
        (alarm,) = op.get("/v1/alarms").json()
        assert alarm["kind"] == "load_95" and alarm["operator"] == "carol"
        assert alarm["body"]["value"] == 9.9
