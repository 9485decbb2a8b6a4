# ESP32 board driver for three-phase and multi-circuit meters (firmware/polyphase.py): up
# to six ADC1 channels (an ESP32-WROOM exposes GPIO 32-36 and 39: 1 V + 5 CT, or 3 V + 3 I),
# sampled by the same timer scheme as boards/esp32_board.py (whose start-up measurements,
# buffers and read() bookkeeping this reuses). Config keys (boards.json "esp32" section, or
# overrides): v_pins, i_pins (lists of GPIOs, the wiring's channel order: va vb vc / vab
# vcb / v, then ia ib ic / ia ic / i1..iN), v_ratio and i_ratio for every channel.
#
# The callback reads the channels in a round robin that pairs each element's voltage with
# its current (va ia vb ib vc ic; v i1 i2 ... for one voltage), so an element's V-to-I delay
# is one ADC read; channel_offsets_s gives each channel's instant in the frame (measured ADC
# read time), which polyphase.py corrects per channel. Per-channel gains and bias points
# come from each channel's read_uv() calibration (v_gains, i_gains, v_mids, i_mids).

import array

import machine
from mpshim import ticks_diff, ticks_us

from boards.contract import BoardError, load_config
from boards.esp32_board import ATTENUATIONS, Esp32Board, adc1_channel, uv_gain

MAX_CHANNELS = 6  # ADC1 pins an ESP32-WROOM exposes


def read_order(nv, ni):
    """Board channel numbers (voltages 0..nv-1, currents nv..) in the order the callback
    reads them: each voltage followed by its current(s)."""
    out = []
    if nv == 1:
        return [0] + [1 + j for j in range(ni)]
    for k in range(nv):
        out.append(k)
        out.append(nv + k)
    return out


