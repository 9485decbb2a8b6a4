"""Three-phase and multi-circuit metering (firmware/polyphase.py) against a numpy oracle.

Signals are generated in float64 per channel (any unbalance, harmonics, off-nominal
frequency, channels sampled in a round robin) and replayed through the sim board's virtual
12-bit ADC. The oracle applies the same ADC model and works over each reading's window
(the leader's: the signals are periodic, so every element's whole-cycle window gives the
same means); it fits fundamental phasors by least squares (no DFT, nothing shared with the
firmware). Limits, for every reading after the first, per element and in total: Vrms, Irms
0.1 %; P 0.2 % of S; Q1 0.3 % of S1; phasor angles 0.35 deg; u2 within 0.1 point; f 10 mHz.
"""

import json
import math

import numpy as np
import pytest
from test_accuracy import adc

from sim.replay import replay_channels

pytestmark = pytest.mark.unit

SECONDS = 4.0
I_GAIN = 100.0 / 2048
V_LIMIT = I_LIMIT = 1e-3
P_LIMIT = 2e-3      # of S
Q_LIMIT = 3e-3      # of S1
ANGLE_LIMIT = 0.35  # degrees
U2_LIMIT = 0.1      # percentage points
F_LIMIT = 0.010
SHIFT = 2 * math.pi / 3


def shape(t, f, mag, ang, harm):
    """mag * (sin(w t + ang) + sum m sin(h (w t + ang) + p))"""
    x = 2 * math.pi * f * t + ang
    y = np.sin(x)
    for h, m, p in harm:
        y = y + m * np.sin(h * x + p)
    return mag * y


def fit(x, f, rate):
    """Peak phasor (complex, sine reference as the firmware's: angle 0 for sin(w t)) of the f Hz
    component of x, by least squares."""
    t = np.arange(len(x)) / rate
    basis = np.column_stack([np.cos(2 * math.pi * f * t), np.sin(2 * math.pi * f * t),
                             np.ones(len(x))])
    (a, b, _), *_ = np.linalg.lstsq(basis, x, rcond=None)
    return complex(a, -b)


def make(f, vs, is_, spc=64, offsets_us=None, seconds=SECONDS):
    """vs, is_: [(rms, angle rad, harmonics)] per channel. Returns (rate, v_gain, sampled
    channels, true channels at the reference instants)."""
    nominal = 50 if f < 55 else 60
    rate = float(spc * nominal)
    t = np.arange(int(seconds * rate)) / rate
    offs = [x * 1e-6 for x in (offsets_us or [0.0] * (len(vs) + len(is_)))]
    crest = max(1 + sum(m for _, m, _ in h) for _, _, h in vs)
    v_gain = max(r for r, _, _ in vs) * math.sqrt(2) * crest / (0.8 * 2047)
    chans = list(vs) + list(is_)
    sampled = [shape(t + offs[j], f, r * math.sqrt(2), a, h) for j, (r, a, h) in enumerate(chans)]
    true = [shape(t, f, r * math.sqrt(2), a, h) for r, a, h in chans]
    nv = len(vs)
    sampled = [adc(x, v_gain if j < nv else I_GAIN) for j, x in enumerate(sampled)]
    true = [adc(x, v_gain if j < nv else I_GAIN) for j, x in enumerate(true)]
    return rate, v_gain, sampled, true


def run(interpreter, wiring, f, vs, is_, offsets_us=None, circuits=None, spc=64):
    rate, v_gain, sampled, true = make(f, vs, is_, spc, offsets_us)
    cfg = {"wiring": wiring, "frequency": 50 if f < 55 else 60,
           "nominal_v": round(vs[0][0], 1)}
    if circuits:
        cfg["circuits"] = circuits
    out = replay_channels(sampled, rate, v_gain, I_GAIN, interpreter, cfg, offsets_us)
    result, start = [], None
    for r in out:
        if r["type"] != "reading":
            continue
        end = int(round(r["t"] * rate))
        if start is not None and end - start >= rate:
            result.append((r, start, end))
        start = end
    assert len(result) >= int(SECONDS) - 2, out
    return rate, sampled, true, result


