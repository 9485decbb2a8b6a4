# The paced sim board as the tests run it on a shared machine (boards/paced_board.py), and as
# a `board` override (bc_util.make_board: a board.py on the path with make()).
#
# Its clock is the host's time minus the time this process waited for a CPU while it could
# run (/proc/self/schedstat, field 2): on a loaded VM the kernel may hold a ready process off
# the CPU for 100 ms, which is the host's lateness, not the app's. Time the app spends
# computing, collecting garbage or blocked in its own code still counts. Without schedstat
# it is the plain clock. (This clock allocates when it reads the file: test harness only.)

import time

from boards.paced_board import PacedBoard
from boards.sim_board import DEFAULT_SCENARIO, SimBoard

STAT = "/proc/self/schedstat"


def _waited_us():
    try:
        with open(STAT) as f:
            return int(f.read().split()[1]) // 1000
    except (OSError, IndexError, ValueError):
        return 0


def ticks_us():
    return (time.ticks_us() - _waited_us()) & 0x3FFFFFFF


def make(seconds=None):
    return PacedBoard(SimBoard(DEFAULT_SCENARIO), seconds=seconds, ticks=ticks_us)
