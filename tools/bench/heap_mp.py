# Start-up heap of one configuration, launched by bench/heap_budget.py on the board
# interpreter under a heap cap: builds the App as main.py does (the modules its config uses,
# the simulated board) and prints one JSON line (the heap it holds after a collection).
#
#   micropython tools/bench/heap_mp.py STATE_DIR CONFIG_JSON|@CONFIG_FILE
#
# (@CONFIG_FILE for a long config: the unix port dies on an argument over about 250 bytes)

import gc
import json
import sys

import config
from app import App

from boards.sim_board import DEFAULT_SCENARIO, SimBoard

text = sys.argv[2]
if text.startswith("@"):
    with open(text[1:]) as f:
        text = f.read()
app = App(SimBoard(DEFAULT_SCENARIO), config.validate(json.loads(text)), sys.argv[1],
          realtime=False)
gc.collect()
print(json.dumps({"ok": True, "alloc": gc.mem_alloc(), "free": gc.mem_free()}))
