# A polyphase (or multi-circuit) reading, once per interval, from the elements' readings
# (reading.Reporter per element) plus what only the set of them gives: totals, phasor
# angles on the common reference, voltage unbalance u2 and phase sequence. May allocate.
#
# Totals: P and Q (the fundamental's reactive power, IEEE 1459 Q1) add over the elements.
# S is the arithmetic sum of the elements' S for 3p4w and 1vnct, and sqrt(P^2 + Q^2) for
# 3p3w, where per-phase apparent powers do not exist. The total energy registers are
# polyphase.PolyMeter's (the elements netted at each fold); demand is on their import.

import math

import kernel as K
import reading
import wide

DEG = reading.DEG
_FVC = 2 * (K.FVC - K.N)
_FVS = 2 * (K.FVS - K.N)
# phase keys each element reading keeps (the single-phase keys)
KEYS = ("t", "vrms", "irms", "p", "q", "s", "pf", "n", "d", "v1", "i1", "p1", "i1_deg", "thd_v",
        "thd_i", "tdd", "hv", "hi", "gv", "gi", "sgv", "sgi", "thdg_v", "thdg_i", "thds_v",
        "thds_i", "vmin", "vmax", "imin", "imax", "pmin", "pmax", "import_wh",
        "export_wh", "import_varh", "export_varh", "v1_deg")
C120 = -0.5                  # the 120 degree operator a = C120 + j S120
S120 = 0.8660254037844386


def v1_angle(m, offset_s, freq):
    """The angle (rad) of the element's fundamental V phasor on the common reference, at
    the reference voltage's sampling instant."""
    a = m.ready_sums
    ang = math.atan2(-wide.value(a, _FVS), wide.value(a, _FVC))
    return ang - 2 * math.pi * freq * offset_s


def _rot(z, c, s):
    return (z[0] * c - z[1] * s, z[0] * s + z[1] * c)


def sequence(va, vb, vc):
    """(u2 in % of the positive sequence, "abc" or "acb") from three fundamental phasors,
    each (re, im): |Va + a^2 Vb + a Vc| / |Va + a Vb + a^2 Vc| (no complex type needed)."""
    b1 = _rot(vb, C120, S120)
    c1 = _rot(vc, C120, -S120)
    b2 = _rot(vb, C120, -S120)
    c2 = _rot(vc, C120, S120)
    pos = math.sqrt((va[0] + b1[0] + c1[0]) ** 2 + (va[1] + b1[1] + c1[1]) ** 2)
    neg = math.sqrt((va[0] + b2[0] + c2[0]) ** 2 + (va[1] + b2[1] + c2[1]) ** 2)
    if pos <= 0 and neg <= 0:
        return None, None
    if neg > pos:
        return 100.0 * pos / neg, "acb"
    return 100.0 * neg / pos, "abc"


class PolyReporter:
    def __init__(self, poly, demand_block_s=900):
        self.poly = poly
        self.reporters = [reading.Reporter(m, demand_block_s) for m in poly.meters]
        self.last_samples = 0
        self.merged = 0
        self.block_s = demand_block_s
        self.block_end = demand_block_s
        self.block_start_mwh = 0
        self.demand_w = None

    def _ready(self):
        ms = self.poly.meters
        if all(m.ready for m in ms):
            return True
        # an element that never closes a reading (its voltage is missing from the start)
        # must not stop the others: go without it once the leader has merged two
        return ms[0].ready and ms[0].readings_merged > self.merged

    def take(self):
        """The latest completed polyphase reading as a dict, or None."""
        poly = self.poly
        if not self._ready():
            return None
        self.merged = poly.leader.readings_merged
        rs = []
        angles = []
        for j, m in enumerate(poly.meters):
            ready = m.ready
            r = self.reporters[j].take()
            f = (r or {}).get("f") or poly.config["frequency"]
            angles.append(v1_angle(m, poly.v_offset_s[j], f) if ready else None)
            rs.append(r)
        lead = rs[0]
        self.last_samples = self.reporters[0].last_samples
        out = {"type": "reading", "t": lead["t"], "f": lead["f"], "wiring": poly.wiring}
        ref = angles[0]
        p = q = s = 0.0
        phasors = []
        live = []
        for j, r in enumerate(rs[:poly.elements]):
            if r is None:
                phasors.append(None)
                continue
            live.append(r)
            p += r["p"]
            q += r["q"]
            s += r["s"]
            ang = angles[j] - ref
            r["v1_deg"] = _wrap(DEG * ang)
            if r.get("i1_deg") is not None:
                r["i1_deg"] = _wrap(r["i1_deg"] + DEG * ang)  # I against phase A voltage
            phasors.append((r["v1"] * math.cos(ang), r["v1"] * math.sin(ang)))
        if poly.wiring == "3p3w":
            s = math.sqrt(p * p + q * q)
        # for the App's alarms and screens: the voltages' mean, the largest current
        out["vrms"] = sum(r["vrms"] for r in live) / len(live)
        out["irms"] = max(r["irms"] for r in live)
        out["p"] = p
        out["q"] = q
        out["s"] = s
        out["pf"] = p / s if s > 0 else 0.0
        self._phases(out, rs, phasors)
        if poly.count > poly.elements and rs[-1] is not None:   # the neutral CT
            out["in"] = rs[-1]["irms"]
            if "thd_i" in rs[-1]:
                out["thd_in"] = rs[-1]["thd_i"]
        poly.fold_energy()
        regs = poly.registers
        self._demand(self.last_samples * poly.ts, regs.import_wh.total_mwh())
        out.update(regs.as_wh())
        out["demand_w"] = self.demand_w
        return out

    def _demand(self, t, import_mwh):
        if t >= self.block_end:
            self.demand_w = (import_mwh - self.block_start_mwh) / 1000.0 * 3600.0 / self.block_s
            self.block_start_mwh = import_mwh
            while self.block_end <= t:
                self.block_end += self.block_s

    def _phases(self, out, rs, phasors):
        wiring = self.poly.wiring
        if wiring == "1vnct":
            out["vrms"] = rs[0]["vrms"]
            out["circuits"] = [_keep(r) for r in rs]
            return
        if wiring == "3p4w":
            for name, r in zip(("a", "b", "c"), rs):
                out[name] = _keep(r)
            if None not in phasors:
                out["u2_pct"], out["sequence"] = sequence(*phasors)
            return
        # 3p3w: line voltages Vab and Vcb, currents Ia and Ic; Vbc = -Vcb, Vca = Vcb - Vab
        for name, r in zip(("ab", "cb"), rs):
            if r is not None:
                out["v" + name] = r["vrms"]
                out["i" + name[0]] = r["irms"]
                if "thd_v" in r:
                    out["thd_v" + name] = r["thd_v"]
                    out["thd_i" + name[0]] = r["thd_i"]
        if None not in phasors:
            vab, vcb = phasors
            out["u2_pct"], out["sequence"] = sequence(vab, (-vcb[0], -vcb[1]),
                                                      (vcb[0] - vab[0], vcb[1] - vab[1]))


def _keep(r):
    if r is None:
        return None
    return {k: r[k] for k in KEYS if k in r}


def _wrap(deg):
    return (deg + 180.0) % 360.0 - 180.0
