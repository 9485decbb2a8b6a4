# Pulse inputs through the App, on the fake machine (host_tests/fakes): a meter with
# pulse_pins counts pulses driven on its pins while it meters 12 s of the simulated load (not
# in real time), pushes a `pulses` item on the 10-s grid, shows them in `read`, saves them on
# a clean stop, and a restart reads them back. A meter without pulse_pins never imports them.
#   pulse_app.py STATE_DIR

import asyncio
import json
import os
import sys

import config
import machine  # the fake
from app import App

from boards.pulse_input import make_inputs
from boards.sim_board import DEFAULT_SCENARIO, SimBoard


class Seconds:
    """The simulated board for `seconds` of signal; drives `pulses` on pin 4 before each
    block (edges 30 ms apart on the fake clock: a clean pulse train)."""

    def __init__(self, seconds, pulses=0):
        self.board = SimBoard(DEFAULT_SCENARIO)
        self.sample_rate = self.board.sample_rate
        self.left = int(seconds * self.sample_rate)
        self.pulses = pulses
        for name in ("channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid"):
            setattr(self, name, getattr(self.board, name))

    def pulse_inputs(self, pins, debounce_us):
        # the board contract's hook: its inputs on the fake clock the edges are driven by
        return make_inputs(pins, debounce_us, ticks=machine.fake_ticks_us)

    def read(self, vb, ib):
        if self.pulses > 0 and 4 in machine.Pin.instances:
            pin = machine.Pin.instances[4]
            for level in (0, 1):
                machine.now[0] += 30000
                pin.drive(level)
            self.pulses -= 1
        n = min(self.board.read(vb, ib), self.left) if self.left > 0 else 0
        self.left -= n
        return n


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def main(argv):
    out = {}
    _mkdir(argv[0])
    _mkdir(argv[0] + "-plain")
    plain = App(Seconds(0), config.validate({"device_id": "m"}), argv[0] + "-plain",
                realtime=False)
    out["plain_imports"] = [m for m in ("pulses",) if m in sys.modules]
    out["plain_read"] = "pulses" in plain.status_reading()
    cfg = config.validate({"device_id": "m", "pulse_pins": "4,5", "pulse_mwh": 500,
                           "pulse_report_s": 10})
    app = App(Seconds(12, pulses=40), cfg, argv[0], realtime=False)
    asyncio.run(app.metering())
    items = [i["body"] for i in app.outbox.peek(256, 1 << 20) if i["kind"] == "pulses"]
    out["items"] = [[i["pulses"], i["mwh"]] for i in items]
    out["read"] = app.status_reading()["pulses"]
    app.save_energy()                        # a clean stop
    again = App(Seconds(0), cfg, argv[0], realtime=False)
    out["restart"] = again.status_reading()["pulses"]
    print(json.dumps(out))


main(sys.argv[1:])