def element(rate, f, v_s, i_s, v_t, i_t, a, b):
    """Oracle of one element over [a, b): vrms, irms, p, s, phasors V1, I1 (true instants)."""
    vw, iw = v_t[a:b] - v_t[a:b].mean(), i_t[a:b] - i_t[a:b].mean()
    vrms = float((v_s[a:b] - v_s[a:b].mean()).std())
    irms = float((i_s[a:b] - i_s[a:b].mean()).std())
    v1, i1 = fit(v_t[a:b], f, rate), fit(i_t[a:b], f, rate)
    return {"vrms": vrms, "irms": irms, "p": float(np.mean(vw * iw)), "s": vrms * irms,
            "v1": v1, "i1": i1, "q1": (v1 * i1.conjugate()).imag / 2,
            "s1": abs(v1) * abs(i1) / 2}


def deg(z):
    return math.degrees(math.atan2(z.imag, z.real))


def angle_err(a, b):
    return abs((a - b + 180) % 360 - 180)


def check_element(r, o, ref):
    assert r["vrms"] == pytest.approx(o["vrms"], rel=V_LIMIT)
    assert r["irms"] == pytest.approx(o["irms"], rel=I_LIMIT)
    assert abs(r["p"] - o["p"]) <= P_LIMIT * o["s"], (r["p"], o["p"], o["s"])
    assert abs(r["q"] - o["q1"]) <= Q_LIMIT * o["s1"], (r["q"], o["q1"], o["s1"])
    assert angle_err(r["v1_deg"], deg(o["v1"]) - deg(ref)) <= ANGLE_LIMIT, (r["v1_deg"], o)
    if o["irms"] > 0.02 * 100 / math.sqrt(2):
        assert angle_err(r["i1_deg"], deg(o["i1"]) - deg(ref)) <= ANGLE_LIMIT, (r["i1_deg"], o)


def u2_oracle(va, vb, vc):
    a = complex(-0.5, math.sqrt(3) / 2)
    pos, neg = abs(va + a * vb + a * a * vc), abs(va + a * a * vb + a * vc)
    return (100 * neg / pos, "abc") if pos >= neg else (100 * pos / neg, "acb")


def three_phase(vrms=(230, 230, 230), irms=(10, 10, 10), lag=(0.5, 0.5, 0.5),
                v_ang=(0.0, -SHIFT, SHIFT), v_harm=(), i_harm=()):
    vs = [(vrms[k], 0.3 + v_ang[k], v_harm) for k in range(3)]
    is_ = [(irms[k], 0.3 + v_ang[k] - lag[k], i_harm) for k in range(3)]
    return vs, is_


RECTIFIER = ((3, 0.5, 0.0), (5, 0.3, 0.3), (7, 0.15, 0.6), (11, 0.05, 0.0))
V_HARM = ((5, 0.04, 0.2), (7, 0.03, 1.0))
CASES_3P4W = {
    "balanced": three_phase(),
    "unbalanced_harmonics": three_phase(vrms=(230, 215, 241), irms=(12, 3, 30),
                                        lag=(0.3, -0.6, 2.9), v_ang=(0.0, -2.05, 2.2),
                                        v_harm=V_HARM, i_harm=RECTIFIER),
    "export_one_phase_idle": three_phase(irms=(20, 0.0, 7), lag=(math.pi - 0.2, 0, 0.1)),
    "negative_sequence": three_phase(v_ang=(0.0, SHIFT, -SHIFT)),
    "full_scale_current": three_phase(irms=(69, 69, 69), lag=(0.1, 1.0, -0.4)),
}


