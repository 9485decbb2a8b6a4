# firmware/clock.py on any interpreter, for host_tests/test_board_time.py: wall time kept in
# integer ms (a float32 board rounds a Unix time to 128 s). Prints one JSON line.

import json

from clock import Clock, unix_ms

T = 1796558866412  # a Unix time in ms (2026-12-06)


def main():
    r = {}
    r["unix_ms"] = [unix_ms(x) for x in ("1796558866.412", "1796558866.4", "1796558866",
                                          1796558866, True, "x", "1.2.3",
                                          "-5", float("nan"), float("inf"), -1.0, 1e30, None)]
    r["float_ms"] = unix_ms(1796558866.0)  # float32: the nearest multiple of 128 s
    c = Clock()
    c.server_time(1796558866.0, exact_ms=T - 3600000)  # an hour behind: adopted exactly
    r["adopted_exact"] = c.now_ms() - (T - 3600000) - (c.now_ms() - c.now_ms())
    before = c.offset_ms
    c.server_time(float("nan"), exact_ms=True)          # nothing usable: kept as it was
    c.server_time(None, exact_ms=-5)
    r["kept_on_nonsense"] = c.offset_ms == before
    c2 = Clock()
    c2.set("1796558866.412")
    r["set_string_ms"] = c2.now_ms() % 1000
    r["now_is_int"] = isinstance(c2.now(), int) and isinstance(c2.now_ms(), int)
    try:
        c2.set(float("inf"))
        r["set_inf"] = "accepted"
    except ValueError as e:
        r["set_inf"] = str(e)
    print(json.dumps(r))


main()
