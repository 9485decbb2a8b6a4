# The App at its default settings on a paced sim board (boards/paced_board.py: samples come
# at the real rate into a two-half buffer), for host_tests/test_paced.py.
#
#   micropython paced_run.py STATE_DIR SECONDS [HOG_MS]
#
# HOG_MS: a task that holds the CPU that long every 2 s (an app that is late: shows that
# overruns are seen). Prints one JSON line: the board's overruns (halves lost because the app
# was late), the most complete halves waiting at a read, the readings taken, and the heap's
# free bytes at the end. The board's clock leaves out time the host kept this process off
# the CPU (mp_scripts/paced_host.py).

import asyncio
import gc
import json
import sys
import time

import config
import paced_host
from app import App


async def _hog(ms):
    while True:
        await asyncio.sleep_ms(2000)
        start = paced_host.ticks_us()
        while time.ticks_diff(paced_host.ticks_us(), start) < ms * 1000:
            pass


async def _run(app, hog_ms):
    if hog_ms:
        asyncio.create_task(_hog(hog_ms))
    await app.run()


def main(argv):
    state, seconds = argv[0], int(argv[1])
    hog_ms = int(argv[2]) if len(argv) > 2 else 0
    cfg = config.validate({})
    board = paced_host.make(seconds)
    app = App(board, cfg, state)
    taken = [0]

    def on_record(r):
        if r["type"] == "reading":
            taken[0] += 1

    app.on_record = on_record
    notices = []
    offer = app.outbox.offer

    def offer_noted(kind, body):
        if kind == "notice":
            notices.append(body)
        return offer(kind, body)

    app.outbox.offer = offer_noted
    asyncio.run(_run(app, hog_ms))
    gc.collect()
    print(json.dumps({"overruns": board.overruns, "max_behind": board.max_behind,
                      "readings": taken[0], "status_overruns": app.status_reading()["overruns"],
                      "mem_free": gc.mem_free(), "notices": notices}))


main(sys.argv[1:])
