"""The RP2040 driver for an external MCP3208 (boards/rp2_mcp3208.py) on fake hardware, under
all three interpreters: the PIO program's state machine and pins, its exact clock divider
and the sample rate it gives, the command words (the MCP3208 datasheet's single-ended
three-byte transaction) fed from a read-ring table by two chained DMA channels, the data
moved into the ping-pong ring by two more, each channel's instant in the frame, gap-free
reads into one buffer per channel without allocation, the wirings it can take, refusals."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "rp2_mcp3208_checks.py"
FAKES = runner.ROOT / "host_tests" / "fakes"
SYS_CLOCK = 125_000_000
CYCLES = 125   # the PIO program's cycles per conversion (5 set-up + 24 bits x 5)


def datasheet_word(ch):
    """MCP3208 datasheet, 'Using the MCP3204/3208 with microcontroller SPI ports': byte 0 is
    0000 0 start(1) SGL(1) D2, byte 1 is D1 D0 then don't-cares; left-aligned in 32 bits."""
    b0 = 0b110 | (ch >> 2)
    b1 = (ch & 3) << 6
    return (b0 << 24) | (b1 << 16)


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    res = json.loads(runner.run(request.param, SCRIPT, str(runner.ROOT), extra=[FAKES]))
    res["interpreter"] = request.param
    return res


def test_state_machine_and_rate(out):
    a = out["a"]
    assert a["program"] == "mcp3208"
    assert a["sm_pins"] == {"set_base": 5, "sideset_base": 2, "out_base": 3, "in_base": 4}
    # 3200 Hz x 8 conversions x 125 cycles = 3.2 MHz: divider 125 MHz / 3.2 MHz = 39 + 16/256
    assert a["clkdiv"] == (39 << 16) | (16 << 8)
    assert a["rate"] == pytest.approx(3200, rel=1e-9)
    num, den = a["ratio"]
    assert num * 10**9 // den == 3200 * 10**9
    period_us = 1e6 * 39.0625 * CYCLES / SYS_CLOCK
    assert a["offsets_us"] == pytest.approx([k * period_us for k in range(7)], rel=1e-6)
    assert a["delay_us"] == pytest.approx(3 * period_us, rel=1e-6)   # Ia after Va
    b = out["b"]
    assert b["frame"] == 4 and b["rate"] == pytest.approx(4000, rel=1e-3)


def test_commands_follow_the_frame(out):
    a = out["a"]
    assert a["channels"] == 7 and a["nv"] == 3 and a["frame"] == 8
    frame = [datasheet_word(ch) for ch in range(7)] + [datasheet_word(0)]  # padded with Va
    assert a["commands"] == frame + frame
    assert a["sent"] % (8 * 128) == 0 and a["sent"] >= 8 * a["count"]
    assert out["b"]["commands"] == [datasheet_word(c) for c in (7, 5, 0, 7)]


def test_dma_channels(out):
    a = out["a"]
    for c in a["cmd_ctrl"]:      # 32-bit words from a 32-byte read ring into the TX FIFO
        assert (c["size"], c["inc_read"], c["inc_write"], c["ring_sel"], c["ring_size"],
                c["treq_sel"], c["irq_quiet"]) == (2, 1, 0, 0, 5, 0, 1)
    for c in a["rx_ctrl"]:       # halfwords from the RX FIFO into the write ring, interrupts
        assert (c["size"], c["inc_read"], c["inc_write"], c["ring_sel"], c["treq_sel"],
                c["irq_quiet"]) == (1, 0, 1, 1, 4, 0)
        assert 1 << c["ring_size"] == 2 * 8 * 128     # one half: 8 x 128 halfwords
    assert a["cmd_write"] == 0x50200010 and a["rx_read"] == 0x50200020   # PIO0 TXF0, RXF0
    assert a["cmd_count"] == a["rx_count"] == 8 * 128
    ids = a["channel_ids"]
    assert a["chains"] == [ids[1], ids[0], ids[3], ids[2]]   # each pair ping-pongs
    assert out["stopped"] == {"sm": False, "dma": [True, True, True, True]}


def test_reads_are_gap_free_per_channel(out):
    a = out["a"]
    assert a["count"] == 584
    assert a["first"][0] == [0, 1, 2] and a["first"][6] == [1904, 1905, 1906]
    assert a["gap_free"] == [True] * 7


def test_read_allocates_nothing(out):
    assert out["a"]["alloc"] == (None if out["interpreter"] == "cpython" else 0)


def test_wirings_it_takes(out):
    assert out["a"]["fits"] == [7, 6, 7]
    assert "needs 8 ADC channels; this board has 7" in out["a"]["too_many"]


def test_refusals(out):
    r = out["refused"]
    assert "mcp_channels must name 2 to 8" in r["nine"]
    assert "MCP3208 inputs are 0..7, got 8" in r["eight"]
    assert "MCP3208 input 1 is named twice" in r["twice"]
    assert "mcp_nv must leave at least one current channel" in r["nv"]
    assert "needs SCK at 1280 kHz; the MCP3208 allows 1000 kHz" in r["fast"]
    assert "mcp_pins needs cs" in r["pins"]
    assert "mcp_sm must be a PIO0 state machine 0..3" in r["sm"]


def test_chosen_when_boards_json_names_its_inputs(out):
    assert out["chosen"] == "Rp2Mcp3208Board"
    assert out["chosen_without"] == "Rp2PolyBoard"
