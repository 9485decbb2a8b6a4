"""Integer ranges of the metering hot path at full-scale 12-bit input.

mp_scripts/int_limits.py drives kernel.run one sample per call (as Meter.feed does, attention
handled by the Meter) under MicroPython (viper) and CPython, and records the largest |value| of
every state slot after each call, plus what the half-cycle bookkeeping forms from them: the
exact half-cycle sums, wide-sum low word + half sum, energy remainder + half-cycle energy, and
the Urms(1/2) threshold products. Every one must stay within +/-2**30 (a small int on 32-bit
ports; comfortably inside viper's 32-bit machine word).

Worst cases: samples alternating 0/4095, full-scale square waves (also slow ones, so half
cycles are forced closed at kernel.MAX_HALF_SAMPLES = 96), full-scale and clipped sines,
V alternating between the rail and mid scale (never crossing), random full-scale noise,
and inputs sitting at a rail (the offset tracker follows them) before a nominal sine.
Rates up to 128 samples per nominal cycle, the most Meter accepts.

The offset tracker is clamped to 200 counts around the board's mid point, so a full-scale
input after the input sat at a rail stays in range; phase corrections beyond a fifth of a
sample of extrapolation are refused by Meter (the 2-tap interpolation's gain would grow).
"""

import functools
import json

import budget
import config  # noqa: E402
import kernel  # noqa: E402
import metering  # noqa: E402
import pytest
import wide  # noqa: E402
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "int_limits.py"
LIMIT = 2**30

# (nominal Hz, samples per nominal cycle, channel delay us)
RATES = [(50, 128, 0.0), (60, 128, 50.0), (60, 64, 0.0), (50, 32, 50.0)]
if budget.FAST:  # the edit-test loop: the largest sums (128 per cycle)
    RATES = [RATES[0]]
PAIRS = [  # (V pattern, I pattern), see the driver's PATTERNS
    ("alt", "alt"), ("alt", "alt_inv"), ("alt", "alt4"), ("alt4", "alt"),
    ("square", "square"), ("square", "square_inv"), ("square", "alt"),
    ("square_slow", "square_slow"), ("square_slow", "alt_inv"),
    ("sine", "sine"), ("sine", "sine_90"), ("sine_45hz", "sine_45hz"),
    ("sine_65hz", "sine_65hz"), ("sine_clipped", "sine_clipped"),
    ("rail_mid", "alt"), ("rail_mid", "alt_inv"), ("rail_mid", "rail_hi"),
    ("noise", "noise2"), ("mid", "rail_lo"),
]
# At a rail long enough for the offset tracker to follow it, then back to a nominal sine
# (full scale after a rail is a known failure, see test_full_scale_after_a_rail).
RAIL_RECOVERY = [("rail_hi", "sine_nominal"), ("rail_lo", "sine_nominal"), ("rail_lo", "mid"),
                 ("rail_hi", "mid")]
if budget.FAST:  # a spread that keeps the largest sums and the forced half-cycle closes
    PAIRS = [PAIRS[k] for k in (0, 4, 7, 9, 13, 16, 17)]
    RAIL_RECOVERY = RAIL_RECOVERY[:2]


def _case(name, nominal, spc, delay_us, segments, phase_cal=0.0):
    return {"name": name, "nominal": nominal, "spc": spc, "delay_us": delay_us,
            "phase_cal": phase_cal, "segments": segments}


def worst_cases():
    cases = []
    for nominal, spc, delay in RATES:
        for v, i in PAIRS:
            name = "%s/%s@%dHz*%d" % (v, i, nominal, spc)
            cases.append(_case(name, nominal, spc, delay, [[0.6, v, i]]))
        for rail, then in RAIL_RECOVERY:
            name = "%s>%s@%dHz*%d" % (rail, then, nominal, spc)
            cases.append(_case(name, nominal, spc, delay, [[0.4, rail, rail], [0.5, then, then]]))
    return cases


def run_driver(interpreter, cases):
    out = runner.run(interpreter, DRIVER, stdin=json.dumps(cases).encode(), timeout=600)
    return {r["name"]: r for r in runner.records(out)}


@functools.cache
def worst_results(interpreter):
    return run_driver(interpreter, worst_cases())


def slot_names():
    names = {}
    skip = {"FIELDS", "EXT", "EXT_SIZE", "SLOTS", "MAX_HALF_SAMPLES", "COEF_BITS", "WIDE_SHIFT"}
    for name, value in sorted(vars(kernel).items()):
        if name.isupper() and isinstance(value, int) and name not in skip and \
                not name.startswith("ATTN_") and name not in ("RISING", "FALLING", "FORCED_EDGE"):
            if 0 <= value < kernel.SLOTS:
                names.setdefault(value, name)
    for j in range(kernel.FIELDS):  # wide sums: (hi, lo) pairs per field
        field = names.get(kernel.N + j, str(kernel.N + j))
        for base, region in ((kernel.READING, "READING"), (kernel.WINDOW, "WINDOW")):
            names[base + 2 * j] = "%s.%s.hi" % (region, field)
            names[base + 2 * j + 1] = "%s.%s.lo" % (region, field)
    return names


