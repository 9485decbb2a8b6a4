# One short life of the meter app, for host_tests/test_energy_short_lives.py, under
# MicroPython and CPython: the App meters SECONDS of the simulated load (not in real time),
# then stops the way a power cut stops it, without the final save of App.run.
#   energy_short_life.py STATE_DIR SCENARIO.json SECONDS
# prints {"start_mwh": restored import energy, "end_mwh": import energy in RAM at the cut,
#         "saves": flash writes the save policy asked for}

import asyncio
import json
import os
import sys

import config
from app import App

from boards.sim_board import SimBoard


class Cut:
    """The simulated board, with the power gone after `samples` samples."""

    def __init__(self, board, samples):
        self.board = board
        self.sample_rate = board.sample_rate
        self.left = samples
        for name in ("channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid"):
            setattr(self, name, getattr(board, name))

    def read(self, vb, ib):
        if self.left <= 0:
            return 0
        n = self.board.read(vb, ib)
        n = min(n, self.left)
        self.left -= n
        return n


def main(argv):
    state, scenario_path, seconds = argv[0], argv[1], float(argv[2])
    with open(scenario_path) as f:
        scenario = json.load(f)
    try:
        os.mkdir(state)
    except OSError:
        pass
    cfg = config.validate(scenario.get("config", {}))
    board = SimBoard(scenario)
    app = App(Cut(board, int(seconds * board.sample_rate)), cfg, state, realtime=False)
    app.meter.fold_energy()
    start = app.meter.registers.import_wh.total_mwh()
    saves = []
    save = app.save_energy

    def counted(flush=True):
        saves.append(1)
        save(flush)
    app.save_energy = counted
    asyncio.run(app.metering())      # returns when the board stops: no final save
    app.meter.fold_energy()
    print(json.dumps({"start_mwh": start, "end_mwh": app.meter.registers.import_wh.total_mwh(),
                      "saves": len(saves)}))


main(sys.argv[1:])
