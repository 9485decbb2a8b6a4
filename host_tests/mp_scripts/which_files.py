# Where the firmware modules come from (source or .mpy), for host_tests/test_mpy_lane.py.
import json

import app
import kernel
import metering

from boards import sim_board

print(json.dumps({m.__name__: m.__file__ for m in (app, kernel, metering, sim_board)}))
