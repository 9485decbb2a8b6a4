# Pulse inputs on fake pin IRQs (host_tests/fakes/machine.py) and the pulse registers, under
# MicroPython and CPython; host_tests/test_pulses.py checks the JSON this prints.
#   pulse_inputs.py STATE_DIR

import gc
import json
import os
import sys

import config
import machine  # the fake
from pulses import PulseCounter

from boards.pulse_input import PulseInput

OUT = {}
PIN = [10]


def wait(us):
    machine.now[0] = (machine.now[0] + us) & machine.TICKS_MASK


def press(inp, width_us, gap_us, bounce=0, bounce_us=300):
    """One pulse (active low): closing and opening each bounce `bounce` extra times."""
    pin = inp.pin
    pin.drive(0)
    for _ in range(bounce):
        wait(bounce_us)
        pin.drive(1)
        wait(bounce_us)
        pin.drive(0)
    wait(width_us)
    pin.drive(1)
    for _ in range(bounce):
        wait(bounce_us)
        pin.drive(0)
        wait(bounce_us)
        pin.drive(1)
    wait(gap_us)


def new_input(debounce_us=20000):
    PIN[0] += 1
    return PulseInput(PIN[0], debounce_us, ticks=machine.fake_ticks_us)


def clean_and_bouncing():
    inp = new_input()
    for _ in range(10):
        press(inp, 40000, 60000)
    OUT["clean"] = [inp.take(), inp.bounces(), inp.take()]
    inp = new_input()
    for _ in range(25):
        press(inp, 40000, 60000, bounce=5)     # 5 bounces closing, 5 opening, 0.3 ms apart
    OUT["bouncing"] = [inp.take(), inp.bounces()]
    # a contact chattering every 0.5 ms for 0.5 s, then still: at most its onset counts
    inp = new_input()
    for _ in range(500):
        wait(500)
        inp.pin.drive(1 - inp.pin.value())
    OUT["chatter"] = inp.take()
    # stuck active: no edges after the first, nothing more counted however long
    inp = new_input()
    inp.pin.drive(0)
    wait(10 ** 8)
    OUT["stuck"] = [inp.take(), inp.take()]
    OUT["irq_left_on"] = machine.irq_state[0] == 0


def allocation():
    inp = new_input(1000)
    press(inp, 3000, 3000)               # warm up
    mem = getattr(gc, "mem_alloc", None)
    if mem is None:
        OUT["irq_alloc"] = None          # CPython: not measurable
        return
    gc.collect()
    before = mem()
    for _ in range(200):
        press(inp, 3000, 3000, bounce=2, bounce_us=100)
    OUT["irq_alloc"] = mem() - before
    OUT["alloc_counted"] = inp.take()


class Fixed:
    """An input whose pulses the test sets (the counter's side of take())."""
    def __init__(self):
        self.n = 0

    def take(self):
        n, self.n = self.n, 0
        return n

    def bounces(self):
        return 0


def registers(state):
    cfg = config.validate({"pulse_pins": "4,5", "pulse_mwh": 1250, "persist_s": 60,
                           "pulse_report_s": 900})
    path = state + "/pulses"
    a, b = Fixed(), Fixed()
    c = PulseCounter([a, b], cfg, path)
    t = 1796000000 - 1796000000 % 900 + 1      # a second after a report time
    reports = []
    for k in range(1000):                      # 1000 s, 3 pulses/s on a, 1 on b
        a.n, b.n = 3, 1
        reports += c.check({"t": t + k, "t_ms": 0})
    OUT["reports"] = [[r["t"] - t, r["pulses"], r["mwh"]] for r in reports]
    OUT["live"] = c.values()
    # the power cut: what a restart finds is the last save, never more, never garbage
    OUT["restart"] = PulseCounter([Fixed(), Fixed()], cfg, path).values()
    again = PulseCounter([Fixed(), Fixed()], cfg, path).values()["pulses"]
    OUT["reported_then_restart"] = all(r <= g for r, g in zip(reports[-1]["pulses"], again))
    # a damaged newest slot: the one before it
    c2 = PulseCounter([Fixed(), Fixed()], cfg, path)
    newest = "%s.%d" % (path, c2.gen % 2)
    with open(newest, "r+b") as f:
        f.seek(12)
        f.write(b"\xff\xff")
    c3 = PulseCounter([Fixed(), Fixed()], cfg, path)
    OUT["damaged"] = [c3.damaged, c3.values()["pulses"]]
    # exact at scale: 10**6 pulses of 1.25 Wh = 1250 kWh to the mWh
    big = PulseCounter([Fixed()], cfg, state + "/big")
    big.inputs[0].n = 10 ** 6
    big.take()
    OUT["big"] = [big.energy[0].kwh, big.energy[0].mwh, big.values()["mwh"][0]]


def main(argv):
    os.mkdir(argv[0]) if not _exists(argv[0]) else None
    clean_and_bouncing()
    allocation()
    registers(argv[0])
    try:
        config.validate({"pulse_pins": "4,4"})
        OUT["bad_pins"] = None
    except ValueError as exc:
        OUT["bad_pins"] = str(exc)
    print(json.dumps(OUT))


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


main(sys.argv[1:])
