# boards/rp2_poly.py on the fake hardware (host_tests/fakes), for test_rp2_poly.py.
#   rp2_poly_checks.py ROOT   prints one JSON document.

import array
import json
import sys

import machine  # the fake
import rp2

from boards import rp2_poly as bp

ROOT = sys.argv[1]
CFG = ROOT + "/boards/boards.json"


def board(**kw):
    machine.reset()
    rp2.reset()
    return bp.Rp2PolyBoard(path=CFG, dnl_correction="none", **kw)


def outcome(fn):
    try:
        fn()
        return "ok"
    except bp.BoardError as e:
        return str(e)


def frames(slots):
    """FIFO data: frame k holds, in slot s, the code (1000 * s + k) % 4096."""
    out = []
    for k in range(1024):
        for s in range(4):
            out.append((1000 * s + k) % 4096 if s in slots else 7)
    return out


def collect(b, sizes):
    out = [[] for _ in range(b.channels)]
    for n in sizes:
        bufs = [array.array("H", [0] * n) for _ in range(b.channels)]
        assert b.read(bufs) == n
        for ch in range(b.channels):
            out[ch].extend(bufs[ch])
    return out


def alloc(b):
    import gc

    if not hasattr(gc, "mem_alloc"):
        return None
    bufs = [array.array("H", [0] * 128) for _ in range(b.channels)]
    for _ in range(5):
        b.read(bufs)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(50):
        b.read(bufs)
    used = gc.mem_alloc() - before
    gc.enable()
    return used


out = {}
b = board(v_adc=0, i_adcs=[1, 2])
rp2.feed_fifo(frames(b.slot))
data = collect(b, [128, 100, 28, 200, 1, 127])
out["a"] = {"channels": b.channels, "slot": b.slot, "rate": b.sample_rate,
            "offsets_us": [round(x * 1e6, 3) for x in b.channel_offsets_s],
            "first": [d[:3] for d in data], "count": len(data[0]),
            "gap_free": [all(d[k] == (1000 * s + k % 1024) % 4096 for k in range(len(d)))
                         for d, s in zip(data, b.slot)],
            "cs": machine.mem32[bp.ADC_CS],
            "dma_count": b.dma[0].configs[0]["count"], "alloc": alloc(b)}
b.stop()
b = board(v_adc=2, i_adcs=[0, 1])
out["b"] = {"slot": b.slot, "offsets_us": [round(x * 1e6, 3) for x in b.channel_offsets_s]}
out["refused"] = {"adc3": outcome(lambda: board(v_adc=3, i_adcs=[1])),
                  "twice": outcome(lambda: board(v_adc=0, i_adcs=[0, 1]))}
print(json.dumps(out))
