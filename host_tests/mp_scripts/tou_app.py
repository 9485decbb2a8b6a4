# Time-of-use through the App, for host_tests/test_tou_billing.py: a meter without a tariff
# does not import billing; the `tariff` op sets one (switch to "peak" 3 s on), the App meters
# 6 s of the simulated load (not in real time), readings carry the rate, `freeze` snapshots,
# `read` shows the per-rate registers; a restart keeps the tariff and the registers.
#   tou_app.py STATE_DIR

import asyncio
import json
import sys

import config
import ops
from app import App

from boards.sim_board import DEFAULT_SCENARIO, SimBoard


class Seconds:
    """The simulated board for `seconds` of signal, then no more samples."""

    def __init__(self, seconds):
        self.board = SimBoard(DEFAULT_SCENARIO)
        self.sample_rate = self.board.sample_rate
        self.left = int(seconds * self.sample_rate)
        for name in ("channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid"):
            setattr(self, name, getattr(self.board, name))

    def read(self, vb, ib):
        n = min(self.board.read(vb, ib), self.left) if self.left > 0 else 0
        self.left -= n
        return n


def main(argv):
    cfg = config.validate({"device_id": "m", "persist_s": 60, "shed_on_rate": "peak",
                           "shed_min_off_s": 0, "shed_min_on_s": 0,
                           "shed_restore_window_s": 0})
    app = App(Seconds(6), cfg, argv[0], realtime=False)
    out = {"billing_before": "billing" in sys.modules or "tou" in sys.modules}
    t0 = app.clock.now()
    out["set"] = ops.op_tariff(app, {"id": "day", "rates": ["peak", "offpeak"], "t0": t0,
                                     "end": 86400, "switches": [[0, 1], [3, 0]]})
    try:
        ops.op_tariff(app, {"id": "bad", "rates": ["a"], "t0": t0, "end": 10,
                            "switches": [[0, 0], [5, 0], [5, 0]]})
        out["refused"] = None
    except ops.Rejected as exc:
        out["refused"] = str(exc)
    readings = []
    app.on_record = lambda r: readings.append([r["t"] - t0, r.get("rate")]) \
        if r.get("type", "reading") == "reading" and "vrms" in r else None
    asyncio.run(app.metering())
    out["readings"] = readings
    out["shed"] = [[i["body"]["action"], i["body"]["cause"]]
                   for i in app.outbox.peek(64, 1 << 20) if i["kind"] == "shed"]
    out["freeze"] = ops.op_freeze(app, {})
    out["billing_items"] = [i for i in app.outbox.peek(64, 1 << 20) if i["kind"] == "billing"]
    out["status"] = app.status_reading()["tou"]
    app.save_energy()
    again = App(Seconds(0), cfg, argv[0], realtime=False)
    out["restart"] = again.status_reading()["tou"]
    print(json.dumps(out))


main(sys.argv[1:])
