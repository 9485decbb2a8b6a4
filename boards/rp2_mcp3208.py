# Raspberry Pi Pico W / RP2040 with an external MCP3208 (8 channels, 12 bits, SPI) for the
# polyphase wirings its three ADC inputs cannot take (3P4W with or without a neutral CT,
# 3P3W, one voltage with up to 7 CT circuits: firmware/polyphase.py). Per-sample SPI reads
# from MicroPython would not keep up, so a PIO state machine (boards/rp2_mcp3208_pio.py) runs
# the SPI transactions at a fixed number of cycles each, paced by its clock divider, and
# four DMA channels move the data without the CPU:
#   - two command channels, chained to each other, copy the frame's command words (one per
#     conversion, the wiring's channels in order, padded to a power of two by converting
#     the first again) from a table into the state machine's TX FIFO, through a read ring
#     over the table, as the FIFO asks (its DREQ);
#   - two data channels, chained to each other, copy the RX FIFO into the ping-pong halves
#     through a write ring, as boards/rp2_board.py does with the RP2040's ADC; each half
#     raises an interrupt (a counter), and read() de-interleaves the frames
#     (boards/rp2_poly.py's reader).
# Each channel's instant in the frame is its slot times the conversion period
# (channel_offsets_s), corrected by the metering. The conversion rate is exact: the divider
# is written to the state machine's CLKDIV register in 1/256 steps, and rate_ratio gives
# the sample rate as exact ints.
#
# Config (boards.json "rp2" section or overrides): mcp_channels (the MCP3208 inputs, in the
# wiring's channel order: voltages first), mcp_nv (how many of them are voltages), mcp_pins
# {sck, mosi, miso, cs} (GPIO numbers), mcp_sm (state machine 0..3 of PIO0), mcp_vref (V),
# sys_clock_hz, mcp_max_sck_hz (1 MHz: the MCP3208 at 2.7 V; 2 MHz at 5 V).

import array

import machine
import rp2

from boards import rp2_mcp3208_pio as mcp3208_pio
from boards.contract import BoardError, load_config
from boards.rp2_board import Rp2Board
from boards.rp2_poly import Rp2PolyBoard

PIO0_BASE = 0x50200000
TXF0 = PIO0_BASE + 0x010
RXF0 = PIO0_BASE + 0x020
SM0_CLKDIV = PIO0_BASE + 0x0C8
SM_STRIDE = 0x18
DREQ_PIO0_TX0 = 0
DREQ_PIO0_RX0 = 4


def command(ch):
    """The 32-bit TX word for a single-ended conversion of input ch (0..7)."""
    return ((1 << 18) | (1 << 17) | (ch << 14)) << 8


