# Wall-clock time for envelopes and records: the board's clock plus an offset learned from
# the head-end, kept in integer milliseconds. Never a float: the ESP32 and RP2040 ports have
# single-precision floats, whose step near a Unix time of 1.8e9 s is 128 s.

import time

# MicroPython ports with a 2000-01-01 epoch report times this far behind Unix time.
_EPOCH_2000_MS = 946684800000
_MAX_MS = 4294967296000  # 2106: beyond it a time from the head-end is nonsense, not adopted
PROMPT_MS = 2000  # an answer this long on the way carries the head-end's time well enough


def board_ms():
    """The board's own Unix time in integer milliseconds."""
    try:
        ms = time.time_ns() // 1000000
    except AttributeError:  # a port without time_ns: whole seconds
        ms = int(time.time()) * 1000
    return ms + _EPOCH_2000_MS if ms < _EPOCH_2000_MS else ms


def unix_ms(unix):
    """A Unix time in seconds (an int, a float or a decimal string) as integer ms, or None
    when it is no plausible time. An int or a string is exact; a float is what it is (on a
    float32 board already rounded to 128 s: prefer a head-end's time_ms)."""
    if isinstance(unix, bool):
        return None
    if isinstance(unix, str):
        whole, _, frac = unix.partition(".")
        if not whole.isdigit() or (frac and not frac.isdigit()):
            return None
        ms = int(whole) * 1000 + (int((frac + "00")[:3]) if frac else 0)
    elif isinstance(unix, int):
        ms = unix * 1000
    elif isinstance(unix, float) and 0 <= unix < _MAX_MS // 1000:  # also refuses nan
        whole = int(unix)  # no unix * 1000: one more float32 rounding
        ms = whole * 1000 + int((unix - whole) * 1000)
    else:
        return None
    return ms if 0 <= ms < _MAX_MS else None


class Clock:
    def __init__(self):
        self.offset_ms = 0
        self.synced = False

    def now_ms(self):
        """Unix time in integer milliseconds."""
        return board_ms() + self.offset_ms

    def now(self):
        """Unix time in whole seconds (an int)."""
        return self.now_ms() // 1000

    def set(self, unix):
        """Adopt the given Unix time (s: int, float or decimal string); returns the
        correction applied (s)."""
        target = unix_ms(unix)
        if target is None:
            raise ValueError("not a Unix time: %r" % (unix,))
        before = self.now_ms()
        self.offset_ms = target - board_ms()
        self.synced = True
        return (target - before) / 1000

    def server_time(self, unix, tolerance=2.0, exact_ms=None, transit_ms=0):
        """Follow the head-end's clock when it differs by more than the tolerance. exact_ms
        (the response's time_ms), when it is an int, is exact; `unix` (a float) is not on a
        float32 board. transit_ms: how long the answer may have been on the way; one slower
        than PROMPT_MS (held back by the network) is followed only for a difference the
        delay cannot explain."""
        target = None
        if isinstance(exact_ms, int) and not isinstance(exact_ms, bool) \
                and 0 <= exact_ms < _MAX_MS:
            target = exact_ms
        if target is None:
            target = unix_ms(unix)
        slack = int(tolerance * 1000) + (transit_ms if transit_ms > PROMPT_MS else 0)
        if target is not None and abs(target - self.now_ms()) > slack:
            self.offset_ms = target - board_ms()
            self.synced = True


def stamp(record, key, ms):
    """A wall time as JSON that stays exact on a float32 board: whole seconds in `key`
    (an int) and the milliseconds in `key`_ms ("t" gives "t_ms", "start_s" "start_ms")."""
    record[key] = ms // 1000
    record[key[:-2] + "_ms" if key.endswith("_s") else key + "_ms"] = ms % 1000
