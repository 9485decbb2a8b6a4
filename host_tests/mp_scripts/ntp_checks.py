# firmware/ntp.py and boards.contract.set_rtc under each interpreter, for
# host_tests/test_attacks_ntp.py: prints one JSON line.
#
#   micropython ntp_checks.py HOST:PORT SKEW_S SYNCED [first]
#
# A meter whose board clock is SKEW_S off asks the test's SNTP server once; SYNCED 1: the
# head-end has already set its clock. Then set_rtc on the fake machine.RTC. With `first`:
# ntp.first runs a stand-in for the comms, which notes the wall time it starts at.

import asyncio
import json
import sys

import machine  # host_tests/fakes: records RTC.datetime
import ntp
from clock import Clock, board_ms

from boards.contract import set_rtc


class RtcBoard:
    """A board whose RTC settings are recorded (its clock stays the host's: no step)."""
    def __init__(self):
        self.set = []

    def set_rtc(self, ms):
        self.set.append(ms)


class App:
    def __init__(self, skew_ms, synced):
        self.clock = Clock()
        self.clock.offset_ms = skew_ms      # as if the board's RTC were that far off
        self.clock.synced = synced
        self.started_board_ms = board_ms()
        self.board = RtcBoard()


def main(argv):
    app = App(int(argv[1]) * 1000, argv[2] == "1")
    offset = app.clock.offset_ms
    out = {"board_ms": board_ms()}
    if argv[3:] == ["first"]:
        async def talk():
            out["talk_started_ms"] = app.clock.now_ms()
        asyncio.run(ntp.first(app, argv[0], talk()))
    else:
        try:
            ntp.apply(app, asyncio.run(ntp.query(argv[0], 1500)))
        except ntp.NtpError as exc:
            out["error"] = str(exc)
    # moved_ms: how far the meter's wall time moved (beyond the time the query took)
    out.update(now_ms=app.clock.now_ms(), moved_ms=app.clock.offset_ms - offset,
               rtc=app.board.set)
    set_rtc(1765000000123)      # 2025-12-06 05:46:40.123 UTC, a Saturday
    out["rtc_tuple"] = list(machine.rtc_set[-1])
    print(json.dumps(out))


main(sys.argv[1:])
