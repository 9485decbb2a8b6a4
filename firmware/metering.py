# The metering engine: continuous and gap-free, integer-only in the per-sample and
# per-cycle paths, so steady-state metering allocates nothing.
#
# kernel.run() does the per-sample sums and all routine per-half-cycle work (energy,
# Urms(1/2) threshold screening, window and reading sums). It hands control back here only
# when an event may start or is in progress, a 10/12-cycle window ends, or a reading window
# ends. A finished reading is snapshotted; reading.py turns it into floats.

import array
import math

import harmonics as H
import kernel as K
import wide
from energy import Registers
from pq import EventDetector

F = K.FIELDS
# Snapshot of a reading's frequency data: the kernel's EXT slots, then these.
X_SAMPLES = K.EXT_SIZE
X_CLOCK_HI = K.EXT_SIZE + 1
X_CLOCK_LO = K.EXT_SIZE + 2
X_SIZE = K.EXT_SIZE + 3
# Min/max over the 10/12-cycle windows of a reading, as mean squares (counts^2) and P (counts^2).
M_WINDOWS, M_VMIN, M_VMAX, M_IMIN, M_IMAX, M_PMIN, M_PMAX = range(7)
MAX_OFFSET_DRIFT = 200  # counts either side of the board's mid point (keeps sums < 2**30)


