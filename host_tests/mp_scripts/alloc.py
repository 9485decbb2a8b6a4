# Heap use of steady-state metering, under the MicroPython unix port (needs gc.mem_alloc).
#   alloc.py < JSON [{"name", "cycles", "warmup_s", "scenario": {SimBoard scenario}}, ...]
# prints one JSON line per case: bytes allocated by Meter.feed over `cycles` cycles (gc
# disabled), readings closed meanwhile, and what one Reporter.take() then allocates.
#
# Samples are generated before measuring: one second of whole cycles, a whole number of
# blocks, so looping over it is seamless. The scenario's frequency must be exact for that.

import array
import gc
import json
import sys

import config
import kernel as K
import metering
import reading

from boards.sim_board import SimBoard

BLOCK = 32


def blocks(board, seconds):
    n = int(seconds * board.sample_rate)
    assert n % BLOCK == 0 and (n * board.frequency) % board.sample_rate == 0
    out = []
    for _ in range(n // BLOCK):
        vb = array.array("H", [0] * BLOCK)
        ib = array.array("H", [0] * BLOCK)
        board.read(vb, ib)
        out.append((vb, ib))
    return [b[0] for b in out], [b[1] for b in out]


def feed(meter, vbs, ibs, count):
    j = 0
    nb = len(vbs)
    while count > 0:
        meter.feed(vbs[j], ibs[j], BLOCK)
        j += 1
        if j == nb:
            j = 0
        count -= 1


def run_case(case):
    sc = case["scenario"]
    board = SimBoard(sc)
    extra = sc.get("config", {})
    cfg = config.validate(dict({"frequency": sc["frequency"], "nominal_v": sc["nominal_v"]},
                               **extra))
    meter = metering.Meter(cfg, board)
    seen = []   # PQ events (a steady case has none)
    meter.on_event = seen.append
    reporter = reading.Reporter(meter, cfg["demand_block_s"])
    vbs, ibs = blocks(board, 1.0)
    per_second = len(vbs)
    feed(meter, vbs, ibs, int(case["warmup_s"] * per_second))
    reporter.take()
    count = int(case["cycles"] * sc["samples_per_cycle"]) // BLOCK
    overwritten = meter.readings_merged
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    feed(meter, vbs, ibs, count)
    used = gc.mem_alloc() - before
    gc.enable()
    readings = meter.readings_merged - overwritten + (1 if meter.ready else 0)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    r = reporter.take()
    take = gc.mem_alloc() - before
    gc.enable()
    return {"name": case["name"], "bytes": used, "cycles": count * BLOCK / sc["samples_per_cycle"],
            "readings": readings, "take_bytes": take, "reading": r,
            "forced": meter.st[K.FORCED], "events": len(seen)}


def main():
    for case in json.loads(sys.stdin.read()):
        sys.stdout.write(json.dumps(run_case(case)))
        sys.stdout.write("\n")


main()