class Esp32PolyBoard(Esp32Board):
    def __init__(self, config=None, path=None, ticks=None, **overrides):
        c = dict(load_config("esp32", path) if config is None else config)
        c.update(overrides)
        self.config = c
        self._ticks = ticks or ticks_us
        v_pins = list(c.get("v_pins") or [])
        i_pins = list(c.get("i_pins") or [])
        pins = v_pins + i_pins
        if not v_pins or not i_pins:
            raise BoardError("v_pins and i_pins must each name at least one GPIO")
        if len(pins) > MAX_CHANNELS:
            raise BoardError("%d channels asked; an ESP32 has %d usable ADC1 pins"
                             % (len(pins), MAX_CHANNELS))
        if len(v_pins) > 1 and len(v_pins) != len(i_pins):
            raise BoardError("with %d voltages give %d currents, got %d"
                             % (len(v_pins), len(v_pins), len(i_pins)))
        for p in pins:
            adc1_channel(p)
            if pins.count(p) > 1:
                raise BoardError("GPIO%d is named twice" % (p,))
        if c["attenuation"] not in ATTENUATIONS:
            raise BoardError("attenuation must be one of %s" % (", ".join(ATTENUATIONS),))
        self.block = h = int(c["block"])
        if h < 8:
            raise BoardError("block must be at least 8 samples")
        attn = getattr(machine.ADC, "ATTN_" + c["attenuation"].replace(".", "_").upper())
        self.nv = len(v_pins)
        self.channels = len(pins)
        self.order = read_order(self.nv, len(i_pins))
        self.adcs = [self._adc(p, attn) for p in pins]          # board channel order
        self._reads = [self.adcs[ch].read for ch in self.order]  # bound once
        # double buffers per channel, in read order (the callback's loop indexes them)
        self._raws = [array.array("H", [0] * (2 * h)) for _ in pins]
        self._slot = [self.order.index(ch) for ch in range(self.channels)]
        self._th = array.array("i", [0, 0])
        self._w = 0
        self._done = 0
        self._taken = 0
        self._pos = h
        self._base = 0
        self._prev_us = 0
        self._prev_ok = False
        self._period_i = 1
        self._half_us = 0
        self.overruns = 0
        self.lost = 0
        self.timer_hard = False
        self.timer = machine.Timer(c["timer_id"])
        self.relay = None
        if c.get("relay_pin") is not None:
            self.relay = machine.Pin(c["relay_pin"], machine.Pin.OUT, value=1)
        read_s = self._measure_delay(int(c["delay_reads"]))
        self.channel_delay_s = read_s
        self.channel_offsets_s = [self._slot[ch] * read_s for ch in range(self.channels)]
        self._calibrate(int(c["cal_samples"]))
        self._start(self._isr)
        self.sample_rate = self._measure_rate(int(c["period_halves"]))

    def _measure_delay(self, n):
        """One ADC read's time, measured over the round robin."""
        reads = self._reads
        t0 = self._ticks()
        for _ in range(n):
            for r in reads:
                r()
        return ticks_diff(self._ticks(), t0) / (len(reads) * n) * 1e-6

    def _calibrate(self, n):
        c = self.config
        self._cal = [(array.array("H", [0] * n), array.array("i", [0] * n))
                     for _ in range(self.channels)]
        self._cal_n = 0
        self._cal_len = n
        self._start(self._cal_isr)
        while self._cal_n < n:
            machine.idle()
        self.timer.deinit()
        gains, mids, self.cal_sources = [], [], []
        for ch in range(self.channels):
            raw, uv = self._cal[ch]
            per, source = uv_gain(raw, uv, n, c["min_cal_spread"], c["uv_offset"])
            ratio = c["v_ratio"] if ch < self.nv else c["i_ratio"]
            gains.append(per * 1e-6 * ratio)
            mids.append(sum(raw) / n)
            self.cal_sources.append(source)
        self._cal = None
        self.v_gains, self.i_gains = gains[:self.nv], gains[self.nv:]
        self.v_mids, self.i_mids = mids[:self.nv], mids[self.nv:]
        self.v_gain, self.i_gain = self.v_gains[0], self.i_gains[0]
        self.v_mid, self.i_mid = self.v_mids[0], self.i_mids[0]

    def _cal_isr(self, _t):
        k = self._cal_n
        if k < self._cal_len:
            for ch in range(self.channels):
                adc = self.adcs[ch]
                self._cal[ch][0][k] = adc.read()
                self._cal[ch][1][k] = adc.read_uv()
            self._cal_n = k + 1

    # --- the interrupt path: no allocation ---
    def _isr(self, _t):
        w = self._w
        reads = self._reads
        raws = self._raws
        j = 0
        n = self.channels
        while j < n:
            raws[j][w] = reads[j]()
            j += 1
        w += 1
        h = self.block
        if w == h or w == 2 * h:
            self._th[0 if w == h else 1] = self._ticks()
            self._done += 1
            if w == 2 * h:
                w = 0
        self._w = w

    def read(self, bufs):
        """Fill bufs (one array('H') per channel, board order, equal lengths) with the next
        frames; returns the count. Allocates nothing."""
        n = len(bufs[0])
        h = self.block
        raws = self._raws
        slot = self._slot
        got = 0
        while got < n:
            if self._pos >= h:
                self._next_half()
            take = n - got
            if take > h - self._pos:
                take = h - self._pos
            src = self._base + self._pos
            ch = 0
            while ch < self.channels:
                raw = raws[slot[ch]]
                out = bufs[ch]
                k = 0
                while k < take:
                    out[got + k] = raw[src + k]
                    k += 1
                ch += 1
            self._pos += take
            got += take
        return n

    def stats(self):
        return {"sample_rate": self.sample_rate, "channels": self.channels,
                "channel_offsets_us": [x * 1e6 for x in self.channel_offsets_s],
                "timer_hard": self.timer_hard, "overruns": self.overruns, "lost": self.lost,
                "cal": self.cal_sources}
