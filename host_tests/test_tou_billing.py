"""Time-of-use registers and billing freezes on the meter (firmware/tou.py, billing.py),
on every interpreter: tariffs refused with the reason, the rate at boundary edges in UTC,
energy given to the rate in force, a power cut at a rate boundary (per-rate registers and
totals come back from one record, and always add up), scheduled and on-demand freezes, a
snapshot re-offered after a cut before it reached the outbox, a new tariff freezing the old
registers."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "tou_billing.py"
T0 = 1796000000


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    state = tmp_path_factory.mktemp("tou-" + request.param)
    return json.loads(runner.run(request.param, SCRIPT, str(state)))


def test_bad_tariffs_are_refused_with_the_reason(out):
    r = out["refusals"]
    assert all(r.values()), r                      # every one refused
    assert "overlapping or unordered" in r["unordered"]
    assert "offset 0" in r["not at 0"]
    assert "1..8" in r["nine rates"]
    assert "named twice" in r["rate twice"]
    assert "0..86399" in r["offset past end"] and "0..86399" in r["bool offset"]


def test_rate_at_boundary_edges(out):
    # before t0: the first rate; a switch takes effect at its second, not before; after the
    # horizon the last rate holds
    assert out["edges"] == [1, 1, 1, 0, 0, 0, 1, 1, 1]


def test_energy_goes_to_the_rate_in_force(out):
    # readings at 06:59:58, :59, 07:00:00 (the switch), :01, :02; the energy of the second
    # ending at 07:00:00 was metered before the switch
    assert out["rates_life1"] == ["offpeak", "offpeak", "peak", "peak", "peak"]
    assert out["life1"] == {"totals": [5000, 21], "per_rate": [[2000, 3000], [14, 7]]}


def test_power_loss_at_a_rate_boundary(out):
    # saved at 06:59:59 with 2 Wh offpeak; the cut lost the 3 s across the switch: totals and
    # per-rate registers come back from the same record, so they still add up
    assert out["restored"] == {"totals": [2000, 0], "per_rate": [[0, 2000], [0, 0]],
                               "tariff": "tou-1"}
    # after the restart (07:00:04) the energy goes to peak
    assert out["rates_life2"] == ["peak"] * 4
    assert out["life2"] == {"totals": [4000, 0], "per_rate": [[2000, 2000], [0, 0]]}


def test_scheduled_freeze_once_with_exact_registers(out):
    (kind, snap), = out["scheduled"]
    assert kind == "billing"
    assert snap["cause"] == "schedule" and snap["at"] == T0 + 12 * 3600
    assert snap["t"] == T0 + 12 * 3600 and snap["t_ms"] == 0
    assert snap["import_mwh"] == 4250 == sum(snap["rate_import_mwh"])
    assert snap["rate_import_mwh"] == [2250, 2000] and snap["rates"] == ["peak", "offpeak"]
    assert out["no_second_freeze"] == []


def test_a_freeze_lost_in_a_cut_is_offered_again_at_start(out):
    (kind, snap), = [i for i in out["reoffered"] if i[1]["id"] == out["demand_id"]]
    assert snap["cause"] == "utility" and snap["import_mwh"] == 4250


def test_a_new_tariff_freezes_the_old_registers_and_starts_at_zero(out):
    assert out["changed"]["tariff"] == "tou-2"
    assert "tariff" in out["change_freeze"]
    assert out["after_change"] == [[0, 0, 100], [0, 0, 0]]
    per_rate, done_kept = out["after_reset"]
    assert per_rate == [[0, 0, 0], [0, 0, 0]] and done_kept


APP = runner.ROOT / "host_tests" / "mp_scripts" / "tou_app.py"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def app_out(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    state = tmp_path_factory.mktemp("tou-app-" + request.param)
    return json.loads(runner.run(request.param, APP, str(state)))


def test_the_app_meters_per_rate_and_keeps_the_tariff(app_out):
    o = app_out
    assert o["billing_before"] is False       # a meter without a tariff never imports it
    assert o["set"]["tariff"] == "day" and o["set"]["switches"] == 2
    assert "overlapping or unordered" in o["refused"]
    # five readings a second apart, each at the rate in force at its time: the first comes
    # 1 s after the start, which is 1 or 2 s after t0 (the whole second the tariff was set
    # in; a loaded machine can take the start's remaining fraction before t0 is read)
    ts = [t for t, _ in o["readings"]]
    assert len(ts) == 5 and ts[0] in (1, 2) and all(b - a == 1 for a, b in zip(ts, ts[1:]))
    assert [rate for _, rate in o["readings"]] == ["peak" if t >= 3 else "offpeak" for t in ts]
    # shed_on_rate "peak": the relay opens on the first peak reading, by the rate
    assert o["shed"] == [["open", "rate peak"]]
    (item,) = o["billing_items"]
    snap = item["body"]
    assert snap["id"] == o["freeze"]["id"] and snap["cause"] == "utility"
    assert snap["import_mwh"] == sum(snap["rate_import_mwh"]) > 0
    assert all(v > 0 for v in snap["rate_import_mwh"])
    assert o["status"]["import_mwh"] == snap["rate_import_mwh"]
    # a restart reads the tariff and the per-rate registers back from flash
    assert o["restart"]["tariff"] == "day"
    assert o["restart"]["import_mwh"] == snap["rate_import_mwh"]
