# Voltage dips, swells and interruptions per IEC 61000-4-30, from Urms(1/2).
#
# update() runs every half cycle with the mean square of the last full cycle in ADC
# counts squared (an int). Thresholds are precomputed as mean squares, so the steady
# state is integer comparisons only. Records are built only when an event starts or ends.
#
# A dip starts when Urms(1/2) < dip threshold and ends when Urms(1/2) >= dip threshold +
# hysteresis (swells mirror this). Interruptions are evaluated on their own thresholds, as
# IEC 61000-4-30 does: one starts when Urms(1/2) < interruption threshold and ends when it is
# >= that threshold + hysteresis. A dip that falls that low therefore holds an interruption:
# the interruption is reported when it ends, and the dip (its residual the interruption's)
# when it ends, so every event_start said has its event.

import math

NONE = 0
DIP = 1
SWELL = 2


def _ms(pct, declared_counts):
    x = pct / 100.0 * declared_counts
    return int(x * x)


def ieee1159_category(kind, seconds, cycles):
    if kind != "interruption" and cycles < 30:
        return "instantaneous"
    if seconds <= 3.0:
        return "momentary"
    if seconds <= 60.0:
        return "temporary"
    return "sustained"


class EventDetector:
    def __init__(self, declared_v, v_gain, sample_period, frequency, dip_pct=90.0,
                 swell_pct=110.0, interruption_pct=10.0, hysteresis_pct=2.0, clock=None,
                 notify=None):
        self.declared_v = declared_v
        self.v_gain = v_gain
        self.ts = sample_period
        self.frequency = frequency
        declared_counts = declared_v / v_gain
        self.dip_start = _ms(dip_pct, declared_counts)
        self.dip_end = _ms(dip_pct + hysteresis_pct, declared_counts)
        self.swell_start = _ms(swell_pct, declared_counts)
        self.swell_end = _ms(swell_pct - hysteresis_pct, declared_counts)
        self.intr_start = _ms(interruption_pct, declared_counts)
        self.intr_end = _ms(interruption_pct + hysteresis_pct, declared_counts)
        self.notify = notify
        self.clock = clock
        self.state = NONE
        self.in_intr = False
        self.extreme = 0
        self.intr_extreme = 0
        self.start = 0
        self.intr_from = 0
        self.count = 0
        self.said_start = 0  # sample number of the start in the record last said (an int)
        self.incomplete = False

    def update(self, msq):
        """msq: Urms(1/2) mean square (counts^2). Asks self.clock.now() (the window-end time
        in samples) only when an event starts or ends."""
        st = self.state
        if st == NONE:
            if msq < self.dip_start:
                self._begin(DIP, msq, self.clock.now())
                if msq < self.intr_start:
                    self._intr_begin(msq, self.start)
            elif msq > self.swell_start:
                self._begin(SWELL, msq, self.clock.now())
        elif st == DIP:
            if msq < self.extreme:
                self.extreme = msq
            if self.in_intr:
                if msq < self.intr_extreme:
                    self.intr_extreme = msq
                elif msq >= self.intr_end:
                    self._intr_finish(self.clock.now())
            elif msq < self.intr_start:
                self._intr_begin(msq, self.clock.now())
            if msq >= self.dip_end:
                self._finish(self.clock.now())
        else:
            if msq > self.extreme:
                self.extreme = msq
            if msq <= self.swell_end:
                self._finish(self.clock.now())

    def finish(self):
        """End of input: report an event still in progress (an interruption, then the dip
        that holds it), marked incomplete."""
        if self.state != NONE:
            self.incomplete = True
            now = self.clock.now()
            if self.in_intr:
                self._intr_finish(now)
            self._finish(now)
            self.incomplete = False

    def _begin(self, kind, msq, now):
        self.state = kind
        self.extreme = msq
        self.start = now
        self.in_intr = False
        self.said_start = now
        self._say({"type": "event_start", "kind": "dip" if kind == DIP else "swell",
                   "start_s": now * self.ts})

    def _intr_begin(self, msq, now):
        self.in_intr = True
        self.intr_from = now
        self.intr_extreme = msq
        self.said_start = now
        self._say({"type": "event_start", "kind": "interruption", "start_s": now * self.ts})

    def _intr_finish(self, now):
        self.in_intr = False
        self._record("interruption", self.intr_from, now, self.intr_extreme)

    def _finish(self, now):
        kind = "swell" if self.state == SWELL else "dip"
        self.state = NONE
        self._record(kind, self.start, now, self.extreme)

    def _record(self, kind, start, now, extreme):
        seconds = (now - start) * self.ts
        v = math.sqrt(extreme) * self.v_gain
        self.count += 1
        record = {
            "type": "event",
            "kind": kind,
            "start_s": start * self.ts,
            "duration_ms": seconds * 1000.0,
            "residual_v": v,
            "extreme_pct": 100.0 * v / self.declared_v,
            "category": ieee1159_category(kind, seconds, seconds * self.frequency),
        }
        if self.incomplete:
            record["incomplete"] = True
        self.said_start = start
        self._say(record)

    def _say(self, record):
        if self.notify is not None:
            self.notify(record)
