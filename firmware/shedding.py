# Load shedding (docs/alarms.md "Load shedding"): rules that open the relay on a meter alarm
# (e.g. load_95), a block demand over a threshold, a price signal from the utility at or
# above a threshold, or a tariff rate in force (the reading's "rate", billing.py), and
# restore it afterwards. Minimum on and off times keep the relay from
# chattering; the restore waits a random delay within a window, so a fleet shed together
# never switches back on at once. A utility override (open, closed or auto) holds until it
# expires. Every action is a `shed` item with its cause.
#
# Checked on every reading, after the alarms. Only a relay this module opened is restored by
# it: an operator's own relay command is left alone.

import random

CAUSES = ("alarm", "demand", "price", "rate")


class Shedder:
    def __init__(self, cfg, set_relay, rng=None):
        self.alarm_kinds = [k for k in cfg["shed_on_alarm"].split(",") if k]
        self.demand_w = cfg["shed_demand_w"]
        self.price_at = cfg["shed_price"]
        self.rates = [r for r in cfg.get("shed_on_rate", "").split(",") if r]
        self.min_off = cfg["shed_min_off_s"]
        self.min_on = cfg["shed_min_on_s"]
        self.window = cfg["shed_restore_window_s"]
        self.set_relay = set_relay          # set_relay("open" | "closed")
        self.rng = rng or random
        self.shed = False                   # the relay is open because of this module
        self.since = None                   # wall s of the last open or restore
        self.restore_at = None              # wall s the pending restore is due
        self.price = None                   # (price, expires wall s) from the utility
        self.override = None                # ("open" | "closed", expires wall s)
        self.override_applied = False

    def set_price(self, price, until):
        self.price = (price, until)

    def set_override(self, state, until):
        """state "open" or "closed" until `until` (wall s); "auto" ends an override."""
        self.override = None if state == "auto" else (state, until)
        self.override_applied = False

    def cause(self, reading, active_alarms):
        """Why the load should be off now, or None."""
        for kind in active_alarms:
            if kind in self.alarm_kinds:
                return "alarm " + kind
        d = reading.get("demand_w")
        if self.demand_w > 0 and d is not None and d >= self.demand_w:
            return "demand %.0f W >= %.0f W" % (d, self.demand_w)
        if self.price is not None and self.price_at > 0 and self.price[0] >= self.price_at:
            return "price %g >= %g" % (self.price[0], self.price_at)
        rate = reading.get("rate")
        if rate is not None and rate in self.rates:
            return "rate " + rate
        return None

    def check(self, reading, active_alarms):
        """`shed` records for what this reading makes happen (usually none)."""
        t = reading["t"]
        if self.price is not None and t >= self.price[1]:
            self.price = None
        if self.override is not None:
            state, until = self.override
            if t < until:
                return self._override(state, t)
            self.override = None
            out = [_record(t, "override_end", "override expired")]
            return out + self._auto(reading, active_alarms, t)
        return self._auto(reading, active_alarms, t)

    def _override(self, state, t):
        if self.override_applied:
            return []
        self.override_applied = True
        want_open = state == "open"
        self.shed, self.since, self.restore_at = want_open, t, None
        self.set_relay("open" if want_open else "closed")
        return [_record(t, "open" if want_open else "restore", "utility override")]

    def _auto(self, reading, active_alarms, t):
        why = self.cause(reading, active_alarms)
        if not self.shed:
            if why is None or (self.since is not None and t - self.since < self.min_on):
                return []
            self.shed, self.since, self.restore_at = True, t, None
            self.set_relay("open")
            return [_record(t, "open", why)]
        if why is not None:
            self.restore_at = None          # the cause came back: stay off, draw again later
            return []
        if self.restore_at is None:
            delay = self.rng.randint(0, self.window) if self.window > 0 else 0
            self.restore_at = max(self.since + self.min_off, t + delay)
        if t < self.restore_at:
            return []
        self.shed, self.since, self.restore_at = False, t, None
        self.set_relay("closed")
        return [_record(t, "restore", "cause cleared")]


def _record(t, action, cause):
    return {"type": "shed", "action": action, "cause": cause, "at_s": t}
