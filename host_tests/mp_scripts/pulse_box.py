# A transport box (config pulse_only: the App with firmware/transport_box.py's tick) on
# the fake machine: pulse inputs only, no CT or PT. 35 s on a fake wall clock, 2 clean
# pulses a second on pin 4 and a bouncing one on
# pin 5; pushes a `pulses` item on the 10-s grid; then a power cut 7 s after the last save
# and a restart. For host_tests/test_pulses.py.
#   pulse_box.py STATE_DIR

import asyncio
import json
import os
import sys

import config
import machine  # the fake
from app import App

from boards.pulse_input import PulseOnlyBoard, make_inputs

T0 = 1796000000 - 1796000000 % 10 + 5      # 5 s past a 10-s grid point


class Clock:
    def __init__(self):
        self.ms = T0 * 1000

    def now_ms(self):
        return self.ms

    def now(self):
        return self.ms // 1000


class Board(PulseOnlyBoard):
    def pulse_inputs(self, pins, debounce_us):
        return make_inputs(pins, debounce_us, ticks=machine.fake_ticks_us)


class Driver:
    """Drives a second of pulses before each check, and stops the box after `seconds`."""

    def __init__(self, box, seconds):
        self.box, self.left = box, seconds

    def check(self, tick):
        a, b = machine.Pin.instances[4], machine.Pin.instances[5]
        for _ in range(2):
            for level in (0, 1):
                machine.now[0] += 100000
                a.drive(level)
        for level in (0, 1, 0, 1, 0, 1):        # one pulse bouncing twice, 0.2 ms apart
            machine.now[0] += 200
            b.drive(level)
        machine.now[0] += 100000
        self.box.clock.ms += 1000
        self.left -= 1
        if self.left <= 0:
            self.box.stopping = True
        return []


def life(state, cfg, seconds, clock):
    box = App(Board(), cfg, state, realtime=False)
    box.clock = clock
    box.tick.TICK_MS = 1     # the fake clock moves a second a tick
    box.watchers.insert(0, Driver(box, seconds))
    asyncio.run(box.tick.run())
    return box


def main(argv):
    try:
        os.mkdir(argv[0])
    except OSError:
        pass
    out = {}
    try:
        config.validate({"pulse_only": True})
        out["refused"] = None
    except ValueError as exc:
        out["refused"] = str(exc)
    cfg = config.validate({"device_id": "box", "pulse_only": True, "pulse_pins": "4,5",
                           "pulse_mwh": 2000, "pulse_report_s": 10, "persist_s": 60})
    clock = Clock()
    box = life(argv[0], cfg, 35, clock)
    items = [i["body"] for i in box.outbox.peek(64, 1 << 20) if i["kind"] == "pulses"]
    out["items"] = [[i["t"] - T0, i["pulses"], i["mwh"]] for i in items]
    out["read"] = box.status_reading()["pulses"]
    out["modules"] = [m for m in ("alarms", "shedding", "billing") if m in sys.modules]
    # the power cut (no final save), then a restart a second later
    clock.ms += 1000
    again = App(Board(), cfg, argv[0], realtime=False)
    out["restart"] = again.status_reading()["pulses"]
    print(json.dumps(out))


main(sys.argv[1:])
