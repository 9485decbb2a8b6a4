# The board contract, its errors and config, and the choice of board: what every board
# driver in this package shares. Only boards/ touches hardware; the firmware asks make_board()
# for a board and uses it through the contract:
#
#   sample_rate      real sample rate of each channel (Hz)
#   rate_ratio       (optional) the same rate as exact ints (num, den), Hz = num / den: the
#                    app's wall time counts samples with it (a float32 rate drifts)
#   channel_delay_s  how long after each V sample its I sample is taken (s)
#   v_gain, i_gain   volts / amps per ADC count
#   v_mid, i_mid     expected DC bias of each channel (counts)
#   read(vbuf, ibuf) fill array('H') buffers with the next gap-free samples; returns how many
#                    (0 = end of a finite source)
#   available()      samples read() can return now without waiting (hardware boards)
#   set_relay(closed), stats(), deinit()
#   set_rtc(unix_ms) (optional) set the board's real-time clock (firmware/ntp.py)
#   pulse_inputs(pins, debounce_us)  (optional) the board's own pulse inputs for a config's
#                    pulse_pins; without it the App uses boards/pulse_input.py on machine.Pin
#
# On a board the package sits in /boards/ (make deploy); on a desktop the repository root is
# on the path (tools/lab/runner.py), so the drivers import as boards.<name> on both. No
# module here takes the name of one of MicroPython's own (esp32, rp2, machine, ...).

import json

DRIVERS = {"esp32": ("boards.esp32_board", "Esp32Board"),
           "rp2": ("boards.rp2_board", "Rp2Board")}
# three-phase and multi-circuit wirings (firmware/polyphase.py)
POLY_DRIVERS = {"esp32": ("boards.esp32_poly", "Esp32PolyBoard"),
                "rp2": ("boards.rp2_poly", "Rp2PolyBoard")}
# ... or, when the port's section names its inputs, an external ADC's driver
EXTERNAL_ADC = {"rp2": ("mcp_channels", "boards.rp2_mcp3208", "Rp2Mcp3208Board")}


class BoardError(ValueError):
    pass


def load_config(section, path=None):
    """One board's section of boards.json (next to this module unless path is given)."""
    if path is None:
        here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
        path = here + "/boards.json"
    with open(path) as f:
        return json.load(f)[section]


def meter_defaults(platform=None):
    """The meter config this port starts from where config.json is silent (boards.json's
    `meter_defaults`: THD off on the boards, docs/performance.md); {} on a desktop."""
    if platform is None:
        import sys
        platform = sys.platform
    if platform not in DRIVERS:
        return {}
    try:
        return dict(load_config(platform).get("meter_defaults", {}))
    except (OSError, ValueError, KeyError):
        return {}


def make_board(platform=None, wiring="1p2w"):
    """The board for this port (sys.platform "esp32" or "rp2") and the config's wiring, else
    the simulated board."""
    if platform is None:
        import sys
        platform = sys.platform
    drivers = DRIVERS
    if wiring != "1p2w" and platform in DRIVERS:
        if platform not in POLY_DRIVERS:
            raise BoardError("wiring %s: no %s driver reads several channels yet (an RP2040 "
                             "needs an external ADC for them)" % (wiring, platform))
        drivers = POLY_DRIVERS
    if platform in drivers:
        module, name = drivers[platform]
        if drivers is POLY_DRIVERS and platform in EXTERNAL_ADC:
            key, external, external_name = EXTERNAL_ADC[platform]
            if load_config(platform).get(key):
                module, name = external, external_name
        return getattr(__import__(module, None, None, (name,)), name)()
    from boards.sim_board import DEFAULT_SCENARIO

    if wiring != "1p2w":
        from boards.sim_poly import board_for

        return board_for(DEFAULT_SCENARIO, {"wiring": wiring})
    from boards.sim_board import SimBoard

    return SimBoard(DEFAULT_SCENARIO)


def set_rtc(unix_ms):
    """Set machine.RTC to a Unix time in integer ms, whatever the port's epoch (1970, or 2000
    on older ports: time.gmtime(0) says which). RTC.datetime takes (year, month, day,
    weekday, hours, minutes, seconds, subseconds); both count weekdays from Monday = 0."""
    import time

    import machine

    secs = unix_ms // 1000
    if time.gmtime(0)[0] == 2000:
        secs -= 946684800
    t = time.gmtime(secs)
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], unix_ms % 1000 * 1000))
