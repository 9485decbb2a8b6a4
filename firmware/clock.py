# Wall-clock time for envelopes: the board's clock plus an offset learned from the head-end.

import time

try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000) & 0x3FFFFFFF

    def ticks_diff(a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d >= 0x20000000 else d

# MicroPython ports with a 2000-01-01 epoch report times this far behind Unix time.
_EPOCH_2000 = 946684800


def _board_unix():
    t = time.time()
    return t + _EPOCH_2000 if t < _EPOCH_2000 else t


class Clock:
    def __init__(self):
        self.offset = 0.0
        self.synced = False

    def now(self):
        return _board_unix() + self.offset

    def set(self, unix):
        """Adopt the given Unix time; returns the correction applied (s)."""
        before = self.now()
        self.offset = unix - _board_unix()
        self.synced = True
        return unix - before

    def server_time(self, unix, tolerance=2.0):
        """Follow the head-end's clock when it differs by more than the tolerance."""
        if abs(unix - self.now()) > tolerance:
            self.set(unix)