def sm_divider(sample_rate, frame, clock_hz, max_sck_hz):
    """(CLKDIV register, real sample rate, conversion period s, rate_ratio (num, den)) for
    `frame` conversions per sample at sample_rate; BoardError if SCK would be too fast."""
    per_s = frame * sample_rate * mcp3208_pio.CYCLES       # state-machine cycles a second
    p256 = (clock_hz * 256 + per_s // 2) // per_s          # divider in 1/256 cycles
    sck = clock_hz * 256 / p256 / mcp3208_pio.BIT_CYCLES
    if sck > max_sck_hz:
        raise BoardError("sample_rate %d Hz x %d conversions a frame needs SCK at %.0f kHz; "
                         "the MCP3208 allows %.0f kHz (mcp_max_sck_hz)"
                         % (sample_rate, frame, sck / 1000, max_sck_hz / 1000))
    if p256 < 256 or p256 >> 8 > 0xFFFF:
        raise BoardError("sample_rate %d Hz is outside the PIO divider's range" % (sample_rate,))
    num, den = clock_hz * 256, p256 * mcp3208_pio.CYCLES * frame
    period = p256 * mcp3208_pio.CYCLES / (256 * clock_hz)
    return ((p256 >> 8) << 16) | ((p256 & 0xFF) << 8), num / den, period, (num, den)


class Rp2Mcp3208Board(Rp2PolyBoard):
    def __init__(self, config=None, path=None, **overrides):
        c = dict(load_config("rp2", path) if config is None else config)
        c.update(overrides)
        chans = list(c.get("mcp_channels") or [])
        if not 2 <= len(chans) <= 8:
            raise BoardError("mcp_channels must name 2 to 8 MCP3208 inputs, got %r" % (chans,))
        for ch in chans:
            if ch not in range(8):
                raise BoardError("MCP3208 inputs are 0..7, got %r" % (ch,))
            if chans.count(ch) > 1:
                raise BoardError("MCP3208 input %d is named twice" % (ch,))
        nv = int(c.get("mcp_nv", 1))
        if not 1 <= nv < len(chans):
            raise BoardError("mcp_nv must leave at least one current channel, got %r" % (nv,))
        sm = int(c.get("mcp_sm", 0))
        if sm not in range(4):
            raise BoardError("mcp_sm must be a PIO0 state machine 0..3, got %r" % (sm,))
        pins = c.get("mcp_pins") or {}
        for name in ("sck", "mosi", "miso", "cs"):
            if not isinstance(pins.get(name), int) or not 0 <= pins[name] <= 22:
                raise BoardError("mcp_pins needs %s as a free GPIO 0..22, got %r"
                                 % (name, pins.get(name)))
        # the parent's gains (vref: the MCP3208's reference), relay and ping-pong area; no
        # RP2040 ADC correction table (the E11 erratum is the RP2040 ADC's)
        Rp2Board.__init__(self, dict(c, vref=c.get("mcp_vref", c["vref"]),
                                     dnl_correction="none"), None, v_adc=0, i_adc=1)
        self.inputs = chans
        self.nv = nv
        self.channels = len(chans)
        frame = 4
        while frame < len(chans):
            frame *= 2
        self.frame = frame
        self.slot = list(range(len(chans)))
        self.sm_id = sm
        self.pins = pins
        self.clkdiv, self.sample_rate, period_s, self.rate_ratio = sm_divider(
            int(c["sample_rate"]), frame, int(c.get("sys_clock_hz", 125000000)),
            int(c.get("mcp_max_sck_hz", 1000000)))
        self.channel_offsets_s = [s * period_s for s in self.slot]
        self.channel_delay_s = self.channel_offsets_s[nv]
        self._area(frame)
        # the command table, aligned to its size (the command DMA's read ring)
        from uctypes import addressof

        words = [command(chans[k]) if k < len(chans) else command(chans[0])
                 for k in range(frame)]
        self._cmd_raw = raw = array.array("I", [0] * (2 * frame))
        off = ((-addressof(raw)) % (4 * frame)) // 4
        for k in range(frame):
            raw[off + k] = words[k]
        self.commands = memoryview(raw)[off:off + frame]
        self.cmd_ring = 2 + {4: 2, 8: 3}[frame]   # log2 of the table's bytes
        self.sm = None

    def start(self):
        """Claim the pins, the state machine and four DMA channels; start converting."""
        p = self.pins
        cs = machine.Pin(p["cs"], machine.Pin.OUT, value=1)
        sck = machine.Pin(p["sck"], machine.Pin.OUT, value=0)
        mosi = machine.Pin(p["mosi"], machine.Pin.OUT, value=0)
        miso = machine.Pin(p["miso"], machine.Pin.IN)
        sm = rp2.StateMachine(self.sm_id, mcp3208_pio.mcp3208, freq=2000000, set_base=cs,
                              sideset_base=sck, out_base=mosi, in_base=miso)
        self.sm = sm
        # the exact divider (StateMachine's freq= goes through a float)
        machine.mem32[SM0_CLKDIV + SM_STRIDE * self.sm_id] = self.clkdiv
        n = self.frame * self.block
        cmd = (rp2.DMA(), rp2.DMA())
        data = (rp2.DMA(), rp2.DMA())
        self.dma = cmd + data
        for me, other in ((cmd[0], cmd[1]), (cmd[1], cmd[0])):
            ctrl = me.pack_ctrl(size=2, inc_read=True, inc_write=False,
                                ring_size=self.cmd_ring, ring_sel=False,
                                treq_sel=DREQ_PIO0_TX0 + self.sm_id, chain_to=other.channel,
                                irq_quiet=True)
            me.config(read=self.commands, write=TXF0 + 4 * self.sm_id, count=n, ctrl=ctrl,
                      trigger=False)
        for me, other, half in ((data[0], data[1], self._halves[0]),
                                (data[1], data[0], self._halves[1])):
            ctrl = me.pack_ctrl(size=1, inc_read=False, inc_write=True,
                                ring_size=self.ring_size, ring_sel=True,
                                treq_sel=DREQ_PIO0_RX0 + self.sm_id, chain_to=other.channel,
                                irq_quiet=False)
            me.config(read=RXF0 + 4 * self.sm_id, write=half, count=n, ctrl=ctrl,
                      trigger=False)
            me.irq(self._irq, hard=True)
        self._done = self._taken = 0
        self._pos = self.block
        data[0].active(1)   # armed: wait for their DREQs
        cmd[0].active(1)
        sm.active(1)
        self.started = True

    def stop(self):
        if self.sm is not None:
            self.sm.active(0)
            self.sm = None
        if self.dma is not None:
            for d in self.dma:
                d.active(0)
                d.close()
            self.dma = None
        self.started = False
