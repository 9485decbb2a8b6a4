# The metering engine: continuous, gap-free, integer-only in the per-sample and per-cycle paths.
#
# feed() hands sample blocks to the kernel, which stops at every half-cycle boundary.
# Per half cycle (small ints only, no heap): Urms(1/2) for events, energy registers,
# and the sums of the 10/12-cycle window and the reading window (wide ints).
# When a reading window ends it is snapshotted; reading.py turns it into floats.

import array
import math

import kernel as K
import wide
from energy import Registers
from pq import EventDetector

F = K.FIELDS
# Extra per-reading ints (array('i')), snapshotted with the sums.
X_CYCLES = 0       # whole cycles between FIRST and LAST crossing
X_FIRST_K = 1      # first rising crossing: position, sample before, sample after
X_FIRST_A = 2
X_FIRST_B = 3
X_LAST_K = 4
X_LAST_A = 5
X_LAST_B = 6
X_HAVE_FIRST = 7
X_FORCED = 8       # half cycles closed without a zero crossing
X_WINDOWS = 9      # 10/12-cycle windows in this reading
X_VMIN = 10        # min/max over those windows, as mean squares in counts^2 (P in counts^2)
X_VMAX = 11
X_IMIN = 12
X_IMAX = 13
X_PMIN = 14
X_PMAX = 15
X_SAMPLES = 16     # samples in the reading window
X_CLOCK_HI = 17    # meter clock at the end of the window (see Meter.now)
X_CLOCK_LO = 18
X_SIZE = 19


