# Which firmware modules an App imports for a configuration, for host_tests/test_imports.py.
#
#   micropython config_imports.py STATE_DIR CONFIG_JSON|@CONFIG_FILE [update]
#
# (@CONFIG_FILE for a long config: the unix port dies with "FATAL: uncaught NLR" on an
# argument of more than about 250 bytes, before running anything)
#
# Builds the App (no network is touched: the transport connects when run() starts) and
# prints one JSON line: the modules loaded, and the heap it holds after a collection.
# "update" then asks for the updater (as an `update` op does) and lists the modules again.

import gc
import json
import sys

import config
from app import App

from boards.sim_board import DEFAULT_SCENARIO, SimBoard


def main(argv):
    text = argv[1]
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    cfg = config.validate(json.loads(text))
    app = App(SimBoard(DEFAULT_SCENARIO), cfg, argv[0], realtime=False)
    gc.collect()
    out = {"modules": sorted(sys.modules), "alloc": getattr(gc, "mem_alloc", int)()}
    if argv[2:] == ["update"]:
        out["updater_ok"] = app.updater is app.updater and app.comms.updater is app.updater
        out["after_update"] = sorted(sys.modules)
    print(json.dumps(out))


main(sys.argv[1:])
