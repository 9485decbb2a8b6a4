# ESP32 board driver: one voltage and one current channel on ADC1, sampled by a timer
# interrupt into a preallocated double buffer, imported as `boards.esp32_board`. Wiring and
# the choices below: docs/boards.md. The board contract: boards/contract.py.
#
# Sampling scheme. machine.Timer(timer_id) runs at sample_rate; its callback reads V then I
# (raw 12-bit counts) into two array('H') double buffers and counts completed halves. The
# callback allocates nothing, so it may run as a hard interrupt where the port accepts
# Timer(hard=True); otherwise (the usual ESP32 case) it is a scheduled "soft" callback. The
# hardware timer keeps the schedule, so the average rate is exact; a soft callback adds
# latency jitter (tens of us, up to ms while viper code, GC or flash writes hold the VM) and,
# if more than the scheduler's queue of callbacks pile up, a tick is lost. read() counts
# lost ticks from the time stamp of each completed half (`lost`) and halves overwritten
# because read() came too late (`overruns`). The alternative, a viper loop timed by
# time.ticks_us, has exact timing but owns the CPU: no Wi-Fi, no asyncio while it runs, and
# samples stop while the metering engine runs, so it cannot be gap-free in this app.
#
# Measured at start-up (the constructor, about 0.5 s): the inter-channel delay (time of one
# ADC read), the read_uv-derived counts->volts gain and the bias of each channel (over whole
# timer-paced cycles), and the real sample period (time stamps of 8 completed halves).

import array

import machine
from mpshim import ticks_diff, ticks_us

from boards.contract import BoardError, load_config, set_rtc

ADC_MAX = 4095
# GPIO -> channel. ADC2 is used by the Wi-Fi driver: its readings fail or are garbage while
# Wi-Fi is on, so a meter must use ADC1.
ADC1_PINS = {36: 0, 37: 1, 38: 2, 39: 3, 32: 4, 33: 5, 34: 6, 35: 7}
ADC2_PINS = {4: 0, 0: 1, 2: 2, 15: 3, 13: 4, 12: 5, 14: 6, 27: 7, 25: 8, 26: 9}
ATTENUATIONS = ("0dB", "2.5dB", "6dB", "11dB")


def adc1_channel(pin):
    """ADC1 channel of GPIO `pin`; ADC2 and non-ADC pins are rejected with the reason."""
    if pin in ADC1_PINS:
        return ADC1_PINS[pin]
    if pin in ADC2_PINS:
        raise BoardError("GPIO%d is ADC2 channel %d: ADC2 cannot be read while Wi-Fi is on; "
                         "use an ADC1 pin (GPIO 32-39)" % (pin, ADC2_PINS[pin]))
    raise BoardError("GPIO%d has no ADC input; use an ADC1 pin (GPIO 32-39)" % (pin,))


def uv_gain(raws, uvs, n, min_spread, uv_offset):
    """Counts -> microvolts slope from n paired (raw count, read_uv) readings.

    With a signal present (spread of raw counts >= min_spread) it is the least-squares slope,
    computed on centred values so single-precision floats keep their accuracy. Without one,
    a single point through the nominal offset of the ADC characteristic:
    (mean uv - uv_offset) / mean raw. Returns (uv_per_count, "slope" | "point")."""
    sr = 0
    su = 0
    lo = ADC_MAX
    hi = 0
    for k in range(n):
        r = raws[k]
        sr += r
        su += uvs[k]
        lo = r if r < lo else lo
        hi = r if r > hi else hi
    mr = sr / n
    mu = su / n
    if hi - lo >= min_spread:
        sxy = 0.0
        sxx = 0.0
        for k in range(n):
            dr = raws[k] - mr
            sxy += dr * ((uvs[k] - mu) * 0.001)  # mV keeps the products small
            sxx += dr * dr
        return sxy / sxx * 1000.0, "slope"
    if mr <= 0:
        raise BoardError("ADC reads 0: check the bias network")
    return (mu - uv_offset) / mr, "point"


