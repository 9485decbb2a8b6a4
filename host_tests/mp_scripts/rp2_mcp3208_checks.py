# boards/rp2_mcp3208.py on the fake hardware (host_tests/fakes), for test_rp2_mcp3208.py.
#   rp2_mcp3208_checks.py ROOT   prints one JSON document.

import array
import json
import sys

import machine  # the fake
import rp2

from boards import rp2_mcp3208 as bm

ROOT = sys.argv[1]
CFG = ROOT + "/boards/boards.json"
PINS = {"sck": 2, "mosi": 3, "miso": 4, "cs": 5}


def board(**kw):
    machine.reset()
    rp2.reset()
    args = {"mcp_channels": [0, 1, 2, 3, 4, 5, 6], "mcp_nv": 3, "mcp_pins": PINS}
    args.update(kw)
    return bm.Rp2Mcp3208Board(path=CFG, **args)


def outcome(fn):
    try:
        fn()
        return "ok"
    except bm.BoardError as e:
        return str(e)


def frames(frame, used):
    """RX words: frame k holds, in slot s, the 24 bits read whose low 12 are
    (1000 * s + k) % 4096 (the null bit and the bits before set, as noise), 7 in the padding."""
    out = []
    for k in range(1024):
        for s in range(frame):
            code = (1000 * s + k) % 4096 if s < used else 7
            out.append(0xE000 | code)   # a halfword: the DMA reads the FIFO's low 16 bits
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
    rp2.tx_logging[0] = False  # the fake's command log would allocate on a 32-bit port
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


def dma_ctrl(d):
    return rp2.DMA.unpack_ctrl(d.configs[0]["ctrl"])


out = {}
b = board()
rp2.feed_fifo(frames(b.frame, b.channels))
data = collect(b, [128, 100, 28, 200, 1, 127])
cmd, rx = b.dma[:2], b.dma[2:]
sm = rp2.state_machines[b.sm_id]
out["a"] = {"channels": b.channels, "nv": b.nv, "frame": b.frame, "slot": b.slot,
            "rate": b.sample_rate, "ratio": list(b.rate_ratio),
            "offsets_us": [round(x * 1e6, 4) for x in b.channel_offsets_s],
            "delay_us": round(b.channel_delay_s * 1e6, 4),
            "clkdiv": machine.mem32[bm.SM0_CLKDIV + bm.SM_STRIDE * b.sm_id],
            "program": sm.prog["name"], "sm_pins": {k: v.id for k, v in sm.kw.items()},
            "commands": [rp2.tx_log[k] for k in range(16)], "sent": rp2.tx_count[0],
            "cmd_ctrl": [dma_ctrl(d) for d in cmd], "rx_ctrl": [dma_ctrl(d) for d in rx],
            "cmd_count": cmd[0].configs[0]["count"], "rx_count": rx[0].configs[0]["count"],
            "cmd_write": cmd[0].configs[0]["write"], "rx_read": rx[0].configs[0]["read"],
            "chains": [dma_ctrl(d)["chain_to"] for d in b.dma],
            "channel_ids": [d.channel for d in b.dma],
            "first": [d[:3] for d in data], "count": len(data[0]),
            "gap_free": [all(d[k] == (1000 * s + k % 1024) % 4096 for k in range(len(d)))
                         for d, s in zip(data, b.slot)],
            "alloc": alloc(b)}
try:
    import config
    import polyphase

    out["a"]["fits"] = [polyphase.check_board(config.validate(c), b) for c in (
        {"wiring": "3p4w", "neutral_ct": True}, {"wiring": "3p4w"},
        {"wiring": "1vnct", "circuits": 6})]
    out["a"]["too_many"] = outcome(lambda: polyphase.check_board(
        config.validate({"wiring": "1vnct", "circuits": 7}), b))
except ValueError as e:
    out["a"]["too_many"] = str(e)
b.stop()
out["stopped"] = {"sm": bool(rp2.state_machines), "dma": [d.closed for d in cmd + rx]}
b = board(mcp_channels=[7, 5, 0], mcp_nv=1, mcp_sm=2, sample_rate=4000)
out["b"] = {"frame": b.frame, "rate": b.sample_rate, "slot": b.slot,
            "commands": [b.commands[k] for k in range(4)],
            "offsets_us": [round(x * 1e6, 4) for x in b.channel_offsets_s]}
out["refused"] = {
    "nine": outcome(lambda: board(mcp_channels=list(range(8)) + [0])),
    "eight": outcome(lambda: board(mcp_channels=[0, 8])),
    "twice": outcome(lambda: board(mcp_channels=[0, 1, 1])),
    "nv": outcome(lambda: board(mcp_channels=[0, 1], mcp_nv=2)),
    "fast": outcome(lambda: board(sample_rate=6400)),
    "pins": outcome(lambda: board(mcp_pins={"sck": 2, "mosi": 3, "miso": 4})),
    "sm": outcome(lambda: board(mcp_sm=4)),
}
import boards.rp2_board  # noqa: E402
import boards.rp2_poly  # noqa: E402
from boards import contract  # noqa: E402

plain = contract.load_config


def use(cfg):  # boards.json as the board would read it, in every module that reads it
    for mod in (contract, bm, boards.rp2_board, boards.rp2_poly):
        mod.load_config = cfg


use(lambda section, path=None: dict(plain(section, CFG), mcp_channels=[0, 1, 2, 3, 4, 5],
                                    mcp_nv=3, mcp_pins=PINS))
machine.reset()
rp2.reset()
out["chosen"] = type(contract.make_board("rp2", "3p4w")).__name__
use(lambda section, path=None: plain(section, CFG))
out["chosen_without"] = type(contract.make_board("rp2", "1vnct")).__name__
print(json.dumps(out))
