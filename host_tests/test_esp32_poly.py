"""The ESP32 polyphase driver (boards/esp32_poly.py) on fake hardware, under all three
interpreters: up to six ADC1 channels read in a round robin that pairs each voltage with its
current, each channel's instant in the frame, gap-free reads into one buffer per channel
(no allocation), per-channel calibration, and the wirings it refuses with the reason."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "esp32_poly_checks.py"
FAKES = runner.ROOT / "host_tests" / "fakes"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    res = json.loads(runner.run(request.param, SCRIPT, str(runner.ROOT), extra=[FAKES]))
    res["interpreter"] = request.param
    return res


def test_three_phase_round_robin(out):
    b = out["3p4w"]
    assert b["channels"] == 6 and b["nv"] == 3
    assert b["order"] == [0, 3, 1, 4, 2, 5]                       # va ia vb ib vc ic
    assert b["delay_us"] == pytest.approx(25.0, rel=1e-3)          # the fake ADC's read time
    assert b["offsets_us"] == pytest.approx([0, 50, 100, 25, 75, 125], rel=1e-3)
    assert b["rate"] == pytest.approx(3200, rel=1e-6)
    assert b["gains"] == 6 and set(b["cal"]) <= {"slope", "point"}


def test_reads_are_gap_free_per_channel(out):
    b = out["3p4w"]
    assert b["steps"] == [[1]] * 6
    assert b["ahead"] == [((pin - 36) * 100) % 4096 for pin in (36, 39, 32, 33, 34, 35)]


def test_read_allocates_nothing(out):
    if out["interpreter"] == "cpython":
        assert out["3p4w"]["alloc"] is None
    else:
        assert out["3p4w"]["alloc"] == 0


def test_one_voltage_five_circuits(out):
    b = out["1v5ct"]
    assert b["channels"] == 6 and b["order"] == [0, 1, 2, 3, 4, 5]
    assert b["offsets_us"] == pytest.approx([0, 25, 50, 75, 100, 125], rel=1e-3)


def test_refusals(out):
    r = out["refused"]
    assert "ADC2" in r["adc2"]
    assert "7 channels asked; an ESP32 has 6 usable ADC1 pins" in r["seven"]
    assert "GPIO36 is named twice" in r["twice"]
    assert "with 3 voltages give 3 currents, got 2" in r["unpaired"]
    assert "at least one GPIO" in r["none"]


def test_the_board_is_chosen_by_wiring():
    from boards import contract

    sim = contract.make_board("linux", "1vnct")        # a desktop: the simulated board
    assert sim.channels == 2 and sim.nv == 1
    assert contract.POLY_DRIVERS["esp32"] == ("boards.esp32_poly", "Esp32PolyBoard")
    assert contract.POLY_DRIVERS["rp2"] == ("boards.rp2_poly", "Rp2PolyBoard")
