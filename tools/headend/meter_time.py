"""The meter's own time of a reading or an event, exact to the millisecond.

A meter stamps records in whole Unix seconds plus milliseconds: a reading's `t` and `t_ms`,
an event's `start_s` and `start_ms` (docs/protocol.md). Its floats are single precision on
an ESP32 or a Pico W, where a Unix time as one float has a step of 128 s, so the
milliseconds travel apart, as an int. Records from older firmware carry `t`/`start_s`
alone (a float); they are read as they are."""

STAMPS = (("t", "t_ms"), ("start_s", "start_ms"))


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def record_time(body):
    """Unix seconds (a float) of a reading's or an event's time, or None without one."""
    if not isinstance(body, dict):
        return None
    for key, ms_key in STAMPS:
        whole = body.get(key)
        if _number(whole):
            ms = body.get(ms_key)
            if isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= 999:
                return whole + ms / 1000
            return float(whole)
    return None
