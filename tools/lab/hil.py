"""The hardware-in-the-loop smoke set (`make hil BOARD=esp32|rp2 PORT=/dev/ttyUSB0`): what
only a real board can show. host_tests/test_hil.py drives it: deploy (lab.deploy, as a user
would), then over mpremote at the board's REPL: the app meters (readings arrive, no sample
block lost), the field REPL answers (bc.status, bc.set and back), and, with BC_HIL_SERVER set
to a head-end the board can reach over its Wi-Fi, one exchange with it.

Everything here is the host side; the board runs the deployed firmware unchanged. Without a
board at PORT every case skips with the reason (hil_missing_reason)."""

import json
import os
import subprocess

from lab.deploy import mpremote_binary

BOARDS = ("esp32", "rp2")


def settings(env=None):
    """BOARD, PORT and the optional head-end URL from the environment (make hil sets them)."""
    env = os.environ if env is None else env
    return {"board": env.get("BC_HIL_BOARD", "esp32"),
            "port": env.get("BC_HIL_PORT", ""),
            "server": env.get("BC_HIL_SERVER", "")}


def hil_missing_reason(s):
    """Why the smoke set cannot run here, or None when a board is attached."""
    if s["board"] not in BOARDS:
        return "BOARD=%s: make hil needs BOARD=esp32 or BOARD=rp2" % s["board"]
    if not s["port"]:
        return "no board given: run `make hil BOARD=esp32|rp2 PORT=/dev/ttyUSB0`"
    if not os.path.exists(s["port"]):
        return "no board attached at %s (make hil PORT=...)" % s["port"]
    return None


def board_exec(port, code, timeout=60):
    """Run `code` at the board's REPL (mpremote exec); returns what it printed."""
    p = subprocess.run([mpremote_binary(), "connect", port, "exec", code],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("mpremote exec on %s failed (%d): %s"
                           % (port, p.returncode, (p.stderr or p.stdout)[-400:]))
    return p.stdout


def board_json(port, code, timeout=60):
    """`code` ends by printing one JSON document (prefixed 'HIL '); returns it."""
    out = board_exec(port, code, timeout)
    for line in out.splitlines():
        if line.startswith("HIL "):
            return json.loads(line[4:])
    raise RuntimeError("the board printed no result: %s" % out[-400:])


# Meters for `seconds` with the deployed firmware (main.py's own App, the board's driver),
# no transport, then prints what a user checks first.
METER_FOR = """
import json, time, bc
from app import App
cfg = bc.read_config()
cfg['server_url'] = ''; cfg['transport'] = 'http'
app = App(bc.make_board(), cfg, bc.STATE_DIR)
import asyncio
async def run():
    t = asyncio.create_task(app.run())
    await asyncio.sleep(%d)
    app.stop()
    await asyncio.sleep(1)
asyncio.run(run())
r = app.last_reading or {}
print('HIL ' + json.dumps({'vrms': r.get('vrms'), 'f': r.get('f'), 'n': r.get('n'),
      'overruns': getattr(app.board, 'overruns', None), 'harmonic_order': cfg['harmonic_order']}))
"""

REPL_ROUND_TRIP = """
import json, bc
before = bc.read_config()['report_s']
bc.set('report_s', before + 1)
after = bc.read_config()['report_s']
bc.set('report_s', before)
print('HIL ' + json.dumps({'before': before, 'after': after,
      'restored': bc.read_config()['report_s']}))
"""
