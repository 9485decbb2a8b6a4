"""Three-phase and multi-circuit meters in the App (issue 14, item 1): the `make sim`
scenarios three_phase.json and multi_circuit.json on the simulated polyphase board
(boards/sim_poly.py), metered by the App on all three interpreters: readings with per-phase
(per-circuit) objects and totals, the phase-B dip as a phase event and a polyphase one with
wall-clock start times, the netted total registers and each element's saved and read back at
start."""

import json
import math

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "poly_app.py"
SCENARIOS = runner.ROOT / "tools" / "sim" / "scenarios"


def run(interpreter, tmp_path, name, seconds):
    if not runner.available(interpreter):
        pytest.skip(runner.board_missing_reason())
    (tmp_path / "state").mkdir()
    out = runner.run(interpreter, SCRIPT, str(tmp_path / "state"), str(SCENARIOS / name),
                     seconds)
    return json.loads(out.strip().splitlines()[-1])


def test_three_phase_scenario(interpreter, tmp_path):
    o = run(interpreter, tmp_path, "three_phase.json", 6)
    assert o["modules"] == ["poly_events", "poly_reading", "polyphase"]
    r = o["readings"][1]                  # 1-2 s: before the dip (4 s)
    assert r["wiring"] == "3p4w" and r["sequence"] == "abc" and r["u2_pct"] < 0.1
    assert r["a"]["p"] == pytest.approx(4000, rel=0.01)
    assert r["b"]["p"] == pytest.approx(3000, rel=0.01) and r["b"]["q"] < 0  # leading
    assert r["c"]["p"] == pytest.approx(1200, rel=0.01)
    assert r["p"] == pytest.approx(8200, rel=0.01)
    assert r["a"]["hi"][1] == pytest.approx(40.0, rel=0.05)         # the 3rd on phase a
    assert r["irms"] == pytest.approx(r["a"]["irms"])                # the largest current
    assert r["in"] > 5 and r["thd_in"] > 0                          # the unbalance returns
    assert r["b"]["v1_deg"] == pytest.approx(-120, abs=0.5)
    kinds = {(e["phase"], e["kind"]) for e in o["events"] if e["type"] == "event"}
    assert kinds == {("b", "dip"), ("poly", "dip")}
    dip = [e for e in o["events"] if e["type"] == "event" and e["phase"] == "poly"][0]
    assert dip["extreme_pct"] == pytest.approx(60, abs=1.5) and dip["start_s"] > 1.7e9
    assert o["saved"]["import_wh"] == pytest.approx(8200 * 6 / 3600, rel=0.2)
    assert o["restored"] == o["saved"]
    check_elements_saved(o, [4000, 3000, 1200], 8200)


def check_elements_saved(o, powers, total):
    """Each element's registers are saved with the totals and read back at start, exactly;
    the next two seconds add to both once (the restored elements are not netted into the
    totals again)."""
    assert o["restored_elements"] == o["saved_elements"]
    for saved, after, p in zip(o["saved_elements"], o["after_elements"], powers):
        key = "import_wh" if p >= 0 else "export_wh"
        assert saved[key] == pytest.approx(abs(p) * 6 / 3600, rel=0.2, abs=0.01)
        assert after[key] - saved[key] == pytest.approx(abs(p) * 2 / 3600, rel=0.05, abs=0.01)
    grew = o["after"]["import_wh"] - o["saved"]["import_wh"]
    assert grew == pytest.approx(total * 2 / 3600, rel=0.05)


def test_multi_circuit_scenario(interpreter, tmp_path):
    o = run(interpreter, tmp_path, "multi_circuit.json", 6)
    r = o["readings"][-2]
    assert r["wiring"] == "1vnct" and len(r["circuits"]) == 5
    want = [1800, 0, 150, -2500, 7000]
    for c, p in zip(r["circuits"], want):
        assert c["p"] == pytest.approx(p, abs=0.01 * abs(p) + 5)
    assert r["p"] == pytest.approx(sum(want), rel=0.01)
    assert r["circuits"][3]["export_wh"] > 0 and r["export_wh"] == 0   # netted: imports
    assert r["vrms"] == pytest.approx(230, rel=0.005)
    assert not math.isnan(r["pf"])
    check_elements_saved(o, want, sum(want))