@pytest.mark.parametrize("name", sorted(CASES_3P4W))
def test_3p4w(interpreter, name):
    vs, is_ = CASES_3P4W[name]
    f = 49.7 if name != "unbalanced_harmonics" else 60.4
    rate, sampled, true, readings = run(interpreter, "3p4w", f, vs, is_)
    for r, a, b in readings:
        os_ = [element(rate, f, sampled[k], sampled[3 + k], true[k], true[3 + k], a, b)
               for k in range(3)]
        ref = os_[0]["v1"]
        for k, name_ in enumerate("abc"):
            check_element(r[name_], os_[k], ref)
        s = sum(o["s"] for o in os_)
        assert abs(r["p"] - sum(o["p"] for o in os_)) <= P_LIMIT * s
        assert abs(r["q"] - sum(o["q1"] for o in os_)) <= Q_LIMIT * sum(o["s1"] for o in os_)
        assert r["s"] == pytest.approx(s, rel=V_LIMIT + I_LIMIT)
        assert r["f"] == pytest.approx(f, abs=F_LIMIT)
        u2, seq = u2_oracle(*[o["v1"] for o in os_])
        assert r["sequence"] == seq
        assert abs(r["u2_pct"] - u2) <= U2_LIMIT, (r["u2_pct"], u2)


def test_3p4w_round_robin_sampling(interpreter):
    # channels read one after another, 20 us apart: va ia vb ib vc ic
    vs, is_ = three_phase(irms=(15, 8, 11), lag=(0.4, 0.9, -0.3), i_harm=RECTIFIER)
    offsets = [0.0, 40.0, 80.0, 20.0, 60.0, 100.0]
    rate, sampled, true, readings = run(interpreter, "3p4w", 50.2, vs, is_, offsets)
    for r, a, b in readings:
        os_ = [element(rate, 50.2, sampled[k], sampled[3 + k], true[k], true[3 + k], a, b)
               for k in range(3)]
        for k, name_ in enumerate("abc"):
            check_element(r[name_], os_[k], os_[0]["v1"])


def line(vs, a, b):
    """(rms, angle, harmonics) of the line voltage vs[a] - vs[b] (sinusoidal phases)."""
    za = vs[a][0] * complex(math.cos(vs[a][1]), math.sin(vs[a][1]))
    zb = vs[b][0] * complex(math.cos(vs[b][1]), math.sin(vs[b][1]))
    z = za - zb
    return abs(z), math.atan2(z.imag, z.real), ()


CASES_3P3W = {
    "balanced": three_phase(),
    "low_pf": three_phase(lag=(1.2, 1.2, 1.2)),     # one wattmeter reads negative
    "unbalanced_export": three_phase(vrms=(230, 220, 236), v_ang=(0.0, -2.0, 2.15),
                                     irms=(20, 20, 20), lag=(math.pi + 0.3,) * 3),
}


@pytest.mark.parametrize("name", sorted(CASES_3P3W))
def test_3p3w_two_wattmeter(interpreter, name):
    vs, is_ = CASES_3P3W[name]
    # a three-wire load: Ib = -Ia - Ic, so take Ia and Ic and make Ib from them
    v_lines = [line(vs, 0, 1), line(vs, 2, 1)]
    f = 50.0
    rate, sampled, true, readings = run(interpreter, "3p3w", f, v_lines, [is_[0], is_[2]])
    for r, a, b in readings:
        w1 = element(rate, f, sampled[0], sampled[2], true[0], true[2], a, b)
        w2 = element(rate, f, sampled[1], sampled[3], true[1], true[3], a, b)
        p = w1["p"] + w2["p"]
        q1 = w1["q1"] + w2["q1"]
        s = math.hypot(p, q1)
        assert abs(r["p"] - p) <= P_LIMIT * (w1["s"] + w2["s"]), (r["p"], p)
        assert abs(r["q"] - q1) <= Q_LIMIT * (w1["s1"] + w2["s1"]), (r["q"], q1)
        assert r["s"] == pytest.approx(s, rel=3e-3)
        # and the physics: two wattmeters give the three-phase power of the phase quantities
        ia, ic = is_[0], is_[2]
        s3 = sum(vs[k][0] * i[0] * complex(math.cos(vs[k][1] - i[1]), math.sin(vs[k][1] - i[1]))
                 for k, i in ((0, ia), (2, ic)))
        ib = -(ia[0] * complex(math.cos(ia[1]), math.sin(ia[1]))
               + ic[0] * complex(math.cos(ic[1]), math.sin(ic[1])))
        vb = vs[1][0] * complex(math.cos(vs[1][1]), math.sin(vs[1][1]))
        s3 += vb * ib.conjugate()
        assert abs(r["p"] - s3.real) <= 3e-3 * abs(s3) and abs(r["q"] - s3.imag) <= 3e-3 * abs(s3)
        assert r["vab"] == pytest.approx(w1["vrms"], rel=V_LIMIT)
        assert r["vcb"] == pytest.approx(w2["vrms"], rel=V_LIMIT)
        assert r["ia"] == pytest.approx(w1["irms"], rel=I_LIMIT)
        assert r["ic"] == pytest.approx(w2["irms"], rel=I_LIMIT)
        u2, seq = u2_oracle(fit(true[0][a:b], f, rate), -fit(true[1][a:b], f, rate),
                            fit(true[1][a:b], f, rate) - fit(true[0][a:b], f, rate))
        assert r["sequence"] == seq and abs(r["u2_pct"] - u2) <= U2_LIMIT
        assert "a" not in r and "b" not in r  # no per-phase values in a 3-wire connection


