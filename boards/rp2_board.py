# Raspberry Pi Pico W / RP2040 board driver: V and I sampled by the ADC in round-robin, paced
# by the ADC's own clock divider and moved by two chained DMA channels into ping-pong
# buffers, imported as `boards.rp2_board`. Wiring: docs/boards.md. The board contract:
# boards/contract.py.
#
# Timing is exact by construction: the ADC runs from the 48 MHz clk_adc, one conversion
# takes 96 cycles, and with DIV set it starts one conversion every 1 + INT + FRAC/256
# cycles, alternating between the V and I inputs (CS.RROBIN, starting at CS.AINSEL = V). So
# each channel is sampled at 48 MHz / (2 * period) and I lags V by exactly one period.
#
# DMA: channels A and B both read the ADC FIFO (16-bit, no read increment) paced by
# DREQ_ADC and each write one half of the ping-pong area (2 * block halfwords: V, I, V, I..)
# through a write ring of exactly that size, so after each transfer the write address is back
# at the start of its half with no CPU help. A chains to B and B to A; each raises an
# interrupt when done (a hard IRQ that only counts halves). read() waits for a completed
# half and de-interleaves it into the caller's arrays, through the RP2040-E11 DNL correction
# table. The CPU must take each half within one half's duration (block / sample_rate s);
# a later read() skips the overwritten halves and counts them in `overruns`.
#
# While the meter runs, nothing else may use the ADC (machine.ADC.read_u16 would change
# AINSEL and break the round-robin). On the Pico W, ADC3 (GP29) is shared with the wireless
# chip's SPI: only ADC0..2 (GP26..28) are allowed.

import array

import machine
import rp2
from uctypes import addressof

from boards.contract import BoardError, load_config, set_rtc

ADC_BASE = 0x4004C000
ADC_CS = ADC_BASE + 0x00
ADC_FCS = ADC_BASE + 0x08
ADC_FIFO = ADC_BASE + 0x0C
ADC_DIV = ADC_BASE + 0x10
CS_EN = 1 << 0
CS_START_MANY = 1 << 3
CS_READY = 1 << 8
CS_AINSEL_SHIFT = 12
CS_RROBIN_SHIFT = 16
FCS_EN = 1 << 0
FCS_DREQ_EN = 1 << 3
FCS_UNDER = 1 << 10
FCS_OVER = 1 << 11
FCS_LEVEL_SHIFT = 16
FCS_THRESH_SHIFT = 24
DREQ_ADC = 36
CONVERSION_CYCLES = 96
ADC_PINS = (26, 27, 28)  # ADC0..ADC2; ADC3 (GP29) is the Pico W's wireless SPI clock / VSYS
PM_PERFORMANCE = 0xA11140  # CYW43 power management off: steady latency, ~+30 mA

# RP2040-E11: the ADC's DNL spikes at codes 512, 1536, 2560 and 3584 (0x200, 0x600, 0xA00,
# 0xE00). Correction averaged over five measured devices by kitanokitsune
# (github.com/kitanokitsune/rp2040adc_correction): from each code listed to the next,
# corrected = code + offset, clamped to 0..4095. The single-code entries are the spike codes.
E11_SEGMENTS = (
    (0, -15), (511, -10), (512, -5), (895, -6), (1407, -7), (1535, -3), (1536, 2),
    (1664, 1), (2047, 0), (2048, -1), (2431, -2), (2559, 2), (2560, 7), (2943, 6),
    (3454, 5), (3583, 10), (3584, 15), (3711, 14), (4022, 13),
)


def e11_table():
    """4096-entry lookup: raw code -> corrected code (array('H'))."""
    lut = array.array("H", [0] * 4096)
    bounds = [s[0] for s in E11_SEGMENTS[1:]] + [4096]
    for (start, offset), end in zip(E11_SEGMENTS, bounds):
        for code in range(start, end):
            v = code + offset
            lut[code] = 0 if v < 0 else 4095 if v > 4095 else v
    return lut


