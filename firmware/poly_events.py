# Polyphase dips, swells and interruptions (IEC 61000-4-30, 5.4): from each phase's events
# (pq.EventDetector per element, tagged with its phase by polyphase.py).
#
#   dip:  begins when one or more channels are below the dip threshold, ends when every
#         channel is at or above threshold + hysteresis; residual is the lowest of any channel
#   swell: mirrors it (the highest of any channel)
#   interruption: begins when every channel is below the interruption threshold, ends when
#         any channel is at or above it + hysteresis
#
# Each phase's own events pass on unchanged (with "phase"); the polyphase event follows with
# "phase": "poly" and "phases", the channels it involved. A phase's dip that fell to an
# interruption is inside that phase's dip, so dips are followed through the dip records
# only. Runs per event, never per sample.

import pq


class PolyEvents:
    def __init__(self, notify, phases, declared_v, frequency):
        self.notify = notify
        self.phases = phases              # names, e.g. ("a", "b", "c")
        self.declared_v = declared_v
        self.frequency = frequency
        self.open = {"dip": {}, "swell": {}, "interruption": {}}  # phase -> start_s
        self.run = {}   # kind -> [start_s, extreme_v, phases involved, incomplete]

    def __call__(self, record):
        n = record.get("_n")
        self.notify(record)
        phase = record.get("phase")
        kind = record.get("kind")
        if phase is None or kind not in self.open:
            return
        opened = self.open[kind]
        if record["type"] == "event_start":
            opened[phase] = record["start_s"]
            self._started(kind, phase, record["start_s"], n)
        elif record["type"] == "event":
            opened.pop(phase, None)
            self._ended(kind, phase, record)

    def _say_start(self, kind, start_s, n):
        self.notify({"type": "event_start", "kind": kind, "start_s": start_s, "phase": "poly",
                     "_n": n})

    def _started(self, kind, phase, start_s, n):
        opened = self.open[kind]
        if kind == "interruption":
            if len(opened) == len(self.phases) and kind not in self.run:
                # every channel is now interrupted: it began with the last of them
                self.run[kind] = [start_s, None, "".join(self.phases), False, n]
                self._say_start(kind, start_s, n)
            return
        run = self.run.get(kind)
        if run is None:
            self.run[kind] = [start_s, None, phase, False, n]
            self._say_start(kind, start_s, n)
        elif phase not in run[2]:
            run[2] += phase

    def _ended(self, kind, phase, record):
        run = self.run.get(kind)
        if run is None:
            return
        v = record["residual_v"]
        if run[1] is None or (v > run[1] if kind == "swell" else v < run[1]):
            run[1] = v
        run[3] = run[3] or record.get("incomplete", False)
        end_s = record["start_s"] + record["duration_ms"] / 1000.0
        if kind == "interruption":
            # ends when any channel recovers: the first to end (and its residual, as the
            # others' are not known until they end)
            del self.run[kind]
            self._record(kind, run, end_s)
            return
        if self.open[kind]:
            return  # another channel is still in the event
        del self.run[kind]
        self._record(kind, run, end_s)

    def _record(self, kind, run, end_s):
        start, v, phases, incomplete, n = run
        seconds = end_s - start
        rec = {"type": "event", "kind": kind, "start_s": start, "duration_ms": seconds * 1000.0,
               "residual_v": v, "extreme_pct": 100.0 * v / self.declared_v,
               "category": pq.ieee1159_category(kind, seconds, seconds * self.frequency),
               "phase": "poly", "phases": "".join(p for p in self.phases if p in phases),
               "_n": n}
        if incomplete:
            rec["incomplete"] = True
        self.notify(rec)
