# A transport box (docs/pulses.md): pulse inputs only, no CT or PT. It counts a legacy
# meter's pulses (pulses.py) and pushes its registers on the pulse_report_s schedule over
# the same back channel, outbox and ops as a meter. Config pulse_only: main.py builds the
# App on boards.pulse_input.PulseOnlyBoard, and the App runs this tick in place of its
# sampling loop (App.tick).


from mpshim import asleep_ms


class PulseTick:
    TICK_MS = 1000      # the pulse registers are looked at once a second

    def __init__(self, app):
        if app.pulses is None:
            raise ValueError("pulse_only needs pulse_pins: a transport box counts pulses")
        self.app = app
        # no readings of V and I: no alarms, no shedding; a guarded change on trial still
        # ends on time (trial.py)
        app.watchers = [w for w in app.watchers if w is app.pulses or w is app.trial]

    async def run(self):
        """Once a second on the wall clock: the pulse counter's check (its saves and its
        `pulses` items); `read` shows the registers."""
        app = self.app
        while not (app.reboot_now or app.stopping):
            app.meter_beat.beat()
            ms = app.clock.now_ms()
            tick = {"t": ms // 1000, "t_ms": ms % 1000}
            for watcher in app.watchers:
                for record in watcher.check(tick):
                    app.push(record)
            app.last_reading = {"t": tick["t"], "t_ms": tick["t_ms"],
                                "pulses": app.pulses.values()}
            await asleep_ms(self.TICK_MS - ms % self.TICK_MS)
