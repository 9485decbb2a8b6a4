# Firmware-side checks of config.py and store.py, run under MicroPython and CPython.
#   energy_config_store.py validate  < JSON list of change dicts
#   energy_config_store.py decode    < JSON list of hex records
#   energy_config_store.py files DIR (round trip and missing file)
# Prints one JSON document on stdout.

import json
import sys
from binascii import hexlify, unhexlify

import config
import store


def outcome(fn, *args):
    try:
        return ["ok", fn(*args)]
    except (config.ConfigError, store.CorruptRecord) as e:
        return ["rejected", type(e).__name__, str(e)]
    except Exception as e:  # anything else is a firmware bug the test reports
        return ["other", type(e).__name__, str(e)]


def decode_hex(h):
    return hexlify(store.decode(unhexlify(h))).decode()


def files(d):
    path = d + "/rec"
    missing = store.read_record(d + "/absent")
    store.write_record(path, b"first")
    store.write_record(path, b'{"x": 1}')
    again = store.read_record(path)
    config.save(d + "/cfg", {"nominal_v": 120, "frequency": 60})
    return {"missing": missing, "read": again.decode(), "config": config.load(d + "/cfg"),
            "config_missing": config.load(d + "/none")}


def main(argv):
    if argv[0] == "validate":
        out = [outcome(config.validate, c) for c in json.loads(sys.stdin.read())]
    elif argv[0] == "decode":
        out = [outcome(decode_hex, h) for h in json.loads(sys.stdin.read())]
    else:
        out = files(argv[1])
    sys.stdout.write(json.dumps(out))


main(sys.argv[1:])