def test_3p3w_totals_net_the_wattmeters():
    # at PF 0.34 one wattmeter exports while the load imports: the total register imports only
    vs, is_ = three_phase(lag=(1.22,) * 3)
    rate, sampled, true, readings = run("cpython", "3p3w", 50.0,
                                        [line(vs, 0, 1), line(vs, 2, 1)], [is_[0], is_[2]])
    last = readings[-1][0]
    assert last["p"] > 0 and last["export_wh"] == 0 and last["import_wh"] > 0
    prev = readings[-2][0]
    wh = (last["import_wh"] - prev["import_wh"])
    assert wh == pytest.approx(last["p"] * (last["t"] - prev["t"]) / 3600, abs=2e-3)


def test_one_voltage_five_circuits(interpreter):
    v = [(230.0, 0.3, V_HARM)]
    cts = [(12.0, 0.3 - 0.2, ()), (3.0, 0.3 + 0.7, RECTIFIER), (40.0, 0.3 - 2.8, ()),
           (0.5, 0.3, ()), (25.0, 0.3 - 1.0, RECTIFIER)]
    f = 59.6
    rate, sampled, true, readings = run(interpreter, "1vnct", f, v, cts, circuits=5)
    for r, a, b in readings:
        assert len(r["circuits"]) == 5
        os_ = [element(rate, f, sampled[0], sampled[1 + k], true[0], true[1 + k], a, b)
               for k in range(5)]
        for c, o in zip(r["circuits"], os_):
            check_element(c, o, os_[0]["v1"])
        assert r["p"] == pytest.approx(sum(c["p"] for c in r["circuits"]))
        assert r["vrms"] == pytest.approx(os_[0]["vrms"], rel=V_LIMIT)


def test_wiring_needs_the_channels_the_board_has():
    from lab import runner

    polyphase = runner.import_firmware("polyphase")
    board = type("Board", (), {"channels": 6, "sample_rate": 3200.0})()
    assert polyphase.check_board({"wiring": "3p4w"}, board) == 6
    assert polyphase.check_board({"wiring": "1vnct", "circuits": 5}, board) == 6
    with pytest.raises(ValueError, match="needs 7 ADC channels; this board has 6"):
        polyphase.check_board({"wiring": "1vnct", "circuits": 6}, board)
    config = runner.import_firmware("config")
    with pytest.raises(config.ConfigError, match="wiring must be"):
        config.validate({"wiring": "3p5w"})


def test_no_allocation_per_cycle_in_any_configuration():
    """bench/poly_mp.py under the unix port: gc.mem_alloc() growth over one second of
    frames, after warm-up, for every wiring with THD off and on, and with harmonic groups
    (not 3P3W)."""
    from lab import runner

    out = runner.run("micropython", runner.ROOT / "tools" / "bench" / "poly_mp.py", 1)
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert len(rows) == 11 and sum(r["groups"] for r in rows) == 3
    for r in rows:
        assert r["heap_b_per_cycle"] == 0, r


