# Helpers for the field REPL (firmware/bc.py): the files it keeps on flash, its one-line
# messages, the board, typed-at-a-prompt values, Wi-Fi and error lines for bc.status(), and a
# reading measured when the app is not running. Nothing here holds the REPL's state.

import json
import os

import config as configuration
import store

CONFIG_PATH = "config.json"   # relative to the working directory: "/" on a board
STATE_DIR = "state"
WIFI_PATH = "wifi.json"
ERROR_PATH = STATE_DIR + "/last_error"


def say(msg):
    print("bc: " + msg)


def fail(msg):
    say(msg)
    return None


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def make_board(platform=None, wiring="1p2w"):
    """The board: a `board` module's board.make() (an override on the path), else the
    driver for this port chosen by boards/contract.py (sys.platform "esp32" or "rp2", with
    boards/boards.json beside it), else the simulated board."""
    try:
        import board
    except ImportError:
        board = None
    if board is not None and hasattr(board, "make"):
        return board.make()
    from boards.contract import make_board as choose

    return choose(platform, wiring)


def board_meter_defaults(platform=None):
    """What this port's meter config starts from (boards.json `meter_defaults`)."""
    from boards.contract import meter_defaults

    return meter_defaults(platform)


def coerce(name, value):
    # typed at a prompt: '5' for 5, 'true' for True
    if not isinstance(value, str) or name not in configuration.DEFAULTS:
        return value
    kind = type(configuration.DEFAULTS[name])
    text = value.strip()
    if kind is bool:
        low = text.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        return value
    if kind in (int, float):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return value
    return value


def saved_wifi():
    try:
        data = store.read_record(WIFI_PATH)
        return json.loads(data) if data else None
    except (ValueError, OSError):
        return None


def wifi_summary():
    try:
        import network
    except ImportError:
        return "no Wi-Fi on this port"
    try:
        wlan = network.WLAN(network.STA_IF)
        if wlan.isconnected():
            return "connected, %s" % (wlan.ifconfig()[0],)
        return "not connected"
    except (OSError, AttributeError):
        return "unknown"


def last_error(app):
    err = app.comms.last_error if app is not None and app.comms is not None else None
    if err:
        return err
    try:
        data = store.read_record(ERROR_PATH)
        return data.decode() if data else None
    except (ValueError, OSError):
        return None


def measure(app, max_s=5):
    """A fresh reading, measured here when the app is not running."""
    import array

    board = app.board
    n_block = 128
    vb = array.array("H", [0] * n_block)
    ib = array.array("H", [0] * n_block)
    limit = int(max_s * board.sample_rate)
    done = 0
    while done < limit:
        n = board.read(vb, ib)
        if n == 0:
            break
        app.meter.feed(vb, ib, n)
        done += n
        r = app.reporter.take()
        if r is not None:
            app.last_reading = r
            return r
    return None


def positive_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
