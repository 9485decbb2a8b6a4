# bc.stop() on a running app (firmware/bc.py): the registers are saved at once, the app's
# run() ends with "stopped", and what is on flash is everything metered. Prints one JSON line.
#
#   bc_stop.py WORKDIR

import asyncio
import json
import os
import sys

os.chdir(sys.argv[1])   # the board's flash: bc keeps config.json and state/ here

import bc  # noqa: E402
import config  # noqa: E402
from app import App  # noqa: E402
from energy import RegisterStore  # noqa: E402

from boards.sim_board import DEFAULT_SCENARIO, SimBoard  # noqa: E402


async def main(app):
    task = asyncio.create_task(app.run())
    seen = []
    while len(seen) < 3:
        await asyncio.sleep(0)
        r = app.last_reading
        if r is not None and (not seen or r is not seen[-1]):
            seen.append(r)
    gen = app.energy_store.gen
    stopped = bc.stop()
    saved_at_stop = app.energy_store.gen > gen
    outcome = await task
    return stopped, saved_at_stop, outcome


bc.ensure_dir("state")
app = App(SimBoard(DEFAULT_SCENARIO), config.validate({}), "state", realtime=False)
bc.attach(app, running=True)
stopped, saved_at_stop, outcome = asyncio.run(main(app))
bc.set_running(False)
app.meter.fold_energy()
live = app.meter.registers.state()
on_flash = RegisterStore("state/energy").load()
print(json.dumps({"stopped": stopped, "saved_at_stop": saved_at_stop, "outcome": outcome,
                  "live": live, "on_flash": on_flash,
                  "unsaved": app.energy_store.report(app.meter.registers)[1],
                  "again": bc.stop()}))