def over_limit(result):
    """Names and values of everything in a driver result beyond +/-LIMIT (and any error)."""
    names = slot_names()
    bad = ["%s=%d" % (names.get(j, j), x) for j, x in enumerate(result["slots"]) if x > LIMIT]
    bad += ["half %s=%d" % (names.get(kernel.N + j), x)
            for j, x in enumerate(result["half"]) if x > LIMIT]
    for key in ("wide_lo", "energy", "urms_products", "arrays", "per_sample"):
        if result[key] > LIMIT:
            bad.append("%s=%d" % (key, result[key]))
    if result["error"]:
        bad.append(result["error"])
    return bad


# the three tests that read worst_results share its cached driver runs on one xdist worker
SAME_WORKER = pytest.mark.xdist_group("int_limits_worst_cases")


@SAME_WORKER
def test_full_scale_worst_cases(interpreter):
    results = worst_results(interpreter)
    assert len(results) == len(worst_cases())
    bad = {name: over_limit(r) for name, r in results.items() if over_limit(r)}
    assert not bad, bad
    largest = max(results.values(), key=lambda r: max(r["slots"]))
    print("largest slot value %.3f * 2**30 (%s)" % (max(largest["slots"]) / LIMIT,
                                                     largest["name"]))


@SAME_WORKER
def test_half_cycles_stop_at_max_half_samples(interpreter):
    results = worst_results(interpreter)
    assert max(r["max_half_n"] for r in results.values()) == kernel.MAX_HALF_SAMPLES
    slow = results["square_slow/square_slow@50Hz*128"]
    assert slow["max_half_n"] == kernel.MAX_HALF_SAMPLES  # the limit is actually reached
    assert all(r["halves"] > 25 for r in results.values())


@SAME_WORKER
def test_viper_matches_cpython():
    mpy, cpy = worst_results("micropython"), worst_results("cpython")
    assert mpy == cpy


@pytest.mark.parametrize("nominal", [50, 60])
def test_samples_per_cycle_limits(nominal):
    class Board:
        channel_delay_s = 0.0
        v_gain = 0.25
        i_gain = 0.05
        v_mid = i_mid = 2048

    cfg = config.validate({"frequency": nominal})
    for spc, ok in ((32, True), (128, True), (31.5, False), (129, False)):
        Board.sample_rate = nominal * spc
        if ok:
            metering.Meter(cfg, Board())
        else:
            with pytest.raises(ValueError):
                metering.Meter(cfg, Board())


@pytest.mark.parametrize("then", ["sine", "square", "rail_hi"])
def test_full_scale_after_a_rail(interpreter, then):
    cases = [_case("rail", 50, 128, 0.0, [[0.4, "rail_lo", "rail_lo"], [0.5, then, then]])]
    assert not over_limit(run_driver(interpreter, cases)["rail"])


@pytest.mark.parametrize("phase_cal", [-20.0, 10.0, 20.0])
def test_large_phase_calibration_is_refused(phase_cal):
    # 10 deg at 128 samples/cycle is 3.6 samples: the 2-tap correction would extrapolate
    import config
    import metering

    class Board:
        sample_rate = 50 * 128
        channel_delay_s = 0.0
        v_gain = 0.25
        i_gain = 0.05
        v_mid = i_mid = 2048

    with pytest.raises(ValueError, match="phase_cal_deg"):
        metering.Meter(config.validate({"phase_cal_deg": phase_cal}), Board())


@pytest.mark.parametrize("phase_cal", [-3.3, -0.5, 0.5])  # 128 spc: -3.37..0.56 deg allowed
def test_phase_calibration_within_a_sample(interpreter, phase_cal):
    cases = [_case("cal", 50, 128, 0.0, [[0.6, "rail_mid", "alt_inv"]], phase_cal)]
    assert not over_limit(run_driver(interpreter, cases)["cal"])


# wide.div: floor division of a (hi, lo) wide value by n, against Python ints

@settings(max_examples=examples(2000), deadline=None)
@given(n=st.integers(1, 2**19 - 1), q=st.integers(-2**30, 2**30 - 1), r=st.data(),
       at=st.integers(0, 3))
def test_wide_div_is_floor_division(n, q, r, at):
    x = q * n + r.draw(st.integers(0, n - 1))
    a = wide_array(x, at)
    assert wide.value(a, at) == x
    assert wide.div(a, at, n) == x // n == q


@settings(max_examples=examples(500), deadline=None)
@given(x=st.integers(-2**49, 2**49), n=st.integers(1, 2**19 - 1))
def test_wide_div_any_value_with_small_quotient(x, n):
    if -2**30 <= x // n < 2**30:
        assert wide.div(wide_array(x, 0), 0, n) == x // n


def wide_array(x, at):
    import array

    a = array.array("i", [7] * (at + 2))
    a[at] = x >> wide.SHIFT
    a[at + 1] = x & (wide.LOW - 1)
    return a
