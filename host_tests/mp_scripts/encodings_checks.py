# The meter's encodings under MicroPython (and CPython): reads one JSON case a line from
# stdin, [encoding, op, arg], and prints one JSON line per case.
#   encode  arg: a request dict -> {"raw": hex}
#   decode  arg: hex bytes of a response -> {"value": dict} or {"err": "<message>"}
#   cost    arg: [hex bytes of a response, a request dict] -> {"decode_us", "decode_heap",
#           "encode_us", "encode_heap": time and bytes allocated per call, "code": heap taken
#           by importing the encoding's modules (run one encoding per process for that)}
# Used by host_tests/test_encodings_firmware.py and make bench (tools/bench).

import gc
import json
import sys
from binascii import hexlify, unhexlify

from mpshim import ticks_diff, ticks_us

_loaded = {}


def codec(name):
    if name not in _loaded:
        gc.collect()
        before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        mod = __import__("enc_" + name)
        gc.collect()
        after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        _loaded[name] = (mod, after - before)
    return _loaded[name][0]


def _timed(fn, arg, rounds, label):
    fn(arg)
    gc.collect()
    heap = 0
    if hasattr(gc, "mem_alloc"):    # bytes allocated by one call, with no collection
        before = gc.mem_alloc()
        gc.disable()
        fn(arg)
        heap = gc.mem_alloc() - before
        gc.enable()
    t0 = ticks_us()
    for _ in range(rounds):
        fn(arg)
    return {label + "_us": ticks_diff(ticks_us(), t0) // rounds, label + "_heap": heap}


def cost(name, data, body, rounds=20):
    mod = codec(name)
    out = _timed(mod.decode, data, rounds, "decode")
    out.update(_timed(mod.encode, body, rounds, "encode"))
    out["code"] = _loaded[name][1]
    return out


def run(case):
    name, op, arg = case
    if op == "encode":
        return {"raw": hexlify(codec(name).encode(arg)).decode()}
    if op == "cost":
        return cost(name, unhexlify(arg[0]), arg[1])
    data = unhexlify(arg)
    try:
        return {"value": codec(name).decode(data)}
    except ValueError as exc:
        return {"err": str(exc)}


def main():
    for line in sys.stdin:
        line = line.strip()
        if line:
            print(json.dumps(run(json.loads(line))))


if __name__ == "__main__":
    main()
