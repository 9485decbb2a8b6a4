# Meter alarms (docs/alarms.md "On the meter"): loading at 80 % and 95 % of the rated
# current and at 0 % (no load: a tripped feeder or an open CT), block demand over a
# threshold, and frequency out of its band. Checked on every reading (interval_s): a
# condition that holds for alarm_delay_s starts the alarm; it ends once the value is back
# past the threshold by the hysteresis. Start and end are each an `alarm` item pushed at
# once (the App kicks the exchange), and the head-end's escalation takes the start.
#
# Thresholds are operational keys (config.py): rated_a (0: no loading alarms), demand_alarm_w
# (0: none), f_alarm_pct (0: none), alarm_delay_s, alarm_hysteresis_pct.

NO_LOAD_PCT = 0.5       # "0 % of rated": below this share of rated current


class Rule:
    def __init__(self, kind, key, threshold, above, band):
        self.kind = kind            # the alarm's name, e.g. "load_95"
        self.key = key              # the reading's value it watches
        self.threshold = threshold
        self.above = above          # True: alarm above the threshold; False: below
        self.band = band            # hysteresis, in the value's unit
        self.since = None           # (s, ms) of the reading the condition started to hold
        self.active = False
        self.worst = None

    def tripped(self, x):
        return x >= self.threshold if self.above else x <= self.threshold

    def cleared(self, x):
        return (x < self.threshold - self.band if self.above
                else x > self.threshold + self.band)


def rules(cfg):
    """The rules the configuration asks for (none with the defaults)."""
    out = []
    hyst = cfg["alarm_hysteresis_pct"] / 100.0
    rated = cfg["rated_a"]
    if rated > 0:
        band = rated * hyst
        out.append(Rule("load_80", "irms", 0.8 * rated, True, band))
        out.append(Rule("load_95", "irms", 0.95 * rated, True, band))
        out.append(Rule("no_load", "irms", rated * NO_LOAD_PCT / 100.0, False, band))
    if cfg["demand_alarm_w"] > 0:
        w = cfg["demand_alarm_w"]
        out.append(Rule("demand_high", "demand_w", w, True, w * hyst))
    if cfg["f_alarm_pct"] > 0:
        f, dev = cfg["frequency"], cfg["f_alarm_pct"] / 100.0
        band = f * min(hyst, dev / 2)
        out.append(Rule("f_high", "f", f * (1 + dev), True, band))
        out.append(Rule("f_low", "f", f * (1 - dev), False, band))
    return out


class Alarms:
    def __init__(self, cfg, previous=None):
        """previous: the Alarms before a threshold change; an alarm still on carries over
        (so its end is still reported), one whose rule is gone ends at the next check."""
        self.delay_s = cfg["alarm_delay_s"]
        self.rules = rules(cfg)
        self.ending = []
        if previous is not None:
            kept = {r.kind: r for r in self.rules}
            for old in previous.rules:
                new = kept.get(old.kind)
                if new is not None:
                    new.since, new.active, new.worst = old.since, old.active, old.worst
                elif old.active:
                    self.ending.append(old)

    def check(self, reading):
        """Records (dicts with "type": "alarm") for the alarms that start or end with this
        reading. Times are the reading's wall time as the App stamps it: whole seconds `t`
        and `t_ms` (ints: no float can hold a Unix time to the ms on a board)."""
        out = []
        t = reading["t"]
        at = (t, reading.get("t_ms", 0))
        for r in self.ending:       # its rule was switched off: it ends here
            out.append(_end(r, at, t))
        self.ending = []
        for r in self.rules:
            x = reading.get(r.key)
            if x is None:               # no frequency (no crossings), no demand yet
                continue
            if not r.active:
                if not r.tripped(x):
                    r.since = None
                    continue
                if r.since is None:
                    r.since = at
                    r.worst = x
                r.worst = max(r.worst, x) if r.above else min(r.worst, x)
                if t - r.since[0] >= self.delay_s:
                    r.active = True
                    out.append({"type": "alarm", "kind": r.kind, "state": "start",
                                "start_s": r.since[0], "start_ms": r.since[1], "value": x,
                                "threshold": r.threshold})
            else:
                r.worst = max(r.worst, x) if r.above else min(r.worst, x)
                if r.cleared(x):
                    out.append(_end(r, at, t))
                    r.active, r.since = False, None
        return out

    def active(self):
        return [r.kind for r in self.rules if r.active]


def _end(r, at, t):
    return {"type": "alarm", "kind": r.kind, "state": "end", "start_s": r.since[0],
            "start_ms": r.since[1], "end_s": at[0], "end_ms": at[1],
            "duration_s": t - r.since[0], "worst": r.worst, "threshold": r.threshold}