class Meter:
    def __init__(self, config, board):
        """config: validated dict (config.DEFAULTS keys). board: object with sample_rate (Hz),
        channel_delay_s, v_gain (V/count), i_gain (A/count), v_mid, i_mid (counts)."""
        self.config = config
        self.ts = 1.0 / board.sample_rate
        self.v_gain = board.v_gain * config["v_cal"]
        self.i_gain = board.i_gain * config["i_cal"]
        nominal_f = config["frequency"]
        spc, order = check_sampling(config, board)
        self.st = array.array("i", [0] * K.SLOTS)
        st = self.st
        for j in range(K.TAB_SIZE + 1):
            st[K.TAB + j] = K.TAB_BIAS + int(math.floor(
                K.TAB_ONE * math.cos(2 * math.pi * j / K.TAB_SIZE) + 0.5))
        st[K.INC] = int((1 << K.PHASE_BITS) / spc + 0.5)
        # the reference locks to frequencies within 40..70 Hz (samples per cycle * 256)
        self.spc256_min = int(board.sample_rate * 256 / 70)
        self.spc256_max = int(board.sample_rate * 256 / 40)
        st[K.VOFF] = self.v_mid = int(board.v_mid)
        st[K.IOFF] = self.i_mid = int(board.i_mid)
        st[K.MIN_HALF] = int(spc / 4)
        # Without zero crossings (an interruption) half cycles are closed by count: the first
        # after 0.75 nominal cycle (slower than any real half cycle), then every half cycle.
        st[K.NORMAL_HALF] = st[K.MAX_HALF] = min(K.MAX_HALF_SAMPLES, int(spc * 0.75))
        st[K.FORCED_HALF] = int(spc / 2)
        peak = config["nominal_v"] * 1.41421356 / self.v_gain
        st[K.HYST] = max(2, int(peak * 0.05))
        st[K.HALVES_PER_WINDOW] = 20 if nominal_f == 50 else 24
        self.window_cycles = st[K.HALVES_PER_WINDOW] // 2
        self.harmonic_order = order
        self.harm = array.array("i", [0] * (H.HEAD + 4 * order))
        self.harm_top = len(self.harm)
        self.harm[H.ORDERS] = order
        self.harm[H.WINC] = st[K.INC] // self.window_cycles
        self.harm_shift = H.sum_shift(st[K.HALVES_PER_WINDOW] * max(
            st[K.NORMAL_HALF], st[K.FORCED_HALF]))
        self.spectrum = 1 if config.get("harmonic_spectrum") and order >= 2 else 0
        self.e_size = H.energy_size(order, self.spectrum)
        self.groups = None  # IEC 61000-4-7 groups and subgroups (harmonic_groups.py)
        if config.get("harmonic_groups") and order >= 2:
            import harmonic_groups

            self.groups = harmonic_groups
            self.grp = harmonic_groups.make(order, self.window_cycles, self.harm_shift)
            self.g_off = self.e_size
            self.e_size += harmonic_groups.E_PER_ORDER * order
        self.harm_energy = array.array("i", [0] * self.e_size)
        self.ready_harm = array.array("i", [0] * self.e_size)
        st[K.INTERVAL] = int(config["interval_s"] * board.sample_rate)
        self.channel_delay_s = board.channel_delay_s
        self.set_phase(nominal_f, board.channel_delay_s)
        units = int(3.6 / (self.v_gain * self.i_gain * self.ts) + 0.5)
        self.registers = Registers(units)
        st[K.UNITS] = units
        self.on_event = None   # the app's handler of each PQ event (start and end)
        self.pq = EventDetector(config["nominal_v"], self.v_gain, self.ts, nominal_f,
                                config["dip_pct"], config["swell_pct"],
                                config["interruption_pct"], config["hysteresis_pct"],
                                clock=self, notify=self._event)
        st[K.PQ_LOW] = self.pq.dip_start
        st[K.PQ_HIGH] = self.pq.swell_start
        if (self.pq.swell_start + 1) * 2 * K.MAX_HALF_SAMPLES >= 1 << 30:
            raise ValueError("v_gain too small: swell threshold overflows the integer range")
        self.minmax = array.array("i", [0] * 7)
        self.last_window = array.array("i", [0] * (2 * F))
        self.ready_sums = array.array("i", [0] * (2 * F))
        self.ready_ext = array.array("i", [0] * X_SIZE)
        self.ready_minmax = array.array("i", [0] * 7)
        self.ready = False
        self.readings_merged = 0
        self.urms_half_msq = 0  # latest Urms(1/2) mean square (counts^2), when screened
        self.follower = False

    def set_phase(self, frequency, channel_delay_s):
        """Coefficients that move v to the instant i[n-1] was read, exact for the fundamental."""
        w = 2 * math.pi * frequency
        t = self.ts
        tau = t - channel_delay_s + self.config["phase_cal_deg"] / 360.0 / frequency
        if not -0.2 * t <= tau <= 1.2 * t:
            # beyond a fifth of a sample the 2-tap interpolation extrapolates, and its gain
            # (and the integer sums) grow without bound
            deg = 360.0 * frequency
            raise ValueError("phase_cal_deg must be within %.2f..%.2f deg at this sample rate "
                             "and channel delay" % (deg * (channel_delay_s - 1.2 * t),
                                                    deg * (channel_delay_s + 0.2 * t)))
        a = math.sin(w * (t - tau)) / math.sin(w * t)
        b = math.sin(w * tau) / math.sin(w * t)
        self.st[K.COEF_A] = int(a * (1 << K.COEF_BITS) + 0.5)
        self.st[K.COEF_B] = int(b * (1 << K.COEF_BITS) + 0.5)

    def now(self):
        """Samples since start (a Python int; may allocate, so only used on events)."""
        return self.st[K.CLOCK_HI] * wide.LOW + self.st[K.CLOCK_LO]

    def feed(self, vbuf, ibuf, n, k=0):
        """Consume sample pairs k..n-1 (array('H') of ADC counts). Allocates nothing."""
        while k < n:
            k = self.step(vbuf, ibuf, k, n)
            self.attend()

    def step(self, vbuf, ibuf, k, n):
        """Run the kernel from k until n or until Python must look (attend()); returns the
        next k. polyphase.py steps its leader, then its followers to the same sample."""
        st = self.st
        ph = st[K.PH]
        end = K.run(st, vbuf, ibuf, k, n)
        if self.groups is not None:  # the groups' sums give the per-order ones too
            G = self.groups
            g = self.grp
            while k < end:
                k = G.accumulate(g, self.harm, st, vbuf, ibuf, k, end, ph)
                if k < end:  # an interval of the window is complete
                    G.rotate(g, self.harm)
                    ph = g[G.PH]
        elif self.harmonic_order >= 2:  # order 1: no harmonic analysis at all
            H.accumulate(self.harm, st, vbuf, ibuf, k, end, ph)
        return end

    def attend(self):
        st = self.st
        attn = st[K.ATTN]
        if attn:
            st[K.ATTN] = 0
            self._attend(attn)

    def follow(self, pq=True):
        """A follower takes its reference frequency from a leader (polyphase.py copies the
        leader's INC after every step), so all fundamental phasors share one reference; with
        pq False its voltage is the leader's and it never looks for events."""
        self.follower = True
        if not pq:
            self.st[K.PQ_LOW] = 0
            self.st[K.PQ_HIGH] = 1 << 22  # a mean square above full scale: never

    def _attend(self, attn):
        st = self.st
        if attn & K.ATTN_PQ:
            msq = st[K.URMS_SUM] // st[K.URMS_N]
            self.urms_half_msq = msq
            self.pq.update(msq)
            st[K.PQ_ACTIVE] = 1 if self.pq.state else 0
        if attn & K.ATTN_SYNC:
            # Readings and windows start at the second rising edge: the first may have been
            # confirmed late (debounce) if sampling began near a crossing.
            st[K.SYNCED] += 1
            K.clear(st, K.WINDOW, K.WINDOW + 2 * F)
            K.clear(self.harm, H.HEAD, self.harm_top)
            self.harm[H.WPH] = 0
            if self.groups is not None:
                self.groups.reset(self.grp)
            st[K.HALVES] = 0
            self._restart_reading()
            return
        if attn & K.ATTN_WINDOW:
            self._close_window()
        if attn & K.ATTN_READING:
            self._close_reading()

    def finish(self):
        """End of a finite input (replay): close the partial reading and report any event
        still in progress (marked incomplete)."""
        if self.st[K.SYNCED] >= 2 and self.st[K.POS] > 0:
            self._close_reading()
        self.pq.finish()

    def _close_window(self):
        st = self.st
        w = K.WINDOW
        mm = self.minmax
        n = st[w + 1]
        mean_v = wide.div(st, w + 2, n)
        mean_i = wide.div(st, w + 6, n)
        v = wide.div(st, w + 4, n) - mean_v * mean_v
        i = wide.div(st, w + 8, n) - mean_i * mean_i
        # sum(vs) is (A + B) * sum(v) up to rounding: the kernel does not keep it
        mean_vs = ((st[K.COEF_A] + st[K.COEF_B]) * mean_v) >> K.COEF_BITS
        p = wide.div(st, w + 10, n) - mean_vs * mean_i
        if mm[M_WINDOWS] == 0:
            mm[M_VMIN] = mm[M_VMAX] = v
            mm[M_IMIN] = mm[M_IMAX] = i
            mm[M_PMIN] = mm[M_PMAX] = p
        else:
            if v < mm[M_VMIN]:
                mm[M_VMIN] = v
            if v > mm[M_VMAX]:
                mm[M_VMAX] = v
            if i < mm[M_IMIN]:
                mm[M_IMIN] = i
            if i > mm[M_IMAX]:
                mm[M_IMAX] = i
            if p < mm[M_PMIN]:
                mm[M_PMIN] = p
            if p > mm[M_PMAX]:
                mm[M_PMAX] = p
        mm[M_WINDOWS] += 1
        K.copy(self.last_window, st, w, 2 * F)
        K.clear(st, w, w + 2 * F)
        st[K.HALVES] = 0
        if self.groups is not None:
            self.groups.flush(self.grp, self.harm)
            self.groups.close(self.grp, self.harm_energy, self.g_off, self.harm[H.ORDERS])
        H.close(self.harm, self.harm_energy, self.harm_shift, self.spectrum)
        self._lock_frequency()
        self.harm[H.WINC] = st[K.INC] // self.window_cycles
        # only orders below the Nyquist frequency at the frequency now measured
        self.harm[H.ORDERS] = min(self.harmonic_order, ((1 << (K.PHASE_BITS - 1)) - 1)
                                  // st[K.INC])

    def _lock_frequency(self):
        # The reference phase steps by 2**PHASE_BITS per cycle of the frequency measured so
        # far in this reading (interpolated zero crossings, in 1/256 sample; small ints only).
        st = self.st
        cycles = st[K.CYCLES]
        # Only over a window's cycles or more: over fewer (a reading that began just before
        # this window's end) a harmonic or interharmonic moving the crossings would pull the
        # reference enough to spread a high order over the next bins; the last lock stays.
        if cycles < self.window_cycles or st[K.FROZEN] or self.follower:
            return
        first = _crossing256(st[K.FIRST_K], st[K.FIRST_A], st[K.FIRST_B])
        last = _crossing256(st[K.LAST_K], st[K.LAST_A], st[K.LAST_B])
        d = (last - first) // cycles
        if not self.spc256_min <= d <= self.spc256_max:
            return
        q = (1 << 29) // d  # floor(2**30 / d), as 2**30 itself is not a small int
        st[K.INC] = 2 * q + (2 * ((1 << 29) - q * d)) // d

    def _close_reading(self):
        st = self.st
        r = K.READING
        if self.ready:
            self._merge_into_ready()  # not taken yet: the reading grows, nothing is lost
        else:
            K.copy(self.ready_sums, st, r, 2 * F)
            K.copy(self.ready_ext, st, K.EXT, K.EXT_SIZE)
            self.ready_ext[X_SAMPLES] = st[K.POS]
            K.copy(self.ready_minmax, self.minmax, 0, 7)
            K.copy(self.ready_harm, self.harm_energy, 0, self.e_size)
        x = self.ready_ext
        x[X_CLOCK_HI] = st[K.CLOCK_HI]
        x[X_CLOCK_LO] = st[K.CLOCK_LO]
        self.ready = True
        self.fold_energy()
        n = st[r + 1]
        # Offsets track the bias slowly, but never far from the board's mid point: an input
        # stuck at a rail must not drag them to where full-scale samples overflow the sums.
        dv = _clamp(st[K.VOFF] + _offset_step(wide.div(st, r + 2, n)), self.v_mid) - st[K.VOFF]
        st[K.VOFF] += dv
        st[K.IOFF] = _clamp(st[K.IOFF] + _offset_step(wide.div(st, r + 6, n)), self.i_mid)
        self._restart_reading()
        # The next reading's first crossing was sampled with the old V offset: re-express it
        # against the new one, so frequency is not biased by the step.
        st[K.FIRST_A] -= dv
        st[K.FIRST_B] -= dv

    def _merge_into_ready(self):
        st = self.st
        x = self.ready_ext
        e = K.EXT
        self.readings_merged += 1
        K.merge(self.ready_sums, st, K.READING, F)
        K.merge(self.ready_harm, self.harm_energy, 0, self.e_size // 2)
        x[X_SAMPLES] += st[K.POS]
        if (x[0] and st[e] and st[K.FIRST_K] <= 0 and not x[K.FROZEN - e]
                and not st[K.FORCED]):
            x[0] += st[e]  # contiguous runs of cycles: frequency spans both
            x[K.LAST_K - e] = st[K.LAST_K] + x[X_SAMPLES] - st[K.POS]
            x[K.LAST_A - e] = st[K.LAST_A]
            x[K.LAST_B - e] = st[K.LAST_B]
        mm = self.minmax
        rm = self.ready_minmax
        if not mm[M_WINDOWS]:
            return
        if not rm[M_WINDOWS]:
            K.copy(rm, mm, 0, 7)
            return
        rm[M_WINDOWS] += mm[M_WINDOWS]
        rm[M_VMIN] = min(rm[M_VMIN], mm[M_VMIN])
        rm[M_IMIN] = min(rm[M_IMIN], mm[M_IMIN])
        rm[M_PMIN] = min(rm[M_PMIN], mm[M_PMIN])
        rm[M_VMAX] = max(rm[M_VMAX], mm[M_VMAX])
        rm[M_IMAX] = max(rm[M_IMAX], mm[M_IMAX])
        rm[M_PMAX] = max(rm[M_PMAX], mm[M_PMAX])

    def _restart_reading(self):
        st = self.st
        K.clear(st, K.READING, K.READING + 2 * F)
        K.clear(st, K.EXT, K.EXT + K.EXT_SIZE)
        K.clear(self.minmax, 0, 7)
        K.clear(self.harm_energy, 0, self.e_size)
        if st[K.BOUNDARY] == K.RISING:
            st[K.HAVE_FIRST] = 1
            st[K.FIRST_K] = st[K.CROSS_K] - st[K.POS]
            st[K.FIRST_A] = st[K.CROSS_A]
            st[K.FIRST_B] = st[K.CROSS_B]
        st[K.POS] = 0

    def fold_energy(self):
        """Move whole mWh from the kernel's counters into the registers (small ints only)."""
        st = self.st
        regs = self.registers
        regs.import_wh.add_mwh(st[K.IMP_MWH])
        regs.export_wh.add_mwh(st[K.EXP_MWH])
        st[K.IMP_MWH] = 0
        st[K.EXP_MWH] = 0
        regs.import_wh.rem = st[K.IMP_REM]
        regs.export_wh.rem = st[K.EXP_REM]

    def restore_energy(self, state):
        """Load persisted register state (see energy.Registers.state)."""
        self.fold_energy()
        self.registers.restore(state)
        self.st[K.IMP_REM] = self.registers.import_wh.rem
        self.st[K.EXP_REM] = self.registers.export_wh.rem

    def _event(self, record):
        if self.on_event is not None:
            self.on_event(record)


def check_sampling(config, board):
    """(samples per nominal cycle, harmonic order to analyse) for this config on this board,
    or ValueError with the reason (app.change_config asks this before saving a config)."""
    nominal_f = config["frequency"]
    spc = board.sample_rate / nominal_f
    if not 32 <= spc <= 128:
        raise ValueError("sample rate %.0f Hz gives %.1f samples per cycle at %s Hz; "
                         "need 32..128" % (board.sample_rate, spc, nominal_f))
    if config.get("capture"):               # a ring that cannot fit is refused here
        import capture

        capture.check(config, spc)
    return spc, H.check_order(config.get("harmonic_order", 0), spc,
                              bool(config.get("harmonic_groups")))


def _crossing256(k, a, b):
    # v went from a (<= 0) to b (> 0) between positions k-1 and k: where, in 1/256 sample
    return k * 256 - (b * 256) // (b - a)


def _clamp(offset, mid):
    return max(mid - MAX_OFFSET_DRIFT, min(mid + MAX_OFFSET_DRIFT, offset))


def _offset_step(floor_mean):
    # floor_mean is floor(mean residual): move the integer offset only by whole counts.
    if floor_mean >= 1:
        return floor_mean
    if floor_mean <= -2:
        return floor_mean + 1
    return 0
