# Turns the metering engine's integer snapshot into a reading (floats), once per interval.
# This runs at the reporting rate, not per cycle, so it may allocate.

import math

import harmonics
import kernel as K
import metering as M
import wide

# hi-word index of each field in a snapshot of wide sums
_N, _SV, _SVV, _SI, _SII, _SP, _SQ, _FVC, _FVS, _FIC, _FIS = range(0, 2 * K.FIELDS, 2)
_CYCLES = K.CYCLES - K.EXT
_FIRST = K.FIRST_K - K.EXT
_LAST = K.LAST_K - K.EXT


DEG = 57.29577951308232  # degrees per radian


def _crossing(k, a, b):
    # v went from a (<= 0) to b (> 0) between positions k-1 and k
    return k - b / (b - a)


def fundamental(m, a, n, freq):
    """(V1, I1, P1, Q1): rms of the fundamental of V and I, fundamental active and reactive
    power (IEEE 1459), from the kernel's single-bin DFT sums over the reading (whole cycles
    of the frequency-locked reference)."""
    k = 2.0 / (n * K.TAB_ONE)  # sum of x * cos(phi) over whole cycles is n * X / 2
    vre = k * wide.value(a, _FVC)
    vim = -k * wide.value(a, _FVS)
    ire = k * wide.value(a, _FIC)
    iim = -k * wide.value(a, _FIS)
    # I is read channel_delay_s after V, which the phase calibration adds to: turn the I
    # phasor back to the V sampling instant.
    f = freq or m.config["frequency"]
    delay = m.channel_delay_s - m.config["phase_cal_deg"] / 360.0 / f
    c = math.cos(2 * math.pi * f * delay)
    s = math.sin(2 * math.pi * f * delay)
    ire, iim = ire * c + iim * s, iim * c - ire * s
    g = m.v_gain * m.i_gain / 2  # peak phasors: P = Re(V conj(I)) / 2
    return (m.v_gain * math.sqrt(vre * vre + vim * vim) / math.sqrt(2),
            m.i_gain * math.sqrt(ire * ire + iim * iim) / math.sqrt(2),
            g * (vre * ire + vim * iim), g * (vim * ire - vre * iim))


def thd_pct(e, fundamental_at):
    """THD (% of the fundamental) from the harmonic energy sums, or None."""
    e1 = wide.value(e, fundamental_at)
    if e1 <= 0:
        return None
    return 100.0 * math.sqrt(max(wide.value(e, fundamental_at + 2), 0) / e1)


def spectrum_pct(e, order):
    """Per order 2..H: V and I harmonic magnitudes in percent of their fundamental."""
    out = ([], [])
    for side, first in ((0, 0), (1, 4)):
        e1 = wide.value(e, first)
        for h in range(2, order + 1):
            eh = wide.value(e, harmonics.E_SIZE + 4 * (h - 2) + 2 * side)
            out[side].append(round(100.0 * math.sqrt(max(eh, 0) / e1), 4) if e1 > 0 else None)
    return out


class Reporter:
    def __init__(self, meter, demand_block_s=900):
        self.meter = meter
        self.block_s = demand_block_s
        self.block_end = demand_block_s
        self.block_start_mwh = 0
        self.demand_w = None
        self.last_samples = 0

    def take(self):
        """The latest completed reading as a dict, or None if none is ready."""
        m = self.meter
        if not m.ready:
            return None
        m.ready = False
        a = m.ready_sums
        x = m.ready_ext
        gv = m.v_gain
        gi = m.i_gain
        n = wide.value(a, _N)
        mv = wide.value(a, _SV) / n
        mi = wide.value(a, _SI) / n
        vrms = gv * math.sqrt(max(wide.value(a, _SVV) / n - mv * mv, 0.0))
        irms = gi * math.sqrt(max(wide.value(a, _SII) / n - mi * mi, 0.0))
        gain_vs = (m.st[K.COEF_A] + m.st[K.COEF_B]) / (1 << K.COEF_BITS)
        p = gv * gi * (wide.value(a, _SP) / n - gain_vs * mv * mi)
        s = vrms * irms
        samples = x[M.X_CLOCK_HI] * wide.LOW + x[M.X_CLOCK_LO]
        self.last_samples = samples  # exact (an int): the App makes wall time from it
        t = samples * m.ts
        freq = None
        if x[_CYCLES] >= 1:
            first = _crossing(x[_FIRST], x[_FIRST + 1], x[_FIRST + 2])
            last = _crossing(x[_LAST], x[_LAST + 1], x[_LAST + 2])
            freq = x[_CYCLES] / ((last - first) * m.ts)
        v1, i1, p1, q = fundamental(m, a, n, freq)
        nonactive = math.sqrt(max(s * s - p * p, 0.0))
        regs = m.registers
        regs.add_reactive_mvarh(q * x[M.X_SAMPLES] * m.ts / 3.6)
        self._demand(t, regs.import_wh.total_mwh())
        r = {
            "type": "reading",
            "t": t,
            "vrms": vrms,
            "irms": irms,
            "p": p,
            "q": q,
            "s": s,
            "pf": p / s if s > 0 else 0.0,
            "f": freq,
            "n": nonactive,
            "d": math.sqrt(max(s * s - p * p - q * q, 0.0)),
            "v1": v1,
            "i1": i1,
            "p1": p1,
            # the current's fundamental phasor angle against the voltage's (the reference):
            # negative while the current lags (an inductive load), in degrees
            "i1_deg": -DEG * math.atan2(q, p1) if i1 > 0 else None,
        }
        if m.harmonic_order >= 2:
            r["thd_v"] = thd_pct(m.ready_harm, 0)
            r["thd_i"] = thd_pct(m.ready_harm, 4)
            rated = m.config.get("rated_a", 0)
            if rated > 0 and r["thd_i"] is not None:
                # TDD (IEEE 519): harmonic current against the rated (maximum demand) current
                r["tdd"] = r["thd_i"] * i1 / rated
            if m.spectrum:
                r["hv"], r["hi"] = spectrum_pct(m.ready_harm, m.harmonic_order)
            if m.groups is not None:
                r.update(m.groups.readout(m.ready_harm, m.g_off, m.harmonic_order))
        mm = m.ready_minmax
        if mm[M.M_WINDOWS]:
            r["vmin"] = gv * math.sqrt(max(mm[M.M_VMIN], 0))
            r["vmax"] = gv * math.sqrt(max(mm[M.M_VMAX], 0))
            r["imin"] = gi * math.sqrt(max(mm[M.M_IMIN], 0))
            r["imax"] = gi * math.sqrt(max(mm[M.M_IMAX], 0))
            r["pmin"] = gv * gi * mm[M.M_PMIN]
            r["pmax"] = gv * gi * mm[M.M_PMAX]
        r.update(regs.as_wh())
        r["demand_w"] = self.demand_w
        return r

    def _demand(self, t, import_mwh):
        if t >= self.block_end:
            self.demand_w = (import_mwh - self.block_start_mwh) / 1000.0 * 3600.0 / self.block_s
            self.block_start_mwh = import_mwh
            while self.block_end <= t:
                self.block_end += self.block_s
