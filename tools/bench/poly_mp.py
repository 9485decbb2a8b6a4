# Per-configuration metering cost (issue 14, item 1), launched by make bench
# (bench/poly.py) under each interpreter: 1p2w, 3p4w, 3p3w and one voltage with five
# circuits, THD off (harmonic_order 1) and on (the highest order 64 samples per cycle
# support), and with IEC 61000-4-7 groups and subgroups (harmonic_groups) to that order.
# Prints one JSON line: per configuration, ns per frame (one sample of every channel), heap
# allocated per cycle in steady state, and the heap the meter holds.
#
#   micropython tools/bench/poly_mp.py [seconds]
#
# One second of frames (a whole number of 50 Hz cycles) is generated before timing.

import array
import gc
import json
import math
import sys
import time

import config
import metering
import polyphase

BLOCK = 128
SPC = 64
RATE = 50 * SPC
MP = sys.implementation.name == "micropython"
CONFIGS = (("1p2w", {}), ("3p4w", {"wiring": "3p4w"}), ("3p3w", {"wiring": "3p3w"}),
           ("1v+5ct", {"wiring": "1vnct", "circuits": 5}))


class Board:
    sample_rate = float(RATE)
    channel_delay_s = 0.0
    v_gain = 230 * 1.4142 * 1.3 / 2047
    i_gain = 100.0 / 2048
    v_mid = 2048
    i_mid = 2048
    channels = 6


def frames(nv, ni):
    """One second of blocks: [[array('H') per channel] per block]."""
    out = []
    for b in range(RATE // BLOCK):
        chans = []
        for j in range(nv + ni):
            a = array.array("H", [0] * BLOCK)
            ang = -2.0944 * (j % 3)
            amp = 1550 if j < nv else 400 + 100 * j
            lag = 0 if j < nv else 0.5
            for k in range(BLOCK):
                t = (b * BLOCK + k) / RATE
                a[k] = 2048 + int(amp * math.sin(2 * math.pi * 50 * t + ang - lag))
            chans.append(a)
        out.append(chans)
    return out


def held(make):
    if not MP:
        return None
    gc.collect()
    before = gc.mem_alloc()
    obj = make()
    gc.collect()
    return obj, gc.mem_alloc() - before


def build(cfg):
    c = config.validate(cfg)
    if c["wiring"] == "1p2w":
        return metering.Meter(c, Board())
    return polyphase.PolyMeter(c, Board())


def feeder(meter, single):
    if single:
        return lambda chans, n: meter.feed(chans[0], chans[1], n)
    return meter.feed


def one(name, cfg, seconds):
    made = held(lambda: build(cfg))
    meter, held_b = made if made else (build(cfg), None)
    single = cfg.get("wiring", "1p2w") == "1p2w"
    nv = 1 if single else polyphase.layout(config.validate(cfg))[1]
    ni = 1 if single else len(polyphase.layout(config.validate(cfg))[0])
    blocks = frames(nv, ni)
    feed = feeder(meter, single)
    for _ in range(3):  # warm up: offsets settle, readings close
        for chans in blocks:
            feed(chans, BLOCK)
    best = None
    for _ in range(3):
        gc.collect()
        t0 = time.time_ns()
        for _ in range(seconds):
            for chans in blocks:
                feed(chans, BLOCK)
        ns = (time.time_ns() - t0) / (seconds * RATE)
        best = ns if best is None or ns < best else best
    per_cycle = None
    if MP:
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for chans in blocks:
            feed(chans, BLOCK)
        per_cycle = (gc.mem_alloc() - before) / 50
        gc.enable()
    return {"config": name, "channels": nv + ni, "ns_per_frame": best,
            "heap_b_per_cycle": per_cycle, "held_b": held_b}


def main(argv):
    seconds = int(argv[0]) if argv else 2
    out = []
    for name, cfg in CONFIGS:
        for order, groups in ((1, False), (0, False), (0, True)):
            if groups and name == "3p3w":
                continue
            c = dict(cfg)
            c["harmonic_order"] = order
            c["harmonic_groups"] = groups
            r = one(name, c, seconds)
            r["thd"] = order == 0
            r["groups"] = groups
            out.append(r)
    sys.stdout.write(json.dumps({"implementation": sys.implementation.name, "rows": out}))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
