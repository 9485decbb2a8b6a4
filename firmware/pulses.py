# Pulse registers (docs/pulses.md): per pulse input (boards/pulse_input.py), the pulses
# counted and the energy they stand for, as exact ints (energy.Register in mWh, pulse_mwh a
# pulse), saved write-then-rename into two alternating slots, and pushed to the head-end as
# a `pulses` item every pulse_report_s (a "transport box": a legacy meter's pulses read out
# on a schedule).
#
# Run once a reading (PulseCounter.check, an App watcher): take each input's count (never in
# the IRQ), add it, save when persist_s has passed, report when pulse_report_s has. A power cut
# loses at most the pulses since the last save; a damaged newest slot leaves the one before.

import json

import store
from energy import Register

MAX_INPUTS = 8


class PulseCounter:
    def __init__(self, inputs, cfg, path):
        if not 1 <= len(inputs) <= MAX_INPUTS:
            raise ValueError("pulse_pins: 1..%d inputs" % MAX_INPUTS)
        self.inputs = inputs
        self.path = path
        self.mwh_per_pulse = cfg["pulse_mwh"]
        self.report_s = cfg["pulse_report_s"]
        self.persist_s = cfg["persist_s"]
        self.pulses = [0] * len(inputs)             # pulses counted, per input
        self.energy = [Register(1) for _ in inputs]  # mWh, per input
        self.gen = 0
        self.damaged = 0
        self.saved_at = None        # wall s of the last save (or of the life's start)
        self.unsaved = 0            # pulses counted since the last save
        self.next_report = None
        self.load()

    def load(self):
        gen, payload, self.damaged = store.read_latest_generation(self.path)
        if gen is None:
            return
        self.gen = gen
        try:
            kept = json.loads(payload)
            pulses, energy = kept["pulses"], kept["mwh"]
            for k in range(min(len(self.inputs), len(pulses))):
                if isinstance(pulses[k], int) and pulses[k] >= 0:
                    self.pulses[k] = pulses[k]
                    self.energy[k].restore(energy[k])
        except (ValueError, KeyError, TypeError, IndexError):
            self.damaged += 1

    def save(self):
        self.unsaved = 0
        self.gen += 1
        store.write_generation(self.path, self.gen, json.dumps(
            {"pulses": self.pulses, "mwh": [r.state() for r in self.energy]}).encode())

    def take(self):
        """Move each input's new pulses into its registers (ints, no float)."""
        moved = 0
        for k, inp in enumerate(self.inputs):
            n = inp.take()
            if n > 0:
                self.pulses[k] += n
                self.energy[k].add_mwh(n * self.mwh_per_pulse)
                moved += n
        return moved

    def values(self):
        return {"pulses": list(self.pulses), "mwh": [r.total_mwh() for r in self.energy]}

    def check(self, reading):
        """Once a reading: count, save when due, and a `pulses` record when its time comes
        (saved first: a value reported never goes back after a power cut)."""
        t = reading["t"]
        self.unsaved += self.take()
        if self.saved_at is None:
            self.saved_at = t
        if self.next_report is None:
            self.next_report = (t // self.report_s + 1) * self.report_s   # on a grid
        report = t >= self.next_report
        if self.unsaved and (report or t - self.saved_at >= self.persist_s):
            self.save()
            self.saved_at = t
        if not report:
            return []
        self.next_report = (t // self.report_s + 1) * self.report_s
        out = {"type": "pulses", "t": t, "t_ms": reading.get("t_ms", 0),
               "bounces": [inp.bounces() for inp in self.inputs]}
        out.update(self.values())
        return [out]

    def stop(self):
        """A clean stop: count what came and save."""
        self.take()
        self.save()
