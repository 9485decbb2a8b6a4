# Turns the metering engine's integer snapshot into a reading (floats), once per interval.
# This runs at the reporting rate, not per cycle, so it may allocate.

import math

import wide
import metering as M

_FIELD_N, _SV, _SVV, _SI, _SII, _SP, _SVS, _SX = range(8)


def _crossing(k, a, b):
    # v went from a (<= 0) to b (> 0) between positions k-1 and k
    return k - b / (b - a)


class Reporter:
    def __init__(self, meter, demand_block_s=900):
        self.meter = meter
        self.block_s = demand_block_s
        self.block_end = demand_block_s
        self.block_start_mwh = 0
        self.demand_w = None

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
        n = wide.value(a, _FIELD_N)
        mv = wide.value(a, _SV) / n
        mi = wide.value(a, _SI) / n
        vrms = gv * math.sqrt(max(wide.value(a, _SVV) / n - mv * mv, 0.0))
        irms = gi * math.sqrt(max(wide.value(a, _SII) / n - mi * mi, 0.0))
        p = gv * gi * (wide.value(a, _SP) / n - wide.value(a, _SVS) / n * mi)
        s = vrms * irms
        q = math.sqrt(max(s * s - p * p, 0.0))
        if wide.value(a, _SX) < 0:
            q = -q
        t = (x[M.X_CLOCK_HI] * wide.LOW + x[M.X_CLOCK_LO]) * m.ts
        freq = None
        if x[M.X_CYCLES] >= 1:
            first = _crossing(x[M.X_FIRST_K], x[M.X_FIRST_A], x[M.X_FIRST_B])
            last = _crossing(x[M.X_LAST_K], x[M.X_LAST_A], x[M.X_LAST_B])
            freq = x[M.X_CYCLES] / ((last - first) * m.ts)
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
        }
        if x[M.X_WINDOWS]:
            r["vmin"] = gv * math.sqrt(max(x[M.X_VMIN], 0))
            r["vmax"] = gv * math.sqrt(max(x[M.X_VMAX], 0))
            r["imin"] = gi * math.sqrt(max(x[M.X_IMIN], 0))
            r["imax"] = gi * math.sqrt(max(x[M.X_IMAX], 0))
            r["pmin"] = gv * gi * x[M.X_PMIN]
            r["pmax"] = gv * gi * x[M.X_PMAX]
        r.update(regs.as_wh())
        r["demand_w"] = self.demand_w
        return r

    def _demand(self, t, import_mwh):
        if t >= self.block_end:
            self.demand_w = (import_mwh - self.block_start_mwh) / 1000.0 * 3600.0 / self.block_s
            self.block_start_mwh = import_mwh
            while self.block_end <= t:
                self.block_end += self.block_s
