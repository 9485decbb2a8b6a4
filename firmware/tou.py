# Time-of-use registers (docs/billing.md). The head-end turns the utility's local-time tariff
# (weekly schedule, seasons, holidays, DST) into UTC switch times over a horizon; the meter
# only compares its trusted clock with that list, so it never handles a time zone.
#
# A tariff on the meter: rate names (up to 8), t0 (Unix s) and, as offsets from t0 in small
# ints, the switches (offset, rate) in increasing order, the billing freeze times, and the
# end of the horizon. Switches are packed into one array of ints (offset * 8 + rate): 4 bytes
# each, searched by bisection.
#
# Per-rate import and export registers are exact (energy.Register, in mWh). Energy is given
# to a rate once a reading (each second, never per sample): what was metered since the last
# step goes to the rate in force at that step, so a switch takes effect to within a reading.

import array

from energy import MWH_PER_KWH, Register

MAX_RATES = 8
MAX_SWITCHES = 1024
MAX_FREEZES = 64
MAX_SPAN_S = 1 << 26     # 2.1 years: offset * 8 + rate stays a small int (< 2**30)
MAX_NAME = 32


def _int(x, lo, hi, what):
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise ValueError("%s must be an int within %d..%d" % (what, lo, hi))
    return x


def _name(x, what):
    if not isinstance(x, str) or not 0 < len(x) <= MAX_NAME:
        raise ValueError("%s must be a name of 1..%d characters" % (what, MAX_NAME))
    return x


class Tariff:
    def __init__(self, args):
        """From the `tariff` op's args (or the copy kept on flash); ValueError says why not:
        {"id", "rates": [names], "t0", "end", "switches": [[offset, rate], ...],
         "freezes": [offset, ...]}; the first switch is at offset 0."""
        if not isinstance(args, dict):
            raise ValueError("a tariff must be an object")
        self.id = _name(args.get("id"), "id")
        rates = args.get("rates")
        if not isinstance(rates, list) or not 1 <= len(rates) <= MAX_RATES:
            raise ValueError("rates must be a list of 1..%d names" % MAX_RATES)
        for k, r in enumerate(rates):
            _name(r, "rates[%d]" % k)
            if r in rates[:k]:
                raise ValueError("rate %r is named twice" % (r,))
        self.rates = rates
        self.t0 = _int(args.get("t0"), 0, 1 << 40, "t0")
        self.end = _int(args.get("end"), 1, MAX_SPAN_S, "end")
        sw = args.get("switches")
        if not isinstance(sw, list) or not 1 <= len(sw) <= MAX_SWITCHES:
            raise ValueError("switches must be a list of 1..%d [offset, rate]" % MAX_SWITCHES)
        packed = array.array("i", [0] * len(sw))
        prev = -1
        for k, item in enumerate(sw):
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError("switches[%d] must be [offset, rate]" % k)
            at = _int(item[0], 0, self.end - 1, "switches[%d] offset" % k)
            rate = _int(item[1], 0, len(rates) - 1, "switches[%d] rate" % k)
            if at <= prev:
                raise ValueError("switches[%d] at offset %d is not after the one before "
                                 "(%d): overlapping or unordered schedule" % (k, at, prev))
            if k == 0 and at != 0:
                raise ValueError("the first switch must be at offset 0 (the rate at t0)")
            packed[k] = at * 8 + rate
            prev = at
        self.switches = packed
        fz = args.get("freezes", [])
        if not isinstance(fz, list) or len(fz) > MAX_FREEZES:
            raise ValueError("freezes must be a list of at most %d offsets" % MAX_FREEZES)
        prev = -1
        for k, at in enumerate(fz):
            _int(at, 0, self.end, "freezes[%d]" % k)
            if at <= prev:
                raise ValueError("freezes[%d] is not after the one before" % k)
            prev = at
        self.freezes = array.array("i", fz)

    def as_args(self):
        """The tariff as the op gave it (kept on flash, read back at start)."""
        return {"id": self.id, "rates": self.rates, "t0": self.t0, "end": self.end,
                "switches": [[x >> 3, x & 7] for x in self.switches],
                "freezes": list(self.freezes)}

    def rate_at(self, t):
        """The rate in force at Unix second t: before t0 the first one, after the horizon
        the last one (the head-end renews the horizon before it ends)."""
        dt = t - self.t0
        sw = self.switches
        if dt <= 0:
            return sw[0] & 7
        key = dt * 8 + 7 if dt < MAX_SPAN_S else MAX_SPAN_S * 8
        lo, hi = 0, len(sw)          # the last switch with packed value <= key
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if sw[mid] <= key:
                lo = mid
            else:
                hi = mid
        return sw[lo] & 7

    def freeze_due(self, after, t):
        """The latest freeze time (Unix s) in (after, t], or None."""
        due = None
        for at in self.freezes:
            at += self.t0
            if after < at <= t:
                due = at
        return due


