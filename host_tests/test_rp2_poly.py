"""The RP2040 one-voltage, two-circuit driver (boards/rp2_poly.py) on fake hardware, under all
three interpreters: ADC0..2 and the temperature sensor in round robin from the voltage's
input (a four-conversion frame keeps the DMA ring a power of two), each channel's instant
in the frame, gap-free reads into one buffer per channel without allocation, refusals."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "rp2_poly_checks.py"
FAKES = runner.ROOT / "host_tests" / "fakes"
PERIOD_US = 1e6 / (4 * 3200)   # one conversion at 4 x 3200 conversions a second


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    res = json.loads(runner.run(request.param, SCRIPT, str(runner.ROOT), extra=[FAKES]))
    res["interpreter"] = request.param
    return res


def test_frame_and_offsets(out):
    a = out["a"]
    assert a["channels"] == 3 and a["slot"] == [0, 1, 2]     # ADC0, ADC1, ADC2, then ADC4
    assert a["rate"] == pytest.approx(3200, rel=1e-3)
    assert a["offsets_us"] == pytest.approx([0, PERIOD_US, 2 * PERIOD_US], rel=1e-2)
    assert a["dma_count"] == 4 * 128
    cs = a["cs"]
    assert (cs >> 12) & 7 == 0 and (cs >> 16) & 0x1F == 0b10111   # AINSEL V, RROBIN 0,1,2,4
    b = out["b"]                       # V on ADC2: ADC2, ADC4, ADC0, ADC1
    assert b["slot"] == [0, 2, 3]
    assert b["offsets_us"] == pytest.approx([0, 2 * PERIOD_US, 3 * PERIOD_US], rel=1e-2)


def test_reads_are_gap_free_per_channel(out):
    a = out["a"]
    assert a["count"] == 584
    assert a["first"] == [[0, 1, 2], [1000, 1001, 1002], [2000, 2001, 2002]]
    assert a["gap_free"] == [True, True, True]


def test_read_allocates_nothing(out):
    assert out["a"]["alloc"] == (None if out["interpreter"] == "cpython" else 0)


def test_refusals(out):
    assert "ADC inputs must be 0, 1 or 2" in out["refused"]["adc3"]
    assert "ADC0 is named twice" in out["refused"]["twice"]