class Meter:
    def __init__(self, config, board):
        """config: validated dict (config.DEFAULTS keys). board: object with sample_rate (Hz),
        channel_delay_s, v_gain (V/count), i_gain (A/count), v_mid, i_mid (counts)."""
        self.config = config
        self.ts = 1.0 / board.sample_rate
        self.v_gain = board.v_gain * config["v_cal"]
        self.i_gain = board.i_gain * config["i_cal"]
        nominal_f = config["frequency"]
        spc = board.sample_rate / nominal_f
        if not 32 <= spc <= 2 * K.MAX_HALF_SAMPLES * 2 / 3:
            raise ValueError("sample rate %.0f Hz gives %.1f samples per cycle at %s Hz; "
                             "need 32..128" % (board.sample_rate, spc, nominal_f))
        self.st = array.array("i", [0] * K.SLOTS)
        st = self.st
        st[K.VOFF] = int(board.v_mid)
        st[K.IOFF] = int(board.i_mid)
        st[K.MIN_HALF] = int(spc / 4)
        st[K.MAX_HALF] = min(K.MAX_HALF_SAMPLES, int(spc * 0.75))
        peak = config["nominal_v"] * 1.41421356 / self.v_gain
        st[K.HYST] = max(2, int(peak * 0.05))
        self.set_phase(nominal_f, board.channel_delay_s)
        self.halves_per_window = 20 if nominal_f == 50 else 24
        self.interval_samples = int(config["interval_s"] * board.sample_rate)
        joules_per_unit = self.v_gain * self.i_gain * self.ts
        self.registers = Registers(int(3.6 / joules_per_unit + 0.5))
        self.events = []
        self.on_event = None
        self.pq = EventDetector(config["nominal_v"], self.v_gain, self.ts, nominal_f,
                                config["dip_pct"], config["swell_pct"],
                                config["interruption_pct"], config["hysteresis_pct"],
                                clock=self, notify=self._event)
        self.sums_reading = array.array("i", [0] * (2 * F))
        self.sums_window = array.array("i", [0] * (2 * F))
        self.last_window = array.array("i", [0] * (2 * F))
        self.ext = array.array("i", [0] * X_SIZE)
        self.ready_sums = array.array("i", [0] * (2 * F))
        self.ready_ext = array.array("i", [0] * X_SIZE)
        self.ready = False
        self.readings_overwritten = 0
        self.half_n = 0        # previous half cycle, for Urms(1/2)
        self.half_svv = 0
        self.halves = 0        # half cycles in the current 10/12-cycle window
        self.clock_hi = 0      # samples since start = clock_hi * 2**20 + clock_lo
        self.clock_lo = 0
        self.urms_half_msq = 0  # latest Urms(1/2) mean square (counts^2)

    def set_phase(self, frequency, channel_delay_s):
        """Coefficients that move v to the instant i[n-1] was read, exact for the fundamental."""
        w = 2 * math.pi * frequency
        t = self.ts
        tau = t - channel_delay_s + self.config["phase_cal_deg"] / 360.0 / frequency
        a = math.sin(w * (t - tau)) / math.sin(w * t)
        b = math.sin(w * tau) / math.sin(w * t)
        self.st[K.COEF_A] = int(a * (1 << K.COEF_BITS) + 0.5)
        self.st[K.COEF_B] = int(b * (1 << K.COEF_BITS) + 0.5)

    def now(self):
        """Samples since start (a Python int; may allocate, so only used on events)."""
        return self.clock_hi * wide.LOW + self.clock_lo

    def feed(self, vbuf, ibuf, n):
        """Consume n sample pairs (array('H') of ADC counts). Allocates nothing."""
        k = 0
        st = self.st
        while k < n:
            k = K.run(st, vbuf, ibuf, k, n)
            if st[K.BOUNDARY]:
                self._half_cycle(st[K.BOUNDARY])

    def _half_cycle(self, edge):
        st = self.st
        n = st[K.N]
        svv = st[K.SVV]
        lo = self.clock_lo + n
        if lo >= wide.LOW:
            lo -= wide.LOW
            self.clock_hi += 1
        self.clock_lo = lo
        self.registers.add_active(st[K.SP])
        if self.half_n:
            msq = (self.half_svv + svv) // (self.half_n + n)
            self.urms_half_msq = msq
            self.pq.update(msq)
        self.half_n = n
        self.half_svv = svv
        K.wide_add(self.sums_reading, st, K.N, F)
        K.wide_add(self.sums_window, st, K.N, F)
        ext = self.ext
        if edge == K.RISING:
            if ext[X_HAVE_FIRST]:
                ext[X_CYCLES] += 1
                ext[X_LAST_K] = st[K.CROSS_K]
                ext[X_LAST_A] = st[K.CROSS_A]
                ext[X_LAST_B] = st[K.CROSS_B]
            else:
                ext[X_HAVE_FIRST] = 1
                ext[X_FIRST_K] = st[K.CROSS_K]
                ext[X_FIRST_A] = st[K.CROSS_A]
                ext[X_FIRST_B] = st[K.CROSS_B]
        elif edge == K.FORCED:
            ext[X_FORCED] += 1
            ext[X_HAVE_FIRST] = 0
            ext[X_CYCLES] = 0
        self.halves += 1
        if edge != K.FALLING:
            if self.halves >= self.halves_per_window:
                self._close_window()
            if st[K.POS] >= self.interval_samples:
                self._close_reading(edge)
        K.clear(st, K.N, K.N + F)


    def _close_window(self):
        a = self.sums_window
        ext = self.ext
        n = a[1]
        mean_v = wide.div(a, 1, n)
        mean_i = wide.div(a, 3, n)
        v = wide.div(a, 2, n) - mean_v * mean_v
        i = wide.div(a, 4, n) - mean_i * mean_i
        p = wide.div(a, 5, n) - wide.div(a, 6, n) * mean_i
        if ext[X_WINDOWS] == 0:
            ext[X_VMIN] = ext[X_VMAX] = v
            ext[X_IMIN] = ext[X_IMAX] = i
            ext[X_PMIN] = ext[X_PMAX] = p
        else:
            if v < ext[X_VMIN]:
                ext[X_VMIN] = v
            if v > ext[X_VMAX]:
                ext[X_VMAX] = v
            if i < ext[X_IMIN]:
                ext[X_IMIN] = i
            if i > ext[X_IMAX]:
                ext[X_IMAX] = i
            if p < ext[X_PMIN]:
                ext[X_PMIN] = p
            if p > ext[X_PMAX]:
                ext[X_PMAX] = p
        ext[X_WINDOWS] += 1
        K.copy(self.last_window, a, 2 * F)
        K.clear(a, 0, 2 * F)
        self.halves = 0

    def _close_reading(self, edge):
        st = self.st
        a = self.sums_reading
        ext = self.ext
        pos = st[K.POS]
        ext[X_SAMPLES] = pos
        ext[X_CLOCK_HI] = self.clock_hi
        ext[X_CLOCK_LO] = self.clock_lo
        if self.ready:
            self.readings_overwritten += 1
        K.copy(self.ready_sums, a, 2 * F)
        K.copy(self.ready_ext, ext, X_SIZE)
        self.ready = True
        n = a[1]
        st[K.VOFF] += _offset_step(wide.div(a, 1, n))
        st[K.IOFF] += _offset_step(wide.div(a, 3, n))
        K.clear(a, 0, 2 * F)
        K.clear(ext, 0, X_SIZE)
        if edge == K.RISING:
            ext[X_HAVE_FIRST] = 1
            ext[X_FIRST_K] = st[K.CROSS_K] - pos
            ext[X_FIRST_A] = st[K.CROSS_A]
            ext[X_FIRST_B] = st[K.CROSS_B]
        st[K.POS] = 0

    def _event(self, record):
        if len(self.events) >= 64:
            self.events.pop(0)
        self.events.append(record)
        if self.on_event is not None:
            self.on_event(record)

    def take_events(self):
        out = self.events
        self.events = []
        return out


def _offset_step(floor_mean):
    # floor_mean is floor(mean residual): move the integer offset only by whole counts.
    if floor_mean >= 1:
        return floor_mean
    if floor_mean <= -2:
        return floor_mean + 1
    return 0
