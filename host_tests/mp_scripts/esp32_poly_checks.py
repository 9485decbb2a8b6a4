# boards/esp32_poly.py on the fake hardware (host_tests/fakes), for test_esp32_poly.py.
#   esp32_poly_checks.py ROOT   prints one JSON document.

import array
import json
import sys

import machine  # the fake

from boards import esp32_poly as bp

ROOT = sys.argv[1]
CFG = ROOT + "/boards/boards.json"
PINS_3P4W = {"v_pins": [36, 39, 32], "i_pins": [33, 34, 35]}


def board(**kw):
    machine.reset()
    orig = machine.ADC.__init__

    def init(self, pin, atten=None):
        orig(self, pin, atten)
        self.feed([(self.pin * 100 + k) % 4096 for k in range(4096)])   # each pin its ramp

    machine.ADC.__init__ = init
    try:
        return bp.Esp32PolyBoard(path=CFG, ticks=machine.fake_ticks_us, **kw)
    finally:
        machine.ADC.__init__ = orig


def outcome(fn):
    try:
        fn()
        return "ok"
    except bp.BoardError as e:
        return str(e)


def collect(b, sizes):
    out = [[] for _ in range(b.channels)]
    for n in sizes:
        bufs = [array.array("H", [0] * n) for _ in range(b.channels)]
        assert b.read(bufs) == n
        for ch in range(b.channels):
            out[ch].extend(bufs[ch])
    return out


def steps(values):
    return sorted(set((values[k + 1] - values[k]) % 4096 for k in range(len(values) - 1)))


def alloc(b):
    import gc

    if not hasattr(gc, "mem_alloc"):
        return None
    bufs = [array.array("H", [0] * 128) for _ in range(b.channels)]
    small = [array.array("H", [0] * 100) for _ in range(b.channels)]
    for _ in range(10):
        b.read(bufs)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for k in range(100):
        b.read(small if k % 3 == 0 else bufs)
    used = gc.mem_alloc() - before
    gc.enable()
    return used


out = {}
b = board(**PINS_3P4W)
out["3p4w"] = {"channels": b.channels, "nv": b.nv, "order": b.order,
               "offsets_us": [round(x * 1e6, 3) for x in b.channel_offsets_s],
               "delay_us": round(b.channel_delay_s * 1e6, 3), "rate": b.sample_rate,
               "gains": len(b.v_gains) + len(b.i_gains), "cal": b.cal_sources}
data = collect(b, [128, 100, 28, 200, 1, 127])
out["3p4w"]["steps"] = [steps(d) for d in data]
# every ADC was read as often: a channel's ramp is ahead of va's by (pin - 36) * 100
out["3p4w"]["ahead"] = [(d[0] - data[0][0]) % 4096 for d in data]
out["3p4w"]["alloc"] = alloc(b)
b.deinit()
b = board(v_pins=[36], i_pins=[39, 32, 33, 34, 35])
out["1v5ct"] = {"channels": b.channels, "order": b.order,
                "offsets_us": [round(x * 1e6, 3) for x in b.channel_offsets_s]}
b.deinit()
out["refused"] = {
    "adc2": outcome(lambda: board(v_pins=[36], i_pins=[25])),
    "seven": outcome(lambda: board(v_pins=[36], i_pins=[39, 32, 33, 34, 35, 37])),
    "twice": outcome(lambda: board(v_pins=[36, 39], i_pins=[36, 32])),
    "unpaired": outcome(lambda: board(v_pins=[36, 39, 32], i_pins=[33, 34])),
    "none": outcome(lambda: board(v_pins=[], i_pins=[33])),
}
machine.reset()
print(json.dumps(out))