def test_polyphase_dips_and_interruption(interpreter):
    """Per-phase events, then the polyphase ones (IEC 61000-4-30): a dip on B (1.5-1.7 s, to
    60 %) overlapping one on A (1.6-1.9 s, to 75 %) makes one polyphase dip 1.5-1.9 s with
    B's residual; all three interrupted (C from 2.5 s, A and B from 2.6 s) until A
    recovers at 2.9 s (B 3.0 s, C 3.1 s) makes one interruption 2.6-2.9 s."""
    rate = 3200.0
    t = np.arange(int(4.0 * rate)) / rate
    env = [np.ones_like(t) for _ in range(3)]
    env[1][(t >= 1.5) & (t < 1.7)] = 0.6
    env[0][(t >= 1.6) & (t < 1.9)] = 0.75
    for k, (a, b) in enumerate([(2.6, 2.9), (2.6, 3.0), (2.5, 3.1)]):
        env[k][(t >= a) & (t < b)] = 0.0
    vpk = 230 * math.sqrt(2)
    vs = [env[k] * vpk * np.sin(2 * math.pi * 50 * t + 0.3 - k * SHIFT) for k in range(3)]
    is_ = [10 * math.sqrt(2) * np.sin(2 * math.pi * 50 * t - k * SHIFT) for k in range(3)]
    out = replay_channels(vs + is_, rate, vpk * 1.3 / 2047, I_GAIN, interpreter,
                          {"wiring": "3p4w", "nominal_v": 230})
    events = [r for r in out if r["type"] == "event"]
    half = 0.01 + 1e-3
    per = {}
    for e in events:
        if e["phase"] != "poly":
            per.setdefault((e["phase"], e["kind"]), e)  # the first of each
    assert per["b", "dip"]["start_s"] == pytest.approx(1.5, abs=half)
    assert per["a", "dip"]["residual_v"] == pytest.approx(0.75 * 230, rel=0.01)
    poly = [e for e in events if e["phase"] == "poly"]
    dips = [e for e in poly if e["kind"] == "dip"]
    assert dips[0]["start_s"] == pytest.approx(1.5, abs=half)
    assert dips[0]["start_s"] + dips[0]["duration_ms"] / 1000 == pytest.approx(1.9, abs=2 * half)
    assert dips[0]["residual_v"] == pytest.approx(0.6 * 230, rel=0.01)
    assert dips[0]["phases"] == "ab"
    # the interruptions' dips (every phase) merge into a second polyphase dip
    assert dips[1]["start_s"] == pytest.approx(2.5, abs=half) and dips[1]["phases"] == "abc"
    intr = [e for e in poly if e["kind"] == "interruption"]
    assert len(intr) == 1
    # Urms(1/2) over a cycle falls below 10 % only once the cycle is nearly all zero
    mine = [e for e in events if e["kind"] == "interruption" and e["phase"] != "poly"]
    assert len(mine) == 3
    assert intr[0]["start_s"] == max(e["start_s"] for e in mine)
    end = intr[0]["start_s"] + intr[0]["duration_ms"] / 1000
    assert end == pytest.approx(min(e["start_s"] + e["duration_ms"] / 1000 for e in mine))
    assert intr[0]["start_s"] == pytest.approx(2.6, abs=0.04)
    assert end == pytest.approx(2.9, abs=0.04)
    assert len([e for e in poly if e["kind"] == "swell"]) == 0


def test_3p4w_neutral_ct(interpreter):
    """The optional neutral CT: In's rms (and THD) beside the phases, out of the totals. An
    unbalanced load with triplen harmonics returns them on the neutral."""
    vs, is_ = three_phase(irms=(20, 12, 6), lag=(0.3, 0.5, 0.1), i_harm=((3, 0.3, 0.0),))
    f = 50.0
    rate, v_gain, sampled, true = make(f, vs, is_)
    n_sampled = adc(sampled[3] + sampled[4] + sampled[5], I_GAIN)
    out = replay_channels(sampled + [n_sampled], rate, v_gain, I_GAIN, interpreter,
                          {"wiring": "3p4w", "neutral_ct": True})
    rs = [r for r in out if r["type"] == "reading"][1:-1]
    assert rs
    for r in rs:
        assert r["in"] == pytest.approx(float(n_sampled.std()), rel=I_LIMIT)
        assert r["thd_in"] > 30   # the triplens add up on the neutral
        assert r["p"] == pytest.approx(sum(r[k]["p"] for k in "abc"))
        assert "n" not in r or not isinstance(r.get("n"), dict)
