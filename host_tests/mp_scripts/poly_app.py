# The App on a simulated polyphase board (boards/sim_poly.py), for host_tests/test_poly_app.py:
# meters `seconds` of a scenario (not in real time) with the scenario's wiring, prints its
# readings, events and the saved registers (totals and each element's), then starts again
# from "flash" and meters two seconds more.
#   poly_app.py STATE_DIR SCENARIO.json SECONDS

import asyncio
import gc
import json
import sys

import config
from app import App

from boards.sim_poly import board_for


class Seconds:
    def __init__(self, board, seconds):
        self.board = board
        self.left = int(seconds * board.sample_rate)
        for name in ("sample_rate", "channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid",
                     "channels", "nv", "channel_offsets_s"):
            setattr(self, name, getattr(board, name))

    def read(self, bufs):
        n = min(self.board.read(bufs), self.left) if self.left > 0 else 0
        self.left -= n
        return n


def main(argv):
    with open(argv[1]) as f:
        scenario = json.load(f)
    cfg = config.validate(dict(scenario["config"], device_id="m", persist_s=60))
    app = App(Seconds(board_for(scenario, cfg), float(argv[2])), cfg, argv[0], realtime=False)
    out = {"readings": [], "events": [], "modules": sorted(k for k in sys.modules
                                                             if k.startswith("poly"))}
    app.on_record = lambda r: out["readings" if r.get("type", "reading") == "reading"
                                  else "events"].append(r)
    asyncio.run(app.metering())
    app.save_energy()
    out["saved"] = app.meter.registers.as_wh()
    out["saved_elements"] = elements(app)
    # a board starts once: free the first App (its sample buffers) before the second, or a
    # 512K board heap can be too fragmented for the second App's buffers
    app = None
    gc.collect()
    # started again from flash, then metering two more seconds
    again = App(Seconds(board_for(scenario, cfg), 2), cfg, argv[0], realtime=False)
    out["restored"] = again.meter.registers.as_wh()
    out["restored_elements"] = elements(again)
    asyncio.run(again.metering())
    again.save_energy()
    out["after"] = again.meter.registers.as_wh()
    out["after_elements"] = elements(again)
    # streamed: json.dumps would need the whole text (about 17 KB) in one block of a
    # fragmented board heap (CI: MemoryError here at 512K)
    json.dump(out, sys.stdout)
    print()


def elements(app):
    m = app.meter
    return [e.registers.as_wh() for e in m.meters[:m.elements]]


main(sys.argv[1:])
