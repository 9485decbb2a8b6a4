"""tools/replay on three-phase files (issue 14, item 8): CSV t,va,vb,vc,ia,ib,ic and a
COMTRADE record with V and I channels on phases A, B and C, at the recording's true primary
nominal (a 4.16 kV feeder: 2401.8 V phase to neutral)."""

import math

import numpy as np
import pytest
from test_replay import FREQ, PHI, records, run_replay, write_comtrade

pytestmark = pytest.mark.system

V_PH, I_PH = 2401.8, 300.0
SHIFT = 2 * math.pi / 3


def feeder3(rate, seconds):
    """Three phases of a 4.16 kV feeder: 5 % 5th in V, 20 % 5th in I, PF 0.9 lagging,
    phase C's current 20 % low; phase B dips to 70 % for 5 cycles at 2.3 s."""
    t = np.arange(int(round(seconds * rate))) / rate
    vs, is_ = [], []
    for k in range(3):
        x = 2 * math.pi * FREQ * t - k * SHIFT
        v = V_PH * math.sqrt(2) * (np.sin(x) + 0.05 * np.sin(5 * x))
        ik = I_PH * (0.8 if k == 2 else 1.0)
        i = ik * math.sqrt(2) * (np.sin(x - PHI) + 0.2 * np.sin(5 * (x - PHI)))
        if k == 1:
            v[(t >= 2.3) & (t < 2.3 + 5 / FREQ)] *= 0.7
        vs.append(v)
        is_.append(i)
    return t, vs, is_


def check(recs):
    readings = [r for r in recs if r["type"] == "reading"]
    assert len(readings) == 3
    r = readings[1]
    for name, scale in (("a", 1.0), ("b", 1.0), ("c", 0.8)):
        ph = r[name]
        assert ph["v1"] == pytest.approx(V_PH, rel=0.002)
        assert ph["i1"] == pytest.approx(I_PH * scale, rel=0.002)
        assert ph["q"] == pytest.approx(V_PH * I_PH * scale * math.sin(PHI), rel=0.005)
        assert ph["thd_v"] == pytest.approx(5.0, rel=0.05)
        assert ph["thd_i"] == pytest.approx(20.0, rel=0.05)
    assert r["b"]["v1_deg"] == pytest.approx(-120, abs=0.2)
    assert r["c"]["v1_deg"] == pytest.approx(120, abs=0.2)
    p = sum(r[k]["p"] for k in "abc")
    per_amp = V_PH * (math.cos(PHI) + 0.05 * 0.2 * math.cos(5 * PHI))  # fundamental + 5th
    assert r["p"] == pytest.approx(p) and p == pytest.approx(per_amp * I_PH * 2.8, rel=0.003)
    assert r["u2_pct"] < 0.1 and r["sequence"] == "abc"
    assert readings[2]["import_wh"] > readings[1]["import_wh"] > 100.0  # primary Wh
    events = [e for e in recs if e["type"] == "event"]
    assert {(e["phase"], e["kind"]) for e in events} == {("b", "dip"), ("poly", "dip")}
    for e in events:
        assert e["extreme_pct"] == pytest.approx(70, abs=1.0)
        assert e["residual_v"] == pytest.approx(0.7 * V_PH * math.sqrt(1 + 0.05**2), rel=0.02)


def test_three_phase_csv_at_primary_nominal(tmp_path):
    t, vs, is_ = feeder3(3200, 3.0)
    path = tmp_path / "feeder3.csv"
    np.savetxt(path, np.c_[t, vs[0], vs[1], vs[2], is_[0], is_[1], is_[2]], delimiter=",",
               fmt="%.10g", header="t,va,vb,vc,ia,ib,ic", comments="")
    check(records(run_replay(path, "--nominal", "2401.8", "--interpreter", "cpython")))


def test_three_phase_comtrade_at_its_true_primary_nominal(tmp_path):
    # COMTRADE 2013 binary: voltages in primary kV, currents as 300/5 A CT secondaries
    t, vs, is_ = feeder3(3200, 3.0)
    chans = [("V" + p, p, "kV", 2e-4, v / 1000, 1, 1, "P") for p, v in zip("ABC", vs)]
    chans += [("I" + p, p, "A", 5e-4, i * 5 / 300, 300, 5, "S") for p, i in zip("ABC", is_)]
    cfg = write_comtrade(tmp_path / "feeder3.cfg", 3200, chans, "BINARY", "2013")
    check(records(run_replay(cfg, "--nominal", "2401.8")))
