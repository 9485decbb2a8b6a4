"""Steady-state metering allocates nothing, under the real MicroPython unix port.

mp_scripts/alloc.py builds a Meter on a SimBoard, generates the samples beforehand (acquisition
is not measured), warms up, then counts gc.mem_alloc() with the collector disabled across
1000 cycles of Meter.feed() calls. That span includes every per-half-cycle path, 10/12-cycle
window closes and reading closes (snapshot, offset tracking, energy folding), but not
Reporter.take(), which builds the reading dict once per interval and may allocate: its
allocation is printed for information only.

The unix port is 64-bit, so this cannot show small-int overflow allocations of a 32-bit port;
test_int_limits.py shows every hot-path value stays within the 32-bit small-int range.
"""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "alloc.py"
CYCLES = 1000

SCENARIOS = {
    "50hz_64spc": {
        "nominal_v": 230, "frequency": 50, "samples_per_cycle": 64,
        "noise_v": 0.2, "noise_i": 0.01,
        "loads": [{"p_w": 2300, "pf": 0.95, "lagging": True}],
    },
    "60hz_128spc_export": {
        "nominal_v": 120, "frequency": 60, "samples_per_cycle": 128,
        "noise_v": 0.1, "noise_i": 0.01,
        "loads": [{"p_w": -1500, "pf": 0.9, "lagging": False}],
        "adc": {"channel_delay_us": 50, "v_offset": 2040, "i_offset": 2056},
    },
    "50hz_32spc_harmonics_noise": {
        "nominal_v": 230, "frequency": 50, "samples_per_cycle": 32,
        "v_harmonics": [[3, 0.03, 0.0], [5, 0.035, 0.5], [7, 0.02, 1.0], [11, 0.01, 0.0]],
        "i_harmonics": [[3, 0.7, 0.0], [5, 0.45, 0.0], [7, 0.25, 0.0], [9, 0.12, 0.0],
                        [11, 0.06, 0.0], [13, 0.04, 0.0], [15, 0.02, 0.0]],
        "noise_v": 2.0, "noise_i": 0.2,
        "loads": [{"p_w": 1200, "pf": 0.97, "lagging": True}],
    },
    "60hz_64spc_harmonic_groups": {  # IEC 61000-4-7 groups and subgroups to order 31
        "nominal_v": 120, "frequency": 60, "samples_per_cycle": 64,
        "v_harmonics": [[3, 0.03, 0.0], [5, 0.035, 0.5]],
        "i_harmonics": [[3, 0.7, 0.0], [5, 0.45, 0.0], [13, 0.04, 0.0]],
        "noise_v": 0.5, "noise_i": 0.05,
        "loads": [{"p_w": 1200, "pf": 0.97, "lagging": True}],
        "config": {"harmonic_groups": True},
    },
}


@pytest.fixture(scope="module")
def results():
    cases = [{"name": name, "cycles": CYCLES, "warmup_s": 3, "scenario": sc}
             for name, sc in SCENARIOS.items()]
    out = runner.run("micropython", DRIVER, stdin=json.dumps(cases).encode())
    return {r["name"]: r for r in runner.records(out)}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_steady_state_metering_allocates_nothing(results, name):
    r = results[name]
    assert r["cycles"] == CYCLES
    assert r["readings"] >= CYCLES // 60 - 1  # reading closes were part of the span
    assert r["events"] == 0 and r["forced"] == 0  # steady state: no events, no interruptions
    assert r["reading"]["vrms"] == pytest.approx(SCENARIOS[name]["nominal_v"], rel=0.01)
    assert r["bytes"] == 0, "%d bytes allocated over %d cycles" % (r["bytes"], CYCLES)


def test_reporter_take_allocation_is_per_interval_only(results):
    for name, r in sorted(results.items()):
        print("%s: Reporter.take() allocated %d bytes (once per reading)"
              % (name, r["take_bytes"]))
        assert r["reading"]["type"] == "reading"