class Esp32Board:
    def __init__(self, config=None, path=None, ticks=None, **overrides):
        c = dict(load_config("esp32", path) if config is None else config)
        c.update(overrides)
        self.config = c
        self._ticks = ticks or ticks_us
        self.v_channel = adc1_channel(c["v_pin"])
        self.i_channel = adc1_channel(c["i_pin"])
        if c["v_pin"] == c["i_pin"]:
            raise BoardError("v_pin and i_pin are both GPIO%d" % (c["v_pin"],))
        if c["attenuation"] not in ATTENUATIONS:
            raise BoardError("attenuation must be one of %s" % (", ".join(ATTENUATIONS),))
        self.block = h = int(c["block"])
        if h < 8:
            raise BoardError("block must be at least 8 samples")
        attn = getattr(machine.ADC, "ATTN_" + c["attenuation"].replace(".", "_").upper())
        self.adc_v = self._adc(c["v_pin"], attn)
        self.adc_i = self._adc(c["i_pin"], attn)
        self._rv = self.adc_v.read  # bound once: the interrupt path allocates nothing
        self._ri = self.adc_i.read
        # double buffers, half = block samples; the callback writes, read() copies out
        self._vraw = array.array("H", [0] * (2 * h))
        self._iraw = array.array("H", [0] * (2 * h))
        self._th = array.array("i", [0, 0])  # ticks_us when each half completed
        self._w = 0
        self._done = 0    # halves completed by the callback
        self._taken = 0   # halves handed to read()
        self._pos = h     # samples of the current half already returned (h: take the next)
        self._base = 0
        self._prev_us = 0
        self._prev_ok = False
        self._period_i = 1
        self._half_us = 0
        self.overruns = 0  # halves overwritten before read() took them
        self.lost = 0      # timer ticks that produced no sample (soft-callback overflow)
        self.timer_hard = False
        self.timer = machine.Timer(c["timer_id"])
        self.relay = None
        if c.get("relay_pin") is not None:
            self.relay = machine.Pin(c["relay_pin"], machine.Pin.OUT, value=1)

        self.channel_delay_s = self._measure_delay(int(c["delay_reads"]))
        self._calibrate(int(c["cal_samples"]))
        self._start(self._isr)
        self.sample_rate = self._measure_rate(int(c["period_halves"]))

    @staticmethod
    def _adc(pin, attn):
        adc = machine.ADC(machine.Pin(pin))
        adc.atten(attn)
        if hasattr(adc, "width"):
            adc.width(machine.ADC.WIDTH_12BIT)
        return adc

    # --- start-up measurements ---
    def _measure_delay(self, n):
        """Time between the V and the I read in the callback: one ADC read, measured."""
        rv = self._rv
        ri = self._ri
        t0 = self._ticks()
        for _ in range(n):
            rv()
            ri()
        return ticks_diff(self._ticks(), t0) / (2 * n) * 1e-6

    def _calibrate(self, n):
        """read_uv() against raw counts, both channels, paced by the timer over whole cycles
        (n samples at sample_rate). Sets v_gain, i_gain (via the counts->volts gain) and the
        bias points v_mid, i_mid (mean raw counts)."""
        c = self.config
        self._cal = [array.array("H", [0] * n), array.array("i", [0] * n),
                     array.array("H", [0] * n), array.array("i", [0] * n)]
        self._cal_n = 0
        self._cal_len = n
        self._start(self._cal_isr)
        while self._cal_n < n:
            machine.idle()
        self.timer.deinit()
        vr, vu, ir, iu = self._cal
        self._cal = None
        spread = c["min_cal_spread"]
        self.v_uv_per_count, self.v_cal_source = uv_gain(vr, vu, n, spread, c["uv_offset"])
        self.i_uv_per_count, self.i_cal_source = uv_gain(ir, iu, n, spread, c["uv_offset"])
        self.v_gain = self.v_uv_per_count * 1e-6 * c["v_ratio"]
        self.i_gain = self.i_uv_per_count * 1e-6 * c["i_ratio"]
        self.v_mid = sum(vr) / n
        self.i_mid = sum(ir) / n

    def _cal_isr(self, _t):
        k = self._cal_n
        if k < self._cal_len:
            cal = self._cal
            cal[0][k] = self.adc_v.read()
            cal[1][k] = self.adc_v.read_uv()
            cal[2][k] = self.adc_i.read()
            cal[3][k] = self.adc_i.read_uv()
            self._cal_n = k + 1

    def _start(self, callback):
        freq = int(self.config["sample_rate"])
        if self.config["timer_hard"]:
            try:
                self.timer.init(mode=machine.Timer.PERIODIC, freq=freq, callback=callback,
                                hard=True)
                self.timer_hard = True
                return
            except (TypeError, ValueError):  # this port's Timer has no hard interrupts
                pass
        self.timer.init(mode=machine.Timer.PERIODIC, freq=freq, callback=callback)
        self.timer_hard = False

    def _measure_rate(self, halves):
        """Real sample rate from the time stamps of completed halves."""
        while self._done < 1:
            machine.idle()
        first = self._done
        t_first = self._th[(first - 1) & 1]
        while self._done < first + halves:
            machine.idle()
        last = self._done
        t_last = self._th[(last - 1) & 1]
        took_us = ticks_diff(t_last, t_first)
        # the rate as exact ints too: the app's wall time is made from it (float32 drifts)
        self.rate_ratio = ((last - first) * self.block * 1000000, took_us)
        rate = (last - first) * self.block * 1e6 / took_us
        period_us = 1e6 / rate
        self._period_i = int(period_us + 0.5)  # integers: the per-block check allocates nothing
        self._half_us = int(self.block * period_us + 0.5)
        self._taken = last  # read() starts with the next half
        self._prev_us = t_last
        self._prev_ok = True
        self.overruns = 0
        return rate

    # --- the interrupt path: no allocation ---
    def _isr(self, _t):
        w = self._w
        self._vraw[w] = self._rv()
        self._iraw[w] = self._ri()
        w += 1
        h = self.block
        if w == h or w == 2 * h:
            self._th[0 if w == h else 1] = self._ticks()
            self._done += 1
            if w == 2 * h:
                w = 0
        self._w = w

    def _next_half(self):
        while self._done == self._taken:
            machine.idle()
        behind = self._done - self._taken
        if behind > 1:  # the oldest halves were overwritten: skip to the newest complete one
            self.overruns += behind - 1
            self._taken = self._done - 1
            self._prev_ok = False
        k = self._taken
        t = self._th[k & 1]
        if self._prev_ok:
            late = ticks_diff(t, self._prev_us) - self._half_us
            p = self._period_i
            if 2 * late > p:
                self.lost += (late + p // 2) // p
        self._prev_us = t
        self._prev_ok = True
        self._base = (k & 1) * self.block
        self._taken = k + 1
        self._pos = 0

    def read(self, vbuf, ibuf):
        """Fill vbuf, ibuf (array('H'), equal length) with the next samples; returns the count."""
        n = len(vbuf)
        h = self.block
        vr = self._vraw
        ir = self._iraw
        got = 0
        while got < n:
            if self._pos >= h:
                self._next_half()
            take = n - got
            if take > h - self._pos:
                take = h - self._pos
            src = self._base + self._pos
            for k in range(take):
                vbuf[got + k] = vr[src + k]
                ibuf[got + k] = ir[src + k]
            self._pos += take
            got += take
        return n

    def available(self):
        """Samples read() can return now without waiting (poll it from asyncio)."""
        return (self._done - self._taken) * self.block + self.block - self._pos

    def set_relay(self, closed):
        if self.relay is not None:
            self.relay.value(1 if closed else 0)

    def set_rtc(self, unix_ms):
        set_rtc(unix_ms)

    def stats(self):
        return {"sample_rate": self.sample_rate, "channel_delay_us": self.channel_delay_s * 1e6,
                "timer_hard": self.timer_hard, "overruns": self.overruns, "lost": self.lost,
                "v_uv_per_count": self.v_uv_per_count, "i_uv_per_count": self.i_uv_per_count,
                "cal": [self.v_cal_source, self.i_cal_source]}

    def deinit(self):
        self.timer.deinit()

    def image_writer(self):
        """Whole-image firmware updates (docs/ota.md); OSError on builds without OTA."""
        from boards.esp32_ota import ImageWriter

        return ImageWriter()


def connect_wifi(ssid, password, timeout_ms=20000):
    """Station mode with modem power saving off (lower, steadier latency for the back channel)."""
    import network
    from mpshim import sleep_ms

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if hasattr(network.WLAN, "PM_NONE"):
        wlan.config(pm=network.WLAN.PM_NONE)
    wlan.connect(ssid, password)
    waited = 0
    while not wlan.isconnected() and waited < timeout_ms:
        sleep_ms(100)
        waited += 100
    return wlan