class Tou:
    """Per-rate import and export registers fed from the meter's total registers."""

    def __init__(self, tariff):
        self.tariff = tariff
        n = len(tariff.rates) if tariff is not None else 0
        self.imp = [Register(1) for _ in range(n)]
        self.exp = [Register(1) for _ in range(n)]
        self.base = None     # [import kWh, mWh, export kWh, mWh] of the totals at the last step
        self.rate = None     # the rate in force since the last step (None: since a start)

    def step(self, t, regs):
        """Give the energy metered since the last step to the rate then in force; then
        take the rate in force at Unix second t. regs: the meter's (folded) Registers."""
        imp, exp = regs.import_wh, regs.export_wh
        b = self.base
        if b is None:
            self.base = b = [imp.kwh, imp.mwh, exp.kwh, exp.mwh]
        if self.tariff is None:
            b[0], b[1], b[2], b[3] = imp.kwh, imp.mwh, exp.kwh, exp.mwh
            return
        if self.rate is None:        # after a start: the rate of now
            self.rate = self.tariff.rate_at(t)
        di = (imp.kwh - b[0]) * MWH_PER_KWH + imp.mwh - b[1]
        de = (exp.kwh - b[2]) * MWH_PER_KWH + exp.mwh - b[3]
        if di > 0:                   # below 0 only after reset_energy, which resets these too
            self.imp[self.rate].add_mwh(di)
        if de > 0:
            self.exp[self.rate].add_mwh(de)
        b[0], b[1], b[2], b[3] = imp.kwh, imp.mwh, exp.kwh, exp.mwh
        self.rate = self.tariff.rate_at(t)

    def mwh(self):
        """{"import_mwh": [per rate], "export_mwh": [per rate]}: exact ints."""
        return {"import_mwh": [r.total_mwh() for r in self.imp],
                "export_mwh": [r.total_mwh() for r in self.exp]}

    def state(self):
        return {"tariff": self.tariff.id if self.tariff is not None else None,
                "imp": [r.state() for r in self.imp], "exp": [r.state() for r in self.exp],
                "base": self.base}

    def restore(self, state, regs):
        """Per-rate registers saved with the totals (one record), or zero for a state of
        another tariff or none (reset_energy); the base is then the totals as restored."""
        n = len(self.imp)
        ok = (isinstance(state, dict) and self.tariff is not None
              and state.get("tariff") == self.tariff.id
              and len(state.get("imp", ())) == n and len(state.get("exp", ())) == n)
        for k in range(n):
            self.imp[k].restore(state["imp"][k] if ok else [0, 0, 0])
            self.exp[k].restore(state["exp"][k] if ok else [0, 0, 0])
        imp, exp = regs.import_wh, regs.export_wh
        base = state.get("base") if ok else None
        if not (isinstance(base, list) and len(base) == 4 and all(
                isinstance(x, int) for x in base)):
            base = [imp.kwh, imp.mwh, exp.kwh, exp.mwh]
        self.base = base
        self.rate = None
