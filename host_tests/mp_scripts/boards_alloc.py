# Heap use of a board's read(), under the MicroPython unix port with the fake hardware.
#   boards_alloc.py ROOT   prints one JSON line: bytes allocated over READS calls of read()
#   (gc disabled, after a warm-up), per board; the fake hardware that runs meanwhile
#   (timer callbacks, DMA transfers) allocates nothing itself, so the figure is the board's.

import array
import gc
import json
import math
import sys

import machine  # the fake
import rp2

from boards import esp32_board as besp
from boards import rp2_board as brp

ROOT = sys.argv[1]

CFG = ROOT + "/boards/boards.json"
BLOCK = 128  # firmware/app.py
READS = 200


def measure(board, sizes):
    vb = array.array("H", [0] * BLOCK)
    ib = array.array("H", [0] * BLOCK)
    small_v = array.array("H", [0] * 100)
    small_i = array.array("H", [0] * 100)
    for _ in range(20):  # warm-up
        board.read(vb, ib)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for k in range(READS):
        if sizes and k % 3 == 0:
            board.read(small_v, small_i)  # odd sizes: reads that straddle halves
        else:
            board.read(vb, ib)
    used = gc.mem_alloc() - before
    gc.enable()
    return used


def codes(n, mid, amp):
    return [int(mid + amp * math.sin(2 * math.pi * k / n)) for k in range(n)]


out = {}
machine.reset()
orig = machine.ADC.__init__


def init(self, pin, atten=None):
    orig(self, pin, atten)
    self.feed(codes(64, 1900, 700) if self.pin == 36 else codes(64, 1880, 400))


machine.ADC.__init__ = init
b = besp.Esp32Board(path=CFG, ticks=machine.fake_ticks_us)
machine.ADC.__init__ = orig
out["esp32"] = measure(b, False)
out["esp32_odd_sizes"] = measure(b, True)
out["esp32_lost_overruns"] = [b.lost, b.overruns]
b.deinit()

for corr in ("e11", "none"):
    machine.reset()
    rp2.reset()
    fifo = []
    for k in range(64):
        fifo.append(int(2048 + 1000 * math.sin(2 * math.pi * k / 64)))
        fifo.append(int(2048 + 500 * math.sin(2 * math.pi * k / 64 - 0.3)))
    rp2.feed_fifo(fifo)
    b = brp.Rp2Board(path=CFG, dnl_correction=corr)
    out["rp2_" + corr] = measure(b, False)
    out["rp2_%s_odd_sizes" % corr] = measure(b, True)
    out["rp2_%s_overruns" % corr] = b.overruns
    b.stop()


class Allocating:
    """Control: a read() that allocates, to show the measurement sees it."""

    def read(self, vb, ib):
        return len([0] * 4)


out["control"] = measure(Allocating(), False)
out["reads"] = READS
print(json.dumps(out))
