# Firmware-side signature-verification benchmark, launched by bench/ota.py under
# MicroPython (unix port) and under CPython. Prints one JSON line of raw per-run figures.
#
#   micropython tools/bench/ota_mp.py RUNS < "KEY_HEX MESSAGE_HEX SIGNATURE_HEX"
#
# (the vector comes on stdin: this unix port aborts on very long command-line arguments)
# Run through tools/lab/runner.py (firmware/ on the path). Each run times one p256.verify; under
# MicroPython the heap allocated by one verify (gc off) is measured once as well.

import gc
import json
import sys
import time
from binascii import unhexlify

import p256

IS_MICROPYTHON = sys.implementation.name == "micropython"


def now_ns():
    if IS_MICROPYTHON:
        return time.ticks_us() * 1000
    return time.perf_counter_ns()


def elapsed_ns(t0, t1):
    if IS_MICROPYTHON:
        return time.ticks_diff(t1 // 1000, t0 // 1000) * 1000
    return t1 - t0


def main():
    runs = int(sys.argv[1])
    key, message, signature = [unhexlify(x) for x in sys.stdin.read().split()]
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = now_ns()
        ok = p256.verify(key, message, signature)
        times.append(elapsed_ns(t0, now_ns()))
        if not ok:
            raise SystemExit("the benchmark signature did not verify")
    heap = None
    if IS_MICROPYTHON:
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        p256.verify(key, message, signature)
        heap = gc.mem_alloc() - before
        gc.enable()
    print(json.dumps({"implementation": sys.implementation.name,
                      "version": ".".join(str(v) for v in sys.implementation.version[:3]),
                      "verify_ns": times, "heap_bytes": heap, "message_bytes": len(message)}))


main()
