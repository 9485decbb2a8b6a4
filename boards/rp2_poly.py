# Raspberry Pi Pico W / RP2040 driver for one voltage and two CT circuits (firmware/polyphase.py
# wiring 1vnct, circuits 2): the ADC's three free inputs ADC0..2 (GP26..28). It reuses
# boards/rp2_board.py's scheme: the ADC paced by its own divider in round robin, two
# chained DMA channels writing ping-pong halves through a write ring. A ring's size is a
# power of two, so the round robin also converts the temperature sensor (ADC4, not read):
# four conversions a frame, in the RP2040's RROBIN order (ascending, wrapping) from AINSEL =
# the voltage's input, so the voltage is first. Each channel's instant in the frame is its
# slot times the conversion period (channel_offsets_s), corrected by the metering. More
# channels (3P4W) need an external ADC: boards/rp2_mcp3208.py (an MCP3208 paced by PIO and
# DMA), which reuses this frame reader.
#
# Config (boards.json "rp2" section or overrides): v_adc, i_adcs (a list; default [i_adc]).

import machine

from boards.contract import BoardError, load_config
from boards.rp2_board import (
    ADC_CS,
    ADC_FIFO,
    CS_AINSEL_SHIFT,
    CS_EN,
    CS_RROBIN_SHIFT,
    CS_START_MANY,
    DREQ_ADC,
    Rp2Board,
    adc_divider,
)

TEMP_ADC = 4
FRAME = 4  # conversions a frame: a power of two for the DMA ring


class Rp2PolyBoard(Rp2Board):
    def __init__(self, config=None, path=None, **overrides):
        c = dict(load_config("rp2", path) if config is None else config)
        c.update(overrides)
        i_adcs = list(c.get("i_adcs") or [c["i_adc"]])
        inputs = [c["v_adc"]] + i_adcs
        for ch in inputs:
            if ch not in (0, 1, 2):
                raise BoardError("ADC inputs must be 0, 1 or 2 (GP26..28), got %r: ADC3 (GP29) "
                                 "belongs to the Pico W's wireless chip" % (ch,))
            if inputs.count(ch) > 1:
                raise BoardError("ADC%d is named twice" % (ch,))
        # the parent sets up gains, the relay, the E11 table and the ping-pong area for two
        # channels; the area is then made again for a four-conversion frame
        Rp2Board.__init__(self, c, None, v_adc=inputs[0], i_adc=inputs[1])
        self.inputs = inputs
        self.nv = 1
        self.channels = len(inputs)
        order = sorted(inputs + [TEMP_ADC])
        k = order.index(inputs[0])
        order = order[k:] + order[:k]                      # from AINSEL = the voltage
        self.slot = [order.index(ch) for ch in inputs]     # board channel -> frame slot
        self.div, self.sample_rate, period_s, self.rate_ratio = adc_divider(
            int(c["sample_rate"]), int(c["adc_clock_hz"]), FRAME)
        self.channel_offsets_s = [s * period_s for s in self.slot]
        self.channel_delay_s = self.channel_offsets_s[1]
        self.frame = FRAME
        self._area(FRAME)

    def _area(self, frame):
        import array

        from uctypes import addressof

        h = self.block
        half_bytes = 2 * frame * h
        ring = 0
        while (1 << ring) < half_bytes:
            ring += 1
        if (1 << ring) != half_bytes or not 3 <= ring <= 15:
            raise BoardError("block must be a power of two up to 4096, got %d" % (h,))
        self.ring_size = ring
        n = frame * h
        self._raw = raw = array.array("H", [0] * (3 * n))
        self._off = off = ((-addressof(raw)) % half_bytes) // 2
        mv = memoryview(raw)
        self._halves = (mv[off:off + n], mv[off + n:off + 2 * n])
        self._base = off

    def start(self):
        """As Rp2Board.start, for the four-conversion frame."""
        import rp2

        for ch in self.inputs:
            machine.ADC(machine.Pin(26 + ch))
        m = machine.mem32
        self._prepare_adc(m)
        a = rp2.DMA()
        b = rp2.DMA()
        self.dma = (a, b)
        n = self.frame * self.block
        for me, other, half in ((a, b, self._halves[0]), (b, a, self._halves[1])):
            ctrl = me.pack_ctrl(size=1, inc_read=False, inc_write=True,
                                ring_size=self.ring_size, ring_sel=True, treq_sel=DREQ_ADC,
                                chain_to=other.channel, irq_quiet=False)
            me.config(read=ADC_FIFO, write=half, count=n, ctrl=ctrl, trigger=False)
            me.irq(self._irq, hard=True)
        self._done = self._taken = 0
        self._pos = self.block
        a.active(1)
        rrobin = (1 << TEMP_ADC)
        for ch in self.inputs:
            rrobin |= 1 << ch
        m[ADC_CS] = (CS_EN | (self.inputs[0] << CS_AINSEL_SHIFT) | (rrobin << CS_RROBIN_SHIFT)
                     | CS_START_MANY)
        self.started = True

    def _half_words(self):
        return self.frame * self.block

    def read(self, bufs):
        """Fill bufs (one array('H') per channel: v, i1, i2) with the next frames; returns
        the count. Allocates nothing."""
        if not self.started:
            self.start()
        n = len(bufs[0])
        h = self.block
        raw = self._raw
        lut = self.lut
        slot = self.slot
        frame = self.frame
        got = 0
        while got < n:
            if self._pos >= h:
                self._next_half()
            take = n - got
            if take > h - self._pos:
                take = h - self._pos
            start = self._base + frame * self._pos
            ch = 0
            while ch < self.channels:
                out = bufs[ch]
                j = start + slot[ch]
                k = got
                while k < got + take:
                    x = raw[j] & 0xFFF
                    out[k] = x if lut is None else lut[x]
                    j += frame
                    k += 1
                ch += 1
            self._pos += take
            got += take
        return n
