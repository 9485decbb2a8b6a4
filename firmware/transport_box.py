# A transport box (docs/pulses.md): pulse inputs only, no CT or PT. It counts a legacy
# meter's pulses (pulses.py) and pushes its registers on the pulse_report_s schedule over
# the same back channel, outbox and ops as a meter: the App with a clock tick in place of the
# sampling loop (config pulse_only; main.py picks it with boards.pulse_input.PulseOnlyBoard).

from app import App
from mpshim import asleep_ms


class TransportBox(App):
    TICK_MS = 1000      # the pulse registers are looked at once a second

    def __init__(self, board, cfg, state_dir, config_path=None, realtime=True):
        if not cfg["pulse_pins"]:
            raise ValueError("pulse_only needs pulse_pins: a transport box counts pulses")
        App.__init__(self, board, cfg, state_dir, config_path, realtime)
        self.watchers = [self.pulses]     # no readings of V and I: no alarms, no shedding

    async def metering(self):
        """Once a second on the wall clock: the pulse counter's check (its saves and its
        `pulses` items); `read` shows the registers."""
        while not (self.reboot_now or self.stopping):
            self.meter_beat.beat()
            ms = self.clock.now_ms()
            tick = {"t": ms // 1000, "t_ms": ms % 1000}
            for watcher in self.watchers:
                for record in watcher.check(tick):
                    self._push(record)
            self.last_reading = {"t": tick["t"], "t_ms": tick["t_ms"],
                                 "pulses": self.pulses.values()}
            await asleep_ms(self.TICK_MS - ms % self.TICK_MS)
