# Waveform capture through the App (firmware/capture.py), for host_tests/test_capture.py:
# 7 s of the `dips` scenario (a 50 % dip at 3 s) metered not in real time, every sample the
# board gave kept aside; prints the `waveform` items and where the captured samples sit in
# the stream. Also: a capture too large for RAM is refused at configuration, with the reason.
#   capture_app.py SCENARIO.json STATE_DIR

import array
import asyncio
import json
import os
import sys
from binascii import a2b_base64

import config
from app import App

from boards.sim_board import SimBoard


class Recorded:
    def __init__(self, scenario, seconds):
        self.board = SimBoard(scenario)
        self.sample_rate = self.board.sample_rate
        self.left = int(seconds * self.sample_rate)
        self.v = array.array("H")
        self.i = array.array("H")
        for name in ("channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid"):
            setattr(self, name, getattr(self.board, name))

    def read(self, vb, ib):
        n = min(self.board.read(vb, ib), self.left) if self.left > 0 else 0
        self.left -= n
        for k in range(n):
            self.v.append(vb[k])
            self.i.append(ib[k])
        return n


def main(argv):
    with open(argv[0]) as f:
        scenario = json.load(f)
    try:
        os.mkdir(argv[1])
    except OSError:
        pass
    out = {}
    cfg = config.validate({"device_id": "m", "capture": True})
    board = Recorded(scenario, 7)
    app = App(board, cfg, argv[1], realtime=False)
    asyncio.run(app.metering())
    items = [i["body"] for i in app.outbox.peek(64, 1 << 20) if i["kind"] == "waveform"]
    out["heads"] = [{k: v for k, v in b.items() if k not in ("v", "i")} for b in items]
    v = array.array("H")
    i = array.array("H")
    for b in items:
        v.extend(array.array("H", a2b_base64(b["v"])))
        i.extend(array.array("H", a2b_base64(b["i"])))
    # where the capture sits in the stream the board gave (-1: nowhere)
    at = -1
    n = len(v)
    for k in range(len(board.v) - n + 1):
        if board.v[k] == v[0] and board.v[k:k + n] == v:
            at = k
            break
    out["at"] = at
    out["same_i"] = at >= 0 and board.i[at:at + n] == i
    out["n"] = n
    out["rate"] = board.sample_rate

    out["capture_bytes"] = len(app.capture.v) * 2 + len(app.capture.i) * 2
    try:
        app.change_config({"capture_post_cycles": 100, "capture_pre_cycles": 50})
        out["refused"] = None
    except ValueError as exc:
        out["refused"] = str(exc)
    print(json.dumps(out))


main(sys.argv[1:])