def adc_divider(sample_rate, clock_hz=48000000, channels=2):
    """ADC DIV register for `channels` round-robin inputs each sampled at sample_rate.

    Returns (div_register, real_sample_rate, channel_delay_s, rate_ratio): the conversion
    period is 1 + INT + FRAC/256 clk_adc cycles (at least 96), rounded to the nearest 1/256
    cycle. rate_ratio is the real rate as exact ints (num, den): a board's float32 holds the
    float rate only to about 1e-7, which over days of samples would drift wall time."""
    den = channels * sample_rate
    p256 = (clock_hz * 256 + den // 2) // den
    if p256 < CONVERSION_CYCLES * 256:
        raise BoardError("sample_rate %d Hz x %d channels needs a conversion every %.1f "
                         "cycles; the ADC needs %d" % (sample_rate, channels, p256 / 256,
                                                       CONVERSION_CYCLES))
    int_part = p256 // 256 - 1
    frac = p256 % 256
    if int_part > 0xFFFF:
        raise BoardError("sample_rate %d Hz is below the ADC divider's range" % (sample_rate,))
    num, den = clock_hz * 256, p256 * channels
    return (int_part << 8) | frac, num / den, p256 / (256 * clock_hz), (num, den)


class Rp2Board:
    def __init__(self, config=None, path=None, **overrides):
        c = dict(load_config("rp2", path) if config is None else config)
        c.update(overrides)
        self.config = c
        v, i = c["v_adc"], c["i_adc"]
        for name, ch in (("v_adc", v), ("i_adc", i)):
            if ch not in (0, 1, 2):
                raise BoardError("%s must be ADC 0, 1 or 2 (GP26..28), got %r: ADC3 (GP29) "
                                 "belongs to the Pico W's wireless chip, ADC4 is the "
                                 "temperature sensor" % (name, ch))
        if v == i:
            raise BoardError("v_adc and i_adc are both ADC%d" % (v,))
        self.v_adc = v
        self.i_adc = i
        self.block = h = int(c["block"])
        half_bytes = 4 * h  # V and I halfwords
        ring = 0
        while (1 << ring) < half_bytes:
            ring += 1
        if (1 << ring) != half_bytes or not 3 <= ring <= 15:
            raise BoardError("block must be a power of two from 2 to 8192, got %d" % (h,))
        self.ring_size = ring
        clock = int(c["adc_clock_hz"])
        self.div, self.sample_rate, self.channel_delay_s, self.rate_ratio = adc_divider(
            int(c["sample_rate"]), clock)
        lsb = c["vref"] / 4096
        self.v_gain = lsb * c["v_ratio"]
        self.i_gain = lsb * c["i_ratio"]
        self.v_mid = self.i_mid = c["bias_counts"]
        corr = c["dnl_correction"]
        if corr not in ("e11", "none"):
            raise BoardError("dnl_correction must be 'e11' or 'none'")
        self.lut = e11_table() if corr == "e11" else None
        self.relay = None
        if c.get("relay_pin") is not None:
            self.relay = machine.Pin(c["relay_pin"], machine.Pin.OUT, value=1)

        # Ping-pong area: two halves of 2*h halfwords, each aligned to its own size (the
        # DMA write ring wraps on address bits). Over-allocate by one half and align inside.
        n = 2 * h
        self._raw = raw = array.array("H", [0] * (3 * n))
        self._off = off = ((-addressof(raw)) % half_bytes) // 2
        mv = memoryview(raw)
        self._halves = (mv[off:off + n], mv[off + n:off + 2 * n])
        self._done = 0   # halves completed (DMA interrupts)
        self._taken = 0  # halves handed to read()
        self._pos = h    # pairs of the current half already returned (h: take the next)
        self._base = off
        self.overruns = 0         # halves overwritten before read() took them
        self.fifo_overflows = 0   # ADC FIFO overflowed (DMA starved): samples lost
        self.started = False
        self._irq = self._on_dma  # bound once
        self.dma = None

    # --- set-up ---
    def start(self):
        """Claim the ADC pins and two DMA channels and start sampling. read() calls it."""
        for ch in (self.v_adc, self.i_adc):
            machine.ADC(machine.Pin(ADC_PINS[ch]))  # pad to analogue, ADC block enabled
        m = machine.mem32
        self._prepare_adc(m)
        a = rp2.DMA()
        b = rp2.DMA()
        self.dma = (a, b)
        n = 2 * self.block
        for me, other, half in ((a, b, self._halves[0]), (b, a, self._halves[1])):
            ctrl = me.pack_ctrl(size=1, inc_read=False, inc_write=True,
                                ring_size=self.ring_size, ring_sel=True, treq_sel=DREQ_ADC,
                                chain_to=other.channel, irq_quiet=False)
            me.config(read=ADC_FIFO, write=half, count=n, ctrl=ctrl, trigger=False)
            me.irq(self._irq, hard=True)
        self._done = self._taken = 0
        self._pos = self.block
        a.active(1)  # armed: waits for DREQ
        rrobin = (1 << self.v_adc) | (1 << self.i_adc)
        m[ADC_CS] = (CS_EN | (self.v_adc << CS_AINSEL_SHIFT) | (rrobin << CS_RROBIN_SHIFT)
                     | CS_START_MANY)
        self.started = True

    def _prepare_adc(self, m):
        m[ADC_CS] = CS_EN  # stop any free-running conversions
        m[ADC_FCS] = 0
        while m[ADC_FCS] >> FCS_LEVEL_SHIFT & 0xF:  # drain the FIFO
            m[ADC_FIFO]
        m[ADC_DIV] = self.div
        m[ADC_FCS] = FCS_OVER | FCS_UNDER  # clear stale flags (write 1 to clear)
        m[ADC_FCS] = FCS_EN | FCS_DREQ_EN | (1 << FCS_THRESH_SHIFT)

    def _half_words(self):
        return 2 * self.block

    def stop(self):
        if self.dma is not None:
            machine.mem32[ADC_CS] = CS_EN
            for d in self.dma:
                d.active(0)
                d.close()
            machine.mem32[ADC_FCS] = 0
            self.dma = None
        self.started = False

    # --- interrupt: counts halves, allocates nothing ---
    def _on_dma(self, _dma):
        self._done += 1

    def _next_half(self):
        while self._done == self._taken:
            machine.idle()
        behind = self._done - self._taken
        if behind > 1:  # the DMA overwrote the oldest halves: skip to the newest complete one
            self.overruns += behind - 1
            self._taken = self._done - 1
        fcs = machine.mem32[ADC_FCS]
        if fcs & FCS_OVER:
            self.fifo_overflows += 1
            machine.mem32[ADC_FCS] = fcs  # write-1-to-clear OVER
        k = self._taken
        self._base = self._off + (k & 1) * self._half_words()
        self._taken = k + 1
        self._pos = 0

    def read(self, vbuf, ibuf):
        """Fill vbuf, ibuf (array('H'), equal length) with the next samples; returns the count."""
        if not self.started:
            self.start()
        n = len(vbuf)
        h = self.block
        raw = self._raw
        lut = self.lut
        got = 0
        while got < n:
            if self._pos >= h:
                self._next_half()
            take = n - got
            if take > h - self._pos:
                take = h - self._pos
            j = self._base + 2 * self._pos
            if lut is None:
                for k in range(got, got + take):
                    vbuf[k] = raw[j] & 0xFFF
                    ibuf[k] = raw[j + 1] & 0xFFF
                    j += 2
            else:
                for k in range(got, got + take):
                    vbuf[k] = lut[raw[j] & 0xFFF]
                    ibuf[k] = lut[raw[j + 1] & 0xFFF]
                    j += 2
            self._pos += take
            got += take
        return n

    def available(self):
        """Pairs read() can return now without waiting (poll it from asyncio); starts
        sampling on the first call."""
        if not self.started:
            self.start()
        return (self._done - self._taken) * self.block + self.block - self._pos

    def wifi(self, ssid, password, timeout_ms=20000):
        return connect_wifi(ssid, password, self.config.get("wifi_pm", PM_PERFORMANCE),
                            timeout_ms)

    def set_relay(self, closed):
        if self.relay is not None:
            self.relay.value(1 if closed else 0)

    def set_rtc(self, unix_ms):
        set_rtc(unix_ms)

    def stats(self):
        return {"sample_rate": self.sample_rate, "channel_delay_us": self.channel_delay_s * 1e6,
                "div": self.div, "overruns": self.overruns,
                "fifo_overflows": self.fifo_overflows}


def connect_wifi(ssid, password, pm=PM_PERFORMANCE, timeout_ms=20000):
    """Pico W station with the CYW43 power saving off (pm=0xA11140): the default power-save
    mode adds tens to hundreds of ms of latency and drops long-poll connections."""
    import network
    from mpshim import sleep_ms

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.config(pm=pm)
    wlan.connect(ssid, password)
    waited = 0
    while not wlan.isconnected() and waited < timeout_ms:
        sleep_ms(100)
        waited += 100
    return wlan
