# Wall time of readings and events over simulated minutes, for host_tests/test_board_time.py.
#
#   micropython board_time.py STATE_DIR SECONDS REPORT_S DIP_AT_SAMPLE
#
# A table board (one exact 50-Hz cycle of 64 samples, repeated: no float phase drift in the
# stimulus itself) with a 5-cycle 50% dip from sample DIP_AT_SAMPLE. The App runs with no
# transport and realtime=False. Prints JSON lines: the start (board ns before and after
# App()) on the first line, then one line per reading or event offered to the outbox.

import array
import asyncio
import json
import math
import sys
import time

import config
from app import App

SPC = 64
RATE = 50 * SPC


class TableBoard:
    sample_rate = float(RATE)
    rate_ratio = (RATE, 1)
    channel_delay_s = 0.0

    def __init__(self, n_total, dip_at, dip_len):
        self.v_gain = 230.0 * 1.4142135623730951 * 1.6 / 2048.0
        self.i_gain = 100.0 / 2048.0
        self.v_mid = self.i_mid = 2048
        self.n = 0
        self.n_total = n_total
        self.dip = (dip_at, dip_at + dip_len)
        vpk = 230.0 * 1.4142135623730951
        ipk = 6.52 * 1.4142135623730951
        self.v = array.array("H", [int(vpk * math.sin(2 * math.pi * k / SPC) / self.v_gain
                                       + 2048.5) for k in range(SPC)])
        self.vd = array.array("H", [int(0.5 * vpk * math.sin(2 * math.pi * k / SPC)
                                        / self.v_gain + 2048.5) for k in range(SPC)])
        self.i = array.array("H", [int(ipk * math.sin(2 * math.pi * k / SPC) / self.i_gain
                                       + 2048.5) for k in range(SPC)])

    def read(self, vb, ib):
        n = min(len(vb), self.n_total - self.n)
        a, b = self.dip
        for k in range(n):
            j = self.n + k
            p = j % SPC
            vb[k] = self.vd[p] if a <= j < b else self.v[p]
            ib[k] = self.i[p]
        self.n += n
        return n


def main(argv):
    state, seconds, report_s, dip_at = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    cfg = config.validate({"report_s": report_s, "wdt_s": 0, "device_id": "t"})
    board = TableBoard(seconds * RATE + SPC // 2, dip_at, 5 * SPC)
    t0 = time.time_ns()
    app = App(board, cfg, state, realtime=False)
    t1 = time.time_ns()
    print(json.dumps({"t0_ns": t0, "t1_ns": t1, "rate": RATE}))
    orig = app.outbox.offer

    def offer(kind, body):
        if kind in ("reading", "event", "event_start"):
            # one line per record as it comes: a board's heap holds no list of them
            print(json.dumps(dict(body, kind_=kind)))
        return orig(kind, body)

    app.outbox.offer = offer
    asyncio.run(app.run())


main(sys.argv[1:])
