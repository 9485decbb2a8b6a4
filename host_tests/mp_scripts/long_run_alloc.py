# Heap use of the App's metering loop per block, after more than 2**30 samples (about 3.9
# days at 3200 Hz), for host_tests/test_long_run.py. A 32-bit port's small ints end at 2**30:
# a sample counter past that is a long int, allocated on every increment.
#
#   micropython long_run_alloc.py STATE_DIR SECONDS
#
# The App runs with no transport and realtime=False on a table board (one exact 50-Hz cycle
# of 64 samples, repeated); its sample clocks are set to 8 s before 2**30 samples, then it
# meters SECONDS of signal with the collector off. The board's read() notes gc.mem_alloc()
# at each block. Prints one JSON line: the bytes each block allocated, which blocks closed a
# reading or saved energy (those may allocate), and the samples counted at the end.

import array
import asyncio
import gc
import json
import math
import sys

import config
import kernel as K
import wide
from app import App

SPC = 64
RATE = 50 * SPC
START = (1 << 30) - 8 * RATE  # crosses 2**30 samples after 8 s of signal


class TableBoard:
    sample_rate = float(RATE)
    rate_ratio = (RATE, 1)
    channel_delay_s = 0.0

    def __init__(self, blocks):
        self.v_gain = 230.0 * 1.4142135623730951 * 1.6 / 2048.0
        self.i_gain = 100.0 / 2048.0
        self.v_mid = self.i_mid = 2048
        self.v = array.array("H", [int(325.0 * math.sin(2 * math.pi * k / SPC) / self.v_gain
                                       + 2048.5) for k in range(SPC)])
        self.i = array.array("H", [int(9.2 * math.sin(2 * math.pi * k / SPC) / self.i_gain
                                       + 2048.5) for k in range(SPC)])
        self.alloc = array.array("i", [0] * (blocks + 1))  # gc.mem_alloc() at each read()
        self.k = 0
        self.blocks = blocks

    def read(self, vb, ib):
        k = self.k
        self.alloc[k] = gc.mem_alloc()
        if k == self.blocks:
            return 0
        self.k = k + 1
        n = len(vb)  # a whole number of cycles: every block starts at phase 0
        for j in range(n):
            vb[j] = self.v[j % SPC]
            ib[j] = self.i[j % SPC]
        return n


def main(argv):
    state, seconds = argv[0], int(argv[1])
    cfg = config.validate({"report_s": 10, "wdt_s": 0, "device_id": "t", "persist_s": 5})
    blocks = seconds * RATE // 128
    board = TableBoard(blocks)
    app = App(board, cfg, state, realtime=False)
    st = app.meter.st
    st[K.CLOCK_HI] = START >> wide.SHIFT
    st[K.CLOCK_LO] = START & (wide.LOW - 1)
    app.sample_count.start_at(START)
    flagged = bytearray(blocks + 1)  # 1: a reading closed in this block, 2: energy saved
    take = app.reporter.take
    save = app.save_energy

    def take_flagged():
        r = take()
        if r is not None:
            flagged[board.k] |= 1
        return r

    def save_flagged(flush=True):
        flagged[board.k] |= 2
        save(flush=flush)

    app.reporter.take = take_flagged
    app.save_energy = save_flagged
    gc.collect()
    gc.disable()
    asyncio.run(app.run())
    gc.enable()
    a = board.alloc
    print(json.dumps({"bytes": [a[k + 1] - a[k] for k in range(blocks)],
                      "flags": list(flagged[1:]),
                      "samples": app.meter.now(), "start": START,
                      "seconds": app.sample_count.seconds}))


main(sys.argv[1:])
